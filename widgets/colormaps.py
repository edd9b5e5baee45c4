"""Colour lookup tables by name, from pyqtgraph's bundled maps, cached."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyqtgraph as pg


@lru_cache(maxsize=32)
def lookup_table(name: str) -> np.ndarray:
    """(256, 3) uint8 for ``name``; unknown names fall back to viridis."""
    cmap = pg.colormap.get(name) if name else None
    if cmap is None:
        cmap = pg.colormap.get("viridis")
    return cmap.getLookupTable(0.0, 1.0, nPts=256, alpha=False)


def apply(values: np.ndarray, levels: tuple[float, float], name: str) -> np.ndarray:
    """Scalar map to uint8 RGB, for exports and mosaics that mix several maps."""
    lo, hi = levels
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = np.clip((values - lo) * scale, 0, 255).astype(np.uint8)
    return lookup_table(name)[idx]


@lru_cache(maxsize=32)
def overlay_table(name: str, opacity: float) -> np.ndarray:
    """(256, 4) uint8: the map's colours with alpha rising from 0, so low values let the image
    underneath show instead of darkening it."""
    rgb = lookup_table(name)
    ramp = np.clip(np.linspace(0.0, 1.0, 256) * 3.0, 0.0, 1.0) * opacity * 255
    return np.concatenate([rgb, ramp[:, None].astype(np.uint8)], axis=1)
