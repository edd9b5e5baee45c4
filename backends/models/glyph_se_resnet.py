"""A small squeeze-and-excitation ResNet for the cluttered glyphs (48 x 48 grey).

A 3 x 3 stem, then three basic residual blocks (two 3 x 3 convolutions, batch norm), each
recalibrated by the project's :class:`~backends.functional.squeeze_excitation.SEBlock` before the
skip connection is added (Hu et al.'s SE-ResNet placement), downsampling 48 -> 24 -> 12 -> 6;
global average pool and a linear classifier. :meth:`GlyphSEResNet.forward_parts` returns each
block's excitation (the SE sigmoid output, one weight per channel) and the last block's maps,
which Grad-CAM reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.squeeze_excitation import SEBlock
from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_metadata, load_weights

WEIGHTS_PATH = WEIGHTS_DIR / "glyph_se_resnet.safetensors"
SIZE = 48


@dataclass(frozen=True)
class SEResNetConfig:
    stem: int = 16
    widths: tuple[int, ...] = (24, 48, 96)
    reduction: int = 4
    classes: int = 10


class SEBasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, times the SE weights, plus the (projected) input, then ReLU. ``forward``
    returns the output and the excitation (B, C)."""

    def __init__(self, cin: int, cout: int, stride: int, reduction: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SEBlock(cout, reduction)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        s = self.se.weights(out)
        return F.relu(out * s[:, :, None, None] + self.shortcut(x)), s


class GlyphSEResNet(nn.Module):
    """(B, 1, 48, 48) in [0, 1] -> logits (B, classes)."""

    def __init__(self, config: SEResNetConfig = SEResNetConfig()) -> None:
        super().__init__()
        c = self.config = config
        self.stem = nn.Sequential(nn.Conv2d(1, c.stem, 3, 1, 1, bias=False), nn.BatchNorm2d(c.stem), nn.ReLU())
        chans = (c.stem, *c.widths)
        self.blocks = nn.ModuleList(SEBasicBlock(chans[i], chans[i + 1], 2, c.reduction) for i in range(len(c.widths)))
        self.fc = nn.Linear(chans[-1], c.classes)

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Logits (B, classes), each block's excitation (B, C_k), and the last block's maps (B, C, 6, 6)."""
        if x.ndim != 4 or x.shape[1:] != (1, SIZE, SIZE):
            raise ValueError(f"expected glyphs (B, 1, {SIZE}, {SIZE}), got {tuple(x.shape)}")
        h = self.stem(x * 2.0 - 1.0)
        excitations = []
        for block in self.blocks:
            h, s = block(h)
            excitations.append(s)
        return self.fc(h.mean((2, 3))), excitations, h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(x)[0]


def read_glyph_se_resnet(path: Path) -> GlyphSEResNet:
    """The SE-ResNet of a safetensors file (its config in the file's metadata), in eval mode, on the CPU."""
    meta = load_metadata(path)
    model = GlyphSEResNet(SEResNetConfig(**{**meta, "widths": tuple(meta.get("widths", SEResNetConfig.widths))}))
    model.load_state_dict(load_weights(path))
    return model.eval()


def load_glyph_se_resnet(device: str | torch.device = "cpu", path: Optional[Path] = None) -> GlyphSEResNet:
    """The shipped SE-ResNet; one copy per file version and device."""
    path = Path(path or WEIGHTS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no glyph SE-ResNet weights at {path}; run python -m backends.training.glyph_se_resnet")
    return cached_model(path, read_glyph_se_resnet, device)


def config_dict(model: GlyphSEResNet) -> dict:
    return asdict(model.config)


@dataclass(frozen=True)
class ExcitationStats:
    """Excitations over a labelled set: per block the mean (C,) and the per-class means
    (classes, C), and the set's accuracy."""

    mean: list[torch.Tensor]
    by_class: list[torch.Tensor]
    accuracy: float


_stats: dict[tuple[int, int], tuple[GlyphSEResNet, torch.Tensor, ExcitationStats]] = {}


@torch.no_grad()
def excitation_stats(model: GlyphSEResNet, images: torch.Tensor, labels: torch.Tensor,
                     batch: int = 500) -> ExcitationStats:
    """Each block's excitation averaged over ``images`` and over each class's images; cached per
    model and images' storage and shape (a fresh slice of the same test set hits: the cache holds
    the tensor, so its storage is not reused while cached), so the test set is run through once."""
    key = (id(model), images.data_ptr(), tuple(images.shape), images.stride())
    hit = _stats.get(key)
    if hit is not None and hit[0] is model:
        return hit[2]
    dev = next(model.parameters()).device
    sums: list[torch.Tensor] = []
    class_sums: list[torch.Tensor] = []
    hits = 0
    classes = model.config.classes
    for i in range(0, len(images), batch):
        x, y = images[i : i + batch].to(dev), labels[i : i + batch].to(dev)
        logits, excitations, _ = model.forward_parts(x)
        hits += int((logits.argmax(1) == y).sum())
        onehot = F.one_hot(y, classes).to(x.dtype)  # (b, classes)
        for k, s in enumerate(excitations):
            if len(sums) <= k:
                sums.append(torch.zeros(s.shape[1], device=dev))
                class_sums.append(torch.zeros(classes, s.shape[1], device=dev))
            sums[k] += s.sum(0)
            class_sums[k] += onehot.T @ s
    counts = F.one_hot(labels, classes).sum(0).to(dev).clamp_min(1)[:, None].float()
    stats = ExcitationStats([s / len(images) for s in sums], [c / counts for c in class_sums], hits / len(images))
    if len(_stats) >= 4:
        _stats.pop(next(iter(_stats)))
    _stats[key] = (model, images, stats)
    return stats


def explain(model: GlyphSEResNet, x: torch.Tensor, target: Optional[int] = None
            ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Probabilities (B, classes), excitations, and the last block's maps and their gradient with
    respect to the logit of ``target`` (the predicted class when None), for Grad-CAM."""
    with torch.enable_grad():
        logits, excitations, maps = model.forward_parts(x)
        cls = logits.argmax(1) if target is None else torch.full((len(x),), int(target), device=x.device)
        (grads,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), maps)
    return F.softmax(logits.detach(), 1), [s.detach() for s in excitations], maps.detach(), grads
