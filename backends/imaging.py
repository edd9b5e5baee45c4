"""Image utilities every operator shares: luma, resizing to a long side, image grids.

Tensors are (N, C, H, W) floats in [0, 1] unless a docstring says otherwise. One home for each
of these, so operators, models and training scripts resize and tile the same way.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

REC601 = (0.299, 0.587, 0.114)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB to (N, 1, H, W) Rec. 601 luma."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"luminance expects (N, 3, H, W), got {tuple(image.shape)}")
    w = torch.tensor(REC601, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def long_side_size(height: int, width: int, long_side: int, multiple: int = 1, minimum: int = 1,
                   upscale: bool = False) -> tuple[int, int]:
    """The (h, w) whose longer side is ``long_side`` (never more than the input's unless
    ``upscale``), each side rounded to a multiple of ``multiple`` and at least ``minimum``."""
    s = long_side / max(height, width)
    if not upscale:
        s = min(s, 1.0)
    step = max(1, multiple)
    low = max(minimum, step)

    def side(n: int) -> int:
        return max(low, int(round(n * s / step)) * step)

    return side(height), side(width)


def resize(image: torch.Tensor, size: tuple[int, int], antialias: bool = False, nearest: bool = False) -> torch.Tensor:
    """(N, C, H, W) to ``size`` = (h, w): area averaging where both sides shrink (no aliasing,
    no blur on exact divisors), bilinear otherwise (antialiased when asked); ``nearest`` keeps
    values as they are (token indices, masks)."""
    h, w = image.shape[-2:]
    if (h, w) == tuple(size):
        return image
    if nearest:
        return F.interpolate(image, size=size, mode="nearest")
    if size[0] <= h and size[1] <= w and not antialias:
        return F.interpolate(image, size=size, mode="area")
    out = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return out


def resize_long_side(image: torch.Tensor, long_side: int, multiple: int = 1, minimum: int = 1,
                     upscale: bool = False, antialias: bool = False) -> torch.Tensor:
    """``image`` resized so its longer side is ``long_side`` (see :func:`long_side_size`)."""
    h, w = image.shape[-2:]
    return resize(image, long_side_size(h, w, long_side, multiple, minimum, upscale), antialias)


def center_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> its central square resized to (N, C, size, size)."""
    h, w = image.shape[-2:]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return resize(image[..., y0: y0 + s, x0: x0 + s], (size, size))


def upscale_nearest(image: torch.Tensor, scale: int) -> torch.Tensor:
    """(..., H, W) -> (..., H * scale, W * scale), each pixel a ``scale`` x ``scale`` block."""
    if scale == 1:
        return image
    return image.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def image_grid(images: torch.Tensor, columns: int, scale: int = 1, gap: int = 1, fill: float = 0.08,
               highlight: Optional[int] = None, highlight_color: Sequence[float] = (1.0, 0.85, 0.1),
               highlight_width: Optional[int] = None) -> torch.Tensor:
    """(N, C, h, w) -> one (C, H, W) image of ``columns`` columns, ``gap`` pixels of ``fill``
    between tiles (before upscaling), upscaled by ``scale`` (nearest); tile ``highlight`` gets a
    border of ``highlight_color`` inside its edge, ``highlight_width`` output pixels wide
    (default: an eighth of the tile)."""
    if images.dim() != 4:
        raise ValueError(f"image_grid expects (N, C, h, w), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    columns = max(1, min(columns, n)) if n else 1
    rows = max(1, -(-n // columns))
    canvas = images.new_full((c, rows * (h + gap) - gap, columns * (w + gap) - gap), fill)
    for i in range(n):
        r, col = divmod(i, columns)
        canvas[:, r * (h + gap): r * (h + gap) + h, col * (w + gap): col * (w + gap) + w] = images[i]
    out = upscale_nearest(canvas, scale).clone() if scale != 1 else canvas
    if highlight is not None and 0 <= highlight < n:
        r, col = divmod(highlight, columns)
        y0, x0 = r * (h + gap) * scale, col * (w + gap) * scale
        th, tw = h * scale, w * scale
        t = highlight_width if highlight_width is not None else max(1, min(th, tw) // 8)
        color = torch.tensor(list(highlight_color)[:c], device=out.device, dtype=out.dtype).view(-1, 1, 1)
        out[:, y0: y0 + th, x0: x0 + t] = color
        out[:, y0: y0 + th, x0 + tw - t: x0 + tw] = color
        out[:, y0: y0 + t, x0: x0 + tw] = color
        out[:, y0 + th - t: y0 + th, x0: x0 + tw] = color
    return out


def grid_cell(index: int, columns: int, tile: tuple[int, int], gap: int = 1, scale: int = 1) -> tuple[int, int, int, int]:
    """Where tile ``index`` of :func:`image_grid` lies: (x, y, w, h) in the grid's pixels."""
    r, c = divmod(index, columns)
    h, w = tile
    return c * (w + gap) * scale, r * (h + gap) * scale, w * scale, h * scale


def hwc(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (H, W, C), the layout image layers take."""
    return image.permute(1, 2, 0)
