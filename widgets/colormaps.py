"""Colour lookup tables by name, from pyqtgraph's bundled maps, cached. The numeric encoding the
worker applies before painting (levels, uint8, palette indices) is in :mod:`widgets.encoding`."""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np

from widgets.pgconfig import pg


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


@lru_cache(maxsize=64)
def indexed_table(name: str, opacity: Optional[float] = None) -> np.ndarray:
    """(256, 4) uint8 palette for :func:`widgets.encoding.to_indexed` data: entry 0 transparent, then the map's
    colours, opaque, or with :func:`overlay_table`'s alpha ramp when ``opacity`` is given."""
    cmap = pg.colormap.get(name) if name else None
    if cmap is None:
        cmap = pg.colormap.get("viridis")
    rgb = cmap.getLookupTable(0.0, 1.0, nPts=255, alpha=False)
    if opacity is None:
        alpha = np.full(255, 255, np.uint8)
    else:
        alpha = (np.clip(np.linspace(0.0, 1.0, 255) * 3.0, 0.0, 1.0) * opacity * 255).astype(np.uint8)
    table = np.zeros((256, 4), np.uint8)
    table[1:, :3], table[1:, 3] = rgb, alpha
    return table
