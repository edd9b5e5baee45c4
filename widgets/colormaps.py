"""Colour lookup tables by name, from pyqtgraph's bundled maps, cached."""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

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


def auto_levels(values: np.ndarray) -> tuple[float, float]:
    """The finite range of ``values``, widened to a unit span when flat."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi if hi > lo else lo + 1.0)


def rgb_to_uint8(rgb: np.ndarray) -> np.ndarray:
    """[0, 1] floats to row-contiguous uint8 (what Qt takes as is) in one scratch buffer: 1.8 ms
    at 512 x 512 x 3 against 6.5 for clip, scale and cast as separate temporaries."""
    scratch = np.empty(rgb.shape, np.float32)
    np.multiply(rgb, 255.0, out=scratch)
    scratch += 0.5
    np.clip(scratch, 0.0, 255.0, out=scratch)
    return scratch.astype(np.uint8)


def to_indexed(values: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """Scalars to uint8 indices into :func:`indexed_table`: 1 to 255 across ``levels``, 0 for NaN
    (drawn transparent). Done on the worker, so painting is a palette lookup in Qt."""
    lo, hi = levels
    scale = 254.0 / (hi - lo) if hi > lo else 0.0
    scratch = np.subtract(values, lo, dtype=np.float32)  # one buffer, worked in place
    scratch *= scale
    np.clip(scratch, 0.0, 254.0, out=scratch)
    scratch += 1.5  # round, and shift past the transparent 0
    np.nan_to_num(scratch, copy=False, nan=0.0)
    return scratch.astype(np.uint8)


@lru_cache(maxsize=64)
def indexed_table(name: str, opacity: Optional[float] = None) -> np.ndarray:
    """(256, 4) uint8 palette for :func:`to_indexed` data: entry 0 transparent, then the map's
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
