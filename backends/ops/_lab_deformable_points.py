"""Where the deformable CNN's layers read, for one cell of their 12x12 grid: each layer's nine
sampling points (from its offsets, torchvision's channel order) and the receptive field the two
layers make together (layer 2's points pushed through layer 1's).

Points are in grid pixels (centres on integers) until :func:`to_image` places them in the
image's frame through the 48x48 view (grid pixel g sits at view pixel STRIDE * g + OFFSET).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from backends.data import cluttered_glyphs as cg
from backends.functional.deformable import tap_positions
from backends.models.glyph_deformable import KERNEL, OFFSET, STRIDE

GRID = 12


@dataclass
class LayerTaps:
    """One layer's reads for one output cell: points (9, 2) in grid pixels and mask values (9,)."""

    points: torch.Tensor
    mask: torch.Tensor


def layer_taps(offset: torch.Tensor, mask: torch.Tensor, cell: tuple[int, int]) -> LayerTaps:
    """The nine positions a 3x3, padding-1 deformable layer reads for output ``cell`` (x, y)."""
    x, y = cell
    points = tap_positions(offset, y, x, KERNEL, 1, KERNEL // 2, 1)[0]
    return LayerTaps(points, mask[0, :, y, x])


def composed(offsets: list[torch.Tensor], masks: list[torch.Tensor], cell: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two layers' joint reads of the stem's grid for output ``cell``: layer 2 reads layer 1's
    output bilinearly at each of its points, so each point stands for up to four layer-1 cells,
    each reading nine points. Returns points (M, 2) and weights (M,) = layer-2 mask x bilinear
    weight x layer-1 mask (corners outside the grid read zero and are left out)."""
    second = layer_taps(offsets[1], masks[1], cell)
    points, weights = [], []
    for (qx, qy), m2 in zip(second.points.tolist(), second.mask.tolist()):
        x0, y0 = math.floor(qx), math.floor(qy)
        for nx, wx in ((x0, 1 - (qx - x0)), (x0 + 1, qx - x0)):
            for ny, wy in ((y0, 1 - (qy - y0)), (y0 + 1, qy - y0)):
                if not (0 <= nx < GRID and 0 <= ny < GRID) or wx * wy <= 0:
                    continue
                first = layer_taps(offsets[0], masks[0], (nx, ny))
                points.append(first.points)
                weights.append(first.mask * (m2 * wx * wy))
    if not points:
        return torch.zeros(0, 2), torch.zeros(0)
    return torch.cat(points), torch.cat(weights)


def grid_to_view(points: torch.Tensor) -> torch.Tensor:
    return points * STRIDE + OFFSET


def view_to_grid(points: torch.Tensor) -> torch.Tensor:
    return (points - OFFSET) / STRIDE


def to_image(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grid pixels (..., 2) -> the image's pixels."""
    return cg.to_image_frame(grid_to_view(points.float()), *size)


def clicked_cell(query: tuple[int, int] | None, size: tuple[int, int]) -> tuple[int, int]:
    """The grid cell (x, y) under a clicked image pixel (the view's centre before any click)."""
    h, w = size
    if query is None:
        return GRID // 2, GRID // 2
    g = view_to_grid(cg.to_view_frame(torch.tensor([float(query[0]), float(query[1])]), h, w))
    return tuple(int(min(max(round(float(v)), 0), GRID - 1)) for v in g)
