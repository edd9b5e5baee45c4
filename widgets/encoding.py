"""The numeric side of display: levels, RGB to uint8, scalars to palette indices.

Numpy only, no Qt: the compute worker (local or on a remote node) encodes every layer with these
before it reaches the UI thread, and the views read the same definitions back.
The display form: an RGB image is (H, W, 3) uint8; a scalar map is uint8 palette indices
(:func:`to_indexed`) for the layer's levels, 0 meaning NaN (transparent).
"""

from __future__ import annotations

import numpy as np


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


def is_indexed(array: np.ndarray) -> bool:
    """Whether ``array`` is a scalar map in display form (palette indices), not RGB or floats."""
    return array.dtype == np.uint8 and array.ndim in (2, 3) and not (array.ndim == 3 and array.shape[-1] in (3, 4))
