"""Tiling a stack of maps (N, H, W[, 3]) into one image with thin gaps, for channel and head grids."""

from __future__ import annotations

import math

import numpy as np


def grid_shape(count: int, tile_h: int, tile_w: int, aspect: float = 1.6) -> tuple[int, int]:
    """Rows and columns that make the mosaic about ``aspect`` wide per unit of height."""
    best = (1, count)
    best_err = math.inf
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        err = abs(math.log((cols * tile_w) / max(rows * tile_h, 1) / aspect))
        if err < best_err:
            best, best_err = (rows, cols), err
    return best


def tile(maps: np.ndarray, gap: int = 2, fill: float = np.nan) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The mosaic and the (x, y) origin of each tile in it. uint8 maps (palette indices) stay
    uint8 with gaps of 0, drawn transparent like the NaN gaps of float maps."""
    n, h, w = maps.shape[:3]
    rows, cols = grid_shape(n, h, w)
    out_shape = (rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap) + maps.shape[3:]
    indexed = maps.dtype == np.uint8
    out = np.full(out_shape, 0 if indexed else fill, dtype=np.uint8 if indexed else np.float32)
    origins = []
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * (w + gap)
        out[y : y + h, x : x + w] = maps[i]
        origins.append((x, y))
    return out, origins
