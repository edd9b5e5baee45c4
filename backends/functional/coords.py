"""Pixel and ``grid_sample`` coordinates, and the frame helpers every warp shares.

Pixel coordinates put pixel centres on integers (x right, y down), so pixel ``(0, 0)`` covers
``[-0.5, 0.5]``. Normalized coordinates are those of ``F.grid_sample`` / ``F.affine_grid``:
``-1`` and ``+1`` are the outer pixel edges when ``align_corners=False`` and the outer pixel
centres when ``align_corners=True``. Points are (..., 2) tensors of (x, y).
"""

from __future__ import annotations

import torch


def pixel_to_normalized(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Pixel coordinate along an axis of ``size`` pixels to ``grid_sample``'s [-1, 1] frame."""
    if align_corners:
        return coord * (2.0 / max(size - 1, 1)) - 1.0
    return (2.0 * coord + 1.0) / size - 1.0


def normalized_to_pixel(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized`."""
    if align_corners:
        return (coord + 1.0) * (max(size - 1, 1) / 2.0)
    return ((coord + 1.0) * size - 1.0) / 2.0


def points_to_normalized(points: torch.Tensor, width: int, height: int, align_corners: bool) -> torch.Tensor:
    """Pixel points (..., 2) of a ``width`` x ``height`` frame to normalized points (..., 2)."""
    return torch.stack([pixel_to_normalized(points[..., 0], width, align_corners),
                        pixel_to_normalized(points[..., 1], height, align_corners)], -1)


def points_to_pixels(points: torch.Tensor, width: int, height: int, align_corners: bool) -> torch.Tensor:
    """Inverse of :func:`points_to_normalized`."""
    return torch.stack([normalized_to_pixel(points[..., 0], width, align_corners),
                        normalized_to_pixel(points[..., 1], height, align_corners)], -1)


def normalizer(width: int, height: int, align_corners: bool, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(3, 3) matrix taking pixel (x, y, 1) to normalized (u, v, 1) for a ``width`` x ``height`` frame."""
    def axis(size: int) -> tuple[float, float]:
        if align_corners:
            return 2.0 / max(size - 1, 1), -1.0
        return 2.0 / size, 1.0 / size - 1.0

    sx, ox = axis(width)
    sy, oy = axis(height)
    return torch.tensor([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]], dtype=dtype)


def frame_centre(width: int, height: int) -> tuple[float, float]:
    """The centre of a frame in pixel coordinates (between pixels when a side is even)."""
    return ((width - 1) / 2.0, (height - 1) / 2.0)


def border_polyline(width: int, height: int, per_side: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(4 * per_side, 2) points along the frame's outer edge (pixel coordinates), clockwise from
    the top-left corner: warp them to draw where the frame lands."""
    t = torch.linspace(0.0, 1.0, per_side + 1, dtype=dtype)[:-1]
    x0, y0, x1, y1 = -0.5, -0.5, width - 0.5, height - 0.5
    top = torch.stack([x0 + t * (x1 - x0), torch.full_like(t, y0)], 1)
    right = torch.stack([torch.full_like(t, x1), y0 + t * (y1 - y0)], 1)
    bottom = torch.stack([x1 - t * (x1 - x0), torch.full_like(t, y1)], 1)
    left = torch.stack([torch.full_like(t, x0), y1 - t * (y1 - y0)], 1)
    return torch.cat([top, right, bottom, left])


def grid_jacobian_determinant(grid: torch.Tensor) -> torch.Tensor:
    """The Jacobian determinant of a sampling map, per output pixel.

    Args:
        grid: (N, H, W, 2) where each output pixel (row, column) reads, as (x, y) in any units
            (pixels give input pixels per output pixel); H and W at least 2.
    Returns:
        (N, H, W): det d(x, y)/d(column, row), by central differences (one-sided at the border).
        1 for the identity in pixels; where its sign is opposite to the map's orientation (or 0)
        the map folds over (or collapses) and cannot be inverted.
    """
    if grid.dim() != 4 or grid.shape[-1] != 2 or min(grid.shape[1:3]) < 2:
        raise ValueError(f"grid must be (N, H, W, 2) with H, W >= 2, got {tuple(grid.shape)}")
    d_row, d_col = torch.gradient(grid, dim=(1, 2))
    return d_col[..., 0] * d_row[..., 1] - d_col[..., 1] * d_row[..., 0]
