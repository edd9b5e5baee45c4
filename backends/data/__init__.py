"""Procedural datasets, generated on the fly from a seed: nothing is downloaded.

Each ``sample_*(n, seed)`` returns ``(images, info)``: images (n, 3, 32, 32) float32 in [0, 1] and
a dict of numpy arrays with the true factors or labels of each image, so models can be scored
against what made the data. Modules: ``sprites`` (dSprites-like shapes), ``glyphs`` (Hershey
digits and letters), ``patches`` (crops of the bundled photos), ``faces`` (cartoon faces).
"""

from __future__ import annotations

import importlib
from typing import Callable

DATASET_NAMES = ("sprites", "glyphs", "patches", "faces")


def sampler(name: str) -> Callable:
    """``sample_<name>`` from ``backends.data.<name>``, imported on first use."""
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return getattr(importlib.import_module(f"backends.data.{name}"), f"sample_{name}")
