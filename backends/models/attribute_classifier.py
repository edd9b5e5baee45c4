"""A small CNN that reads the cartoon faces' attributes, and the Frechet distance in its features.

It is trained on the procedural faces' true attributes (``backends.training.attribute_classifier``)
and serves as the judge of the generators: how often each attribute appears in generated samples,
and an FID-like Frechet distance between the penultimate features of two image sets.

Heads: smile sign (2), glasses (2), hair style (3: none, short, long), tilt sign (2), plus two
regressions (smile value, tilt in units of 30 degrees) so that "frown" and "tilted over 10 degrees"
can be counted too, not only signs that a collapsed generator would hit by chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backends.models.cache import cached_model
from backends.models.weights import load_weights

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / "attribute_classifier.safetensors"
FEATURES = 64
CLASS_HEADS = {"smile": 2, "glasses": 2, "hair": 3, "tilt": 2}
TILT_UNIT = 30.0  # degrees per unit of the tilt regression


class AttributeClassifier(nn.Module):
    """(N, 3, 32, 32) in [0, 1] to features (N, 64) and per-attribute logits."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )

        self.body = nn.Sequential(
            block(3, w), nn.MaxPool2d(2),  # 16
            block(w, 2 * w), nn.MaxPool2d(2),  # 8
            block(2 * w, 4 * w), nn.MaxPool2d(2),  # 4
        )
        self.fc = nn.Linear(4 * w * 16, FEATURES)
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURES, n) for k, n in CLASS_HEADS.items()})
        self.regress = nn.Linear(FEATURES, 2)  # smile value, tilt / TILT_UNIT

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 64), after the ReLU."""
        h = self.body(x * 2.0 - 1.0)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        f = self.features(x)
        return f, {k: head(f) for k, head in self.heads.items()}, self.regress(f)


def load_classifier(path: Optional[Path] = None, device: str = "cpu") -> AttributeClassifier:
    """The shipped classifier in eval mode; one copy per file version and device (the model cache)."""
    path = Path(path or WEIGHTS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no attribute classifier weights at {path}; run python -m backends.training.attribute_classifier")
    return cached_model(path, read_classifier, device)


def read_classifier(path: Path) -> AttributeClassifier:
    """The classifier of a safetensors file, on the CPU, without caching (see load_classifier)."""
    model = AttributeClassifier()
    model.load_state_dict(load_weights(path))
    return model.eval()


@torch.no_grad()
def predict(images: torch.Tensor, model: Optional[AttributeClassifier] = None, batch: int = 256) -> dict[str, np.ndarray]:
    """Per-image predictions: class indices per head, ``smile_value``, ``tilt_deg`` and ``features``."""
    model = model or load_classifier()
    dev = next(model.parameters()).device
    out: dict[str, list] = {k: [] for k in (*CLASS_HEADS, "smile_value", "tilt_deg", "features")}
    for i in range(0, len(images), batch):
        f, logits, reg = model(images[i : i + batch].to(dev, torch.float32).clamp(0, 1))
        for k, v in logits.items():
            out[k].append(v.argmax(1).cpu())
        out["smile_value"].append(reg[:, 0].cpu())
        out["tilt_deg"].append(reg[:, 1].cpu() * TILT_UNIT)
        out["features"].append(f.cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def attribute_frequencies(pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Frequencies the generator must match: smiles, glasses, each hair style, tilt sign, plus
    frowns and strong tilts (|tilt| > 10 degrees) read from the regression heads."""
    return {
        "smile": float(np.mean(pred["smile"] == 1)),
        "frown": float(np.mean(pred["smile"] == 0)),
        "glasses": float(np.mean(pred["glasses"] == 1)),
        "no_glasses": float(np.mean(pred["glasses"] == 0)),
        "hair_none": float(np.mean(pred["hair"] == 0)),
        "hair_short": float(np.mean(pred["hair"] == 1)),
        "hair_long": float(np.mean(pred["hair"] == 2)),
        "tilt_right": float(np.mean(pred["tilt"] == 1)),
        "tilt_left": float(np.mean(pred["tilt"] == 0)),
        "tilt_over_10deg": float(np.mean(np.abs(pred["tilt_deg"]) > 10.0)),
    }


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_from_features(fa: np.ndarray, fb: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D):
    |mu_a - mu_b|^2 + Tr(Ca + Cb - 2 (Ca Cb)^1/2), with Tr((Ca Cb)^1/2) computed as
    Tr((Ca^1/2 Cb Ca^1/2)^1/2) by symmetric eigendecompositions (stable for singular covariances)."""
    fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    ra = _sqrt_psd(ca)
    vals = np.linalg.eigvalsh(ra @ cb @ ra)
    tr_covmean = float(np.sqrt(np.clip(vals, 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * tr_covmean)


def frechet_distance(images_a: torch.Tensor, images_b: torch.Tensor, model: Optional[AttributeClassifier] = None) -> float:
    """FID-like distance between two image sets (N, 3, 32, 32) in [0, 1], in the classifier's
    64-d penultimate features. Use a few hundred images or more per set; 0 for identical sets."""
    fa = predict(images_a, model)["features"]
    fb = predict(images_b, model)["features"]
    return frechet_from_features(fa, fb)
