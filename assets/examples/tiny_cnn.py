"""The Model lab's bundled example, and a template for your own model file.

A file opened with File > Open Model… defines ``build_model()`` returning a torch.nn.Module,
and may declare ``INPUT_SIZE`` (H, W), ``CHANNELS`` (1 or 3), ``NORMALIZE`` ("imagenet" or
"none") and ``CLASSES``. This one is a tiny network on the cluttered glyphs (1x48x48, bright
digits on dark): two convolutions, a deformable v2 convolution whose offsets and mask come from
a convolution, then one attention block over the 6x6 cells with a class token, calling the
fused ``F.scaled_dot_product_attention``; so every panel of the lab has something to show.
Run ``PYTHONPATH=. python assets/examples/tiny_cnn.py`` to train it (800 steps, at most three minutes
on two cores; the shipped weights and their test accuracy are in assets/weights/manifest.json).
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


if __name__ == "__main__":  # training: cluttered glyphs, AdamW with a one-cycle schedule, then the fixed test set
    import time
    from pathlib import Path

    from backends.data import cluttered_glyphs as data
    from backends.models.weights import save_weights

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model, steps, batch, budget = build_model(), 800, 64, 180.0  # budget: seconds of training at most
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.15)
    images, labels, _ = data.sample(steps * batch // 4, seed=1)
    t0, done = time.monotonic(), 0
    for step in range(steps):
        if time.monotonic() - t0 > budget:
            print(f"stopped at the {budget:g} s budget after {step} steps")
            break
        idx = torch.randint(0, len(labels), (batch,))
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        if step % 100 == 0:
            print(step, round(loss.item(), 4), f"{time.monotonic() - t0:.0f} s", flush=True)
    seconds = time.monotonic() - t0
    model.eval()
    for t in model.state_dict().values():  # score the float16 weights that ship
        if t.is_floating_point():
            t.copy_(t.half().float())
    x, y, _ = data.test_set()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    print(f"test accuracy {acc:.4f} after {done} steps, {seconds:.0f} s")
    out = Path(__file__).resolve().parents[1] / "weights" / "tiny_cnn_example.safetensors"
    save_weights(out, model.state_dict(), {"model": "assets/examples/tiny_cnn.py", "data": "cluttered_glyphs",
                                           "dataset": f"{len(labels)} images of cluttered_glyphs.sample(seed=1); "
                                                      f"scored on test_set() ({data.TEST_SIZE} images)",
                                           "steps": done, "batch": batch, "seed": 0, "threads": 2,
                                           "train_seconds": round(seconds, 1), "test_accuracy": round(acc, 4),
                                           "script": "PYTHONPATH=. python assets/examples/tiny_cnn.py",
                                           "note": "a quick example for the Model lab, not a benchmark"})
