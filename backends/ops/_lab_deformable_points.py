"""Where the deformable CNN's layers read, for one cell of their 12x12 grid: each layer's nine
sampling points (from its offsets, torchvision's channel order) and the receptive field the two
layers make together (layer 2's points pushed through layer 1's).

Points are in grid pixels (centres on integers) until :func:`to_image` places them in the
image's frame through the 48x48 view (grid pixel g sits at view pixel STRIDE * g + OFFSET).
"""

from __future__ import annotations

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
    weight x layer-1 mask (corners outside the grid read zero and are left out), layer 2's taps
    in order, each tap's corners x-major."""
    second = layer_taps(offsets[1], masks[1], cell)
    q = second.points  # (9, 2)
    base = torch.floor(q)
    frac = q - base
    corners = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=q.dtype)  # (dx, dy), x outer
    n = (base[:, None, :] + corners).long()  # (9, 4, 2) layer-1 cells (x, y)
    w = torch.where(corners[..., 0] == 0, 1 - frac[:, None, 0], frac[:, None, 0]) * \
        torch.where(corners[..., 1] == 0, 1 - frac[:, None, 1], frac[:, None, 1])  # (9, 4)
    valid = (n >= 0).all(-1) & (n < GRID).all(-1) & (w > 0)
    if not bool(valid.any()):
        return torch.zeros(0, 2), torch.zeros(0)
    nx, ny = n[valid][:, 0], n[valid][:, 1]
    points = grid_taps(offsets[0])[ny, nx]  # (M', 9, 2): every read of each layer-1 cell
    first_mask = masks[0][0][:, ny, nx].T  # (M', 9)
    weights = first_mask * (second.mask[:, None] * w)[valid][:, None]
    return points.reshape(-1, 2), weights.reshape(-1)


def grid_taps(offset: torch.Tensor) -> torch.Tensor:
    """(GRID, GRID, 9, 2): where a 3x3, padding-1 deformable layer reads for every cell, (x, y)
    per row-major tap, what :func:`tap_positions` gives one cell at a time."""
    k = KERNEL
    d = offset[0].reshape(k * k, 2, GRID, GRID)  # (dy, dx) per tap, as torchvision
    ii = torch.arange(k, dtype=d.dtype).repeat_interleave(k)
    jj = torch.arange(k, dtype=d.dtype).repeat(k)
    ys, xs = torch.meshgrid(torch.arange(GRID, dtype=d.dtype), torch.arange(GRID, dtype=d.dtype), indexing="ij")
    px = xs[..., None] - k // 2 + jj + d[:, 1].permute(1, 2, 0)
    py = ys[..., None] - k // 2 + ii + d[:, 0].permute(1, 2, 0)
    return torch.stack([px, py], -1)


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
