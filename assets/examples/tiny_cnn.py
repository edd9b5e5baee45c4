"""The Model lab's bundled example, and a template for your own model file.

A file opened with File > Open Model… defines ``build_model()`` returning a torch.nn.Module,
and may declare ``INPUT_SIZE`` (H, W), ``CHANNELS`` (1 or 3), ``NORMALIZE`` ("imagenet" or
"none") and ``CLASSES``. This one is a tiny network on the cluttered glyphs (1x48x48, bright
digits on dark): two convolutions, a deformable v2 convolution whose offsets and mask come from
a convolution, then one attention block over the 6x6 cells with a class token, calling the
fused ``F.scaled_dot_product_attention``; so every panel of the lab has something to show.
Run ``PYTHONPATH=. python assets/examples/tiny_cnn.py`` to train it (about a minute on two cores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.deformable import DeformConv2d

INPUT_SIZE = (48, 48)
CHANNELS = 1
NORMALIZE = "none"
CLASSES = tuple("0123456789")


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.qkv, self.proj = num_heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class TinyNet(nn.Module):
    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, width, 3, padding=1)
        self.offsets = nn.Conv2d(width, 27, 3, padding=1)  # 18 offsets (dy, dx per tap) + 9 mask logits
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.offsets.bias)
        self.deform = DeformConv2d(width, width, 3, padding=1)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 37, width) * 0.02)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, 2)
        self.norm2 = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        o = self.offsets(x)
        x = F.max_pool2d(F.relu(self.deform(x, o[:, :18], torch.sigmoid(o[:, 18:]))), 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], 1) + self.pos
        t = t + self.attn(self.norm1(t))
        return self.head(self.norm2(t[:, 0]))


def build_model() -> nn.Module:
    return TinyNet()


if __name__ == "__main__":  # training: cluttered glyphs, Adam, then the fixed test set
    from pathlib import Path

    from backends.data import cluttered_glyphs as data
    from backends.models.weights import save_weights

    torch.manual_seed(0)
    model, steps, batch = build_model(), 600, 64
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    images, labels, _ = data.sample(steps * batch // 4, seed=1)
    for step in range(steps):
        idx = torch.randint(0, len(labels), (batch,))
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(step, float(loss))
    model.eval()
    x, y, _ = data.test_set()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    print("test accuracy", acc)
    out = Path(__file__).resolve().parents[1] / "weights" / "tiny_cnn_example.safetensors"
    save_weights(out, model.state_dict(), {"model": "assets/examples/tiny_cnn.py", "data": "cluttered_glyphs",
                                           "steps": steps, "batch": batch, "seed": 0, "test_accuracy": round(acc, 4),
                                           "note": "a quick example for the Model lab, not a benchmark"})
