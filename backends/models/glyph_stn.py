"""A spatial transformer classifier for the cluttered digits (``backends.data.cluttered_glyphs``).

A small localisation network looks at the 48x48 input at half resolution and predicts an affine
theta (``F.affine_grid`` convention: output normalized coordinates -> input normalized
coordinates, align_corners=False); :class:`~backends.functional.affine.AffineTransformer` reads a
24x24 crop through it, and a small CNN classifies the crop. Three choices make the network learn
to find and zoom on the digit rather than keep the whole frame (as in the spatial transformer
paper's cluttered-digit experiments):

- the crop is smaller than the input (24 against 48 pixels a side): read at full frame, the digit
  comes out at half resolution among the clutter, so zooming in pays;
- the localisation's last layer starts at zero weight and a *zoomed* identity bias (scale
  ``START_SCALE``, centred, upright), so training starts from a crop about the digit's size;
- the classifier is small and position-bound (three 3x3 convolutions, a linear layer over the
  6x6 map): it reads the crop well only where the digit sits centred and large in it.

Nothing but the class labels trains the map; the manifest entry says how far the shipped one's
crop centre lies from the true digit's, how much of the input it covers and how it turns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from backends.functional.affine import AffineTransformer
from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_weights

WEIGHTS_PATH = WEIGHTS_DIR / "glyph_stn.safetensors"
CROP = 24  # side of the rectified crop the classifier reads (the input is 48)
START_SCALE = 0.6  # the localisation starts at theta = [[s, 0, 0], [0, s, 0]]: a centred crop of 0.36 of the input
START = (START_SCALE, 0.0, 0.0, 0.0, START_SCALE, 0.0)


def _conv(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Localiser(nn.Module):
    """(N, 1, 48, 48) in [-1, 1] -> theta (N, 2, 3), equivariant to where the digit is.

    Two convolutions make a 12x12 feature map; a 1x1 convolution scores each cell, and the
    softmax-weighted mean of the cells' centres (normalized coordinates) is the crop's centre, so
    a digit detector learned at one place works everywhere. The same weights pool the features
    there, and a linear layer reads the crop's linear part (zoom, turn, shear) from them. Both
    heads start at zero: uniform weights (the centre), linear part ``START``.
    """

    def __init__(self, w: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),  # 24
            *_conv(1, w, 5), nn.MaxPool2d(2),  # 12
            *_conv(w, 2 * w, 5), *_conv(2 * w, 2 * w, 3),
        )
        self.score = nn.Conv2d(2 * w, 1, 1)
        self.linear = nn.Linear(2 * w, 4)
        for layer in (self.score, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.linear.bias.copy_(torch.tensor(START)[[0, 1, 3, 4]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        n, c, h, w = f.shape
        weights = torch.softmax(self.score(f).flatten(1), 1)  # (N, h * w)
        ys = (torch.arange(h, dtype=f.dtype, device=f.device) * 2 + 1) / h - 1  # cell centres, normalized
        xs = (torch.arange(w, dtype=f.dtype, device=f.device) * 2 + 1) / w - 1
        centre = torch.stack([weights.view(n, h, w).sum(1) @ xs, weights.view(n, h, w).sum(2) @ ys], 1)
        pooled = torch.bmm(f.flatten(2), weights[:, :, None])[:, :, 0]  # (N, C)
        lin = self.linear(pooled).view(n, 2, 2)
        return torch.cat([lin, centre[:, :, None]], 2)


class GlyphSTN(nn.Module):
    """(N, 1, 48, 48) in [0, 1] -> logits (N, 10), through a learned affine crop."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.localisation = Localiser(w)
        self.transformer = AffineTransformer(size=(CROP, CROP))
        self.classifier = nn.Sequential(
            *_conv(1, w), nn.MaxPool2d(2),  # 12
            *_conv(w, 2 * w), nn.MaxPool2d(2),  # 6
            *_conv(2 * w, 2 * w),
            nn.Flatten(), nn.Dropout(0.1), nn.Linear(2 * w * 36, 10),
        )

    def localise(self, x: torch.Tensor) -> torch.Tensor:
        """theta (N, 2, 3): where each normalized point of the crop reads the input."""
        return self.localisation(x * 2.0 - 1.0)

    def rectify(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The (N, 1, CROP, CROP) crop the classifier reads."""
        return self.transformer(x, theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.rectify(x, self.localise(x)) * 2.0 - 1.0)

    @torch.no_grad()
    def explain(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """theta, the crop and the class probabilities of a batch, in one pass."""
        theta = self.localise(x)
        crop = self.rectify(x, theta)
        probs = torch.softmax(self.classifier(crop * 2.0 - 1.0), 1)
        return {"theta": theta, "crop": crop, "probs": probs}


def load_stn(path: Optional[Path] = None, device: str = "cpu") -> GlyphSTN:
    """The shipped network in eval mode; one copy per file version and device (the model cache)."""
    path = Path(path or WEIGHTS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no STN weights at {path}; run python -m backends.training.glyph_stn")
    return cached_model(path, read_stn, device)


def read_stn(path: Path) -> GlyphSTN:
    """The network of a safetensors file, on the CPU, without caching (see load_stn)."""
    model = GlyphSTN()
    model.load_state_dict(load_weights(path))
    return model.eval()
