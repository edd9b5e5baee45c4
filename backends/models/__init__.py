"""Small generative models trained here on procedural data; their weights are in assets/weights/.

``image_grid`` is shared by the generative operators and the training previews: it tiles a batch
of images into one picture with thin gaps, the form traversals, codebooks and sample grids take.
"""

from __future__ import annotations

import numpy as np
import torch

GAP_VALUE = 0.35


def image_grid(images: torch.Tensor | np.ndarray, columns: int, gap: int = 1, upscale: int = 1) -> np.ndarray:
    """Images (N, 3, h, w) in [0, 1] tiled row-major into (rows * (h + gap) - gap, ...) RGB float32,
    each image enlarged ``upscale`` times by pixel repetition; empty cells stay grey."""
    arr = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    n, c, h, w = arr.shape
    if upscale > 1:
        arr = arr.repeat(upscale, 2).repeat(upscale, 3)
        h, w = h * upscale, w * upscale
    columns = max(1, min(columns, n)) if n else 1
    rows = max(1, -(-n // columns))
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, c), GAP_VALUE, np.float32)
    for i in range(n):
        r, k = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = arr[i].transpose(1, 2, 0)
    return np.clip(out, 0.0, 1.0)
