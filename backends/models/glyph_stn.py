"""A spatial transformer classifier for the cluttered digits (``backends.data.cluttered_glyphs``).

A small localisation network looks at the 48x48 input at half resolution and predicts an affine
theta (``F.affine_grid`` convention: output normalized coordinates -> input normalized
coordinates, align_corners=False); :class:`~backends.functional.affine.AffineTransformer` reads a
32x32 crop through it, and a small CNN classifies the crop. The localisation's last layer starts
at zero weight and identity bias, so training starts from "look at the whole image"; whatever map
it learns comes from the class loss alone (the shipped one's manifest says how far its crop's
centre lies from the true digit's, and how much of the input its crop covers).
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
CROP = 32  # side of the rectified crop the classifier reads
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _conv(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class GlyphSTN(nn.Module):
    """(N, 1, 48, 48) in [0, 1] -> logits (N, 10), through a learned affine crop."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.localisation = nn.Sequential(
            nn.AvgPool2d(2),  # 24
            *_conv(1, w, 5), nn.MaxPool2d(2),  # 12
            *_conv(w, 2 * w, 5), nn.MaxPool2d(2),  # 6
            nn.Flatten(), nn.Linear(2 * w * 36, 64), nn.ReLU(inplace=True),
            nn.Linear(64, 6),
        )
        last = self.localisation[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(IDENTITY))
        self.transformer = AffineTransformer(size=(CROP, CROP))
        self.classifier = nn.Sequential(
            *_conv(1, w), nn.MaxPool2d(2),  # 16
            *_conv(w, 2 * w), nn.MaxPool2d(2),  # 8
            *_conv(2 * w, 4 * w), nn.MaxPool2d(2),  # 4
            nn.Flatten(), nn.Linear(4 * w * 16, 128), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(128, 10),
        )

    def localise(self, x: torch.Tensor) -> torch.Tensor:
        """theta (N, 2, 3): where each normalized point of the crop reads the input."""
        return self.localisation(x * 2.0 - 1.0).view(-1, 2, 3)

    def rectify(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The (N, 1, 32, 32) crop the classifier reads."""
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
