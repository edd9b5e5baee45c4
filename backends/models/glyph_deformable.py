"""A CNN for the cluttered digits whose later layers are deformable convolutions v2 (offsets and
modulation masks, Zhu et al. 2019), on :class:`backends.functional.deformable.DeformConv2d`.

Two plain 3x3 convolutions with max pooling bring the 48x48 input to a 12x12 grid; two
deformable 3x3 layers work on that grid (stride 1, padding 1), each with its own 3x3 convolution
predicting 2 * 9 offsets ((dy, dx) per tap, taps row-major: torchvision's layout) and 9 mask
logits; then global average pooling and a linear classifier. Offset and mask predictors start at
zero (a regular grid, masks 0.5), as in the paper.

Grid geometry (pixel centres on integers): 12x12 grid pixel ``p`` sits at input pixel
``STRIDE * p + OFFSET`` (two 2x2 poolings: ``4 p + 1.5``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from backends.functional.deformable import DeformConv2d
from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_weights

WEIGHTS_PATH = WEIGHTS_DIR / "glyph_deformable.safetensors"
KERNEL = 3
TAPS = KERNEL * KERNEL
STRIDE = 4.0  # input pixels per grid pixel at the deformable layers
OFFSET = 1.5  # input position of grid pixel 0


class DeformBlock(nn.Module):
    """Deformable v2 3x3 convolution (padding 1), its offset/mask predictor, batch norm and ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.predictor = nn.Conv2d(cin, 3 * TAPS, KERNEL, padding=KERNEL // 2)
        nn.init.zeros_(self.predictor.weight)
        nn.init.zeros_(self.predictor.bias)
        self.conv = DeformConv2d(cin, cout, KERNEL, padding=KERNEL // 2, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets (N, 18, H, W) as (dy, dx) per row-major tap, and the mask (N, 9, H, W) in (0, 1)."""
        p = self.predictor(x)
        return p[:, : 2 * TAPS], torch.sigmoid(p[:, 2 * TAPS:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        return F.relu(self.norm(self.conv(x, offset, mask)))


class GlyphDeformable(nn.Module):
    """(N, 1, 48, 48) in [0, 1] -> logits (N, 10)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(1, w // 2, 3, padding=1), nn.BatchNorm2d(w // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 24
            nn.Conv2d(w // 2, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 12
        )
        self.deform = nn.ModuleList([DeformBlock(w, w), DeformBlock(w, 2 * w)])
        self.head = nn.Linear(2 * w, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x * 2.0 - 1.0)
        for block in self.deform:
            h = block(h)
        return self.head(h.mean((2, 3)))

    def trace(self, x: torch.Tensor) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        """One pass keeping what the lab draws: each deformable layer's input, offsets, mask and
        output, and the logits. Autograd follows the caller's mode (Grad-CAM needs it)."""
        h = self.stem(x * 2.0 - 1.0)
        inputs, offsets, masks, outputs = [], [], [], []
        for block in self.deform:
            offset, mask = block.offsets_and_mask(h)
            inputs.append(h)
            h = F.relu(block.norm(block.conv(h, offset, mask)))
            offsets.append(offset)
            masks.append(mask)
            outputs.append(h)
        return {"inputs": inputs, "offsets": offsets, "masks": masks, "outputs": outputs, "logits": self.head(h.mean((2, 3)))}


def load_deformable(path: Optional[Path] = None, device: str = "cpu") -> GlyphDeformable:
    """The shipped network in eval mode; one copy per file version and device (the model cache)."""
    path = Path(path or WEIGHTS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no deformable CNN weights at {path}; run python -m backends.training.glyph_deformable")
    return cached_model(path, read_deformable, device)


def read_deformable(path: Path) -> GlyphDeformable:
    """The network of a safetensors file, on the CPU, without caching (see load_deformable)."""
    model = GlyphDeformable()
    model.load_state_dict(load_weights(path))
    return model.eval()
