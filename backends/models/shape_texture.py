"""Two small CNNs for the texture-against-shape task, and the shape-bias fraction.

Both have the same architecture (four 3x3 conv blocks, global average pooling, one linear layer);
``plain`` was trained on consistent images, ``shuffled`` with the texture-shuffling augmentation
(``backends.data.shape_texture.sample(texture_shuffle=...)``). Weights are assets/weights/
shape_texture_<name>.safetensors (float16) written by ``python -m backends.training.shape_texture``.

Shape-bias fraction (Geirhos et al. 2019): of the cue-conflict images a network assigns to either
the shape's class or the texture's class, the fraction assigned to the shape's class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn as nn

from backends.data.shape_texture import K
from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_weights, read_entry

NETWORKS = ("plain", "shuffled")  # the shipped pair, in display order
TITLES = {"plain": "plain", "shuffled": "texture-shuffled"}


class ShapeTextureCNN(nn.Module):
    """(N, 3, 48, 48) in [0, 1] to K logits."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(3, w), nn.MaxPool2d(2),  # 24
            *block(w, 2 * w), nn.MaxPool2d(2),  # 12
            *block(2 * w, 4 * w), nn.MaxPool2d(2),  # 6
            *block(4 * w, 4 * w),
        )
        self.head = nn.Linear(4 * w, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x * 2.0 - 1.0)
        return self.head(h.mean((2, 3)))


def weights_path(name: str) -> Path:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}")
    return WEIGHTS_DIR / f"shape_texture_{name}.safetensors"


def read_network(path: Path) -> ShapeTextureCNN:
    """The network of a verified safetensors file, on the CPU, in eval mode, without caching."""
    model = ShapeTextureCNN()
    model.load_state_dict(load_weights(path))
    return model.eval()


def load_network(name: str, device: Union[torch.device, str, None] = "cpu") -> ShapeTextureCNN:
    """A shipped network in eval mode, one copy per file version and device (the model cache)."""
    path = weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in assets/weights; run python -m backends.training.shape_texture")
    return cached_model(path, read_network, device)


def manifest_entry(name: str) -> dict:
    """The manifest entry the training script wrote for a shipped network ({} when absent)."""
    return read_entry(weights_path(name).name, WEIGHTS_DIR)


@torch.no_grad()
def probabilities(model: nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Softmax class probabilities (n, K) of ``images`` (n, 3, 48, 48), in float32."""
    dev = next(model.parameters()).device
    out = [torch.softmax(model(images[i:i + batch].to(dev, torch.float32)).float(), 1).cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out)


def shape_bias(pred: np.ndarray, shape: np.ndarray, texture: np.ndarray) -> dict[str, float]:
    """Of cue-conflict predictions ``pred`` that equal the shape class or the texture class, the
    fraction equal to the shape class (``shape_bias``), with the counts it came from. NaN when no
    prediction hit either class."""
    pred, shape, texture = (np.asarray(a) for a in (pred, shape, texture))
    if np.any(shape == texture):
        raise ValueError("a cue-conflict image needs different shape and texture classes")
    by_shape, by_texture = int(np.sum(pred == shape)), int(np.sum(pred == texture))
    hits = by_shape + by_texture
    return {"shape_bias": by_shape / hits if hits else float("nan"), "shape_decisions": by_shape,
            "texture_decisions": by_texture, "other_decisions": int(len(pred) - hits), "images": int(len(pred))}
