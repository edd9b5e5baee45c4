"""The deformable convolution of a global warp, from one resampled image.

When every tap's offset comes from one displacement field D of the plane (a zoom, a rotation,
a shear, a swirl), tap t of output pixel p reads the input at q + D(q) with q = p + t, and q lies
on the pixel grid widened by the kernel's reach. So the image is resampled once on that widened
grid, I(q + D(q)), and each tap is a shifted window of it: 1/K of the bilinear reads of
:func:`~backends.functional.deformable.deform_conv2d`, with the same result (tested).

Fields on the widened grid are (H + 2 reach, W + 2 reach) planes; point (x, y) sits at index
(y + reach, x + reach), reach = dilation * (k // 2). Pixel coordinates put pixel centres on
integers, x right, y down. Taps are row-major, as in torchvision.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from backends.functional.deformable import offsets_buffer
from backends.functional.filters import correlate_planes, correlates_in_opencv


def widened_coords(h: int, w: int, reach: int, device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (1, W + 2 reach) and y (H + 2 reach, 1): the pixel grid widened by ``reach`` on each side,
    where every tap of a kernel of that reach lands."""
    x = torch.arange(-reach, w + reach, device=device, dtype=torch.float32)[None, :]
    y = torch.arange(-reach, h + reach, device=device, dtype=torch.float32)[:, None]
    return x, y


def affine_displacement(matrix: torch.Tensor, h: int, w: int, reach: int,
                        device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dy) = A(q) - q on the widened grid, for a (3, 3) or (2, 3) pixel-space affine map A
    (see :func:`backends.functional.affine.compose_affine`)."""
    if tuple(matrix.shape) not in ((2, 3), (3, 3)):
        raise ValueError(f"matrix must be (2, 3) or (3, 3), got {tuple(matrix.shape)}")
    m = matrix.tolist()
    x, y = widened_coords(h, w, reach, device)
    dx = torch.add(x * (m[0][0] - 1) + m[0][2], y * m[0][1])
    dy = torch.add(x * m[1][0], y * (m[1][1] - 1) + m[1][2])
    return dx, dy


def swirl_envelope(centre: tuple[float, float], h: int, w: int, reach: int, radius: float,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """exp(-r^2 / 2 radius^2) on the widened grid, r the distance from ``centre`` (x, y): a swirl's
    fall-off, which does not depend on its angle (so callers may keep it)."""
    x, y = widened_coords(h, w, reach, device)
    a = (0.5 ** 0.5) / radius
    return ((x - centre[0]) * a).square_().add((y - centre[1]).mul_(a).square_()).neg_().exp_()


def swirl_displacement(centre: tuple[float, float], angle: float, envelope: torch.Tensor,
                       reach: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dy) on the widened grid of a :func:`swirl_envelope` of that ``reach``: each point
    turns about ``centre`` (x, y) by ``angle * envelope`` radians, counter-clockwise as seen on
    screen (y down), the rotation of :func:`~backends.functional.affine.compose_affine`."""
    hp, wp = envelope.shape
    x, y = widened_coords(hp - 2 * reach, wp - 2 * reach, reach, envelope.device)
    phi = envelope * angle
    cos_m1, sin = phi.cos().sub_(1.0), phi.sin_()
    rx, ry = x - centre[0], y - centre[1]
    dx = torch.mul(cos_m1, rx).addcmul_(sin, ry)  # (cos - 1) rx + sin ry
    dy = torch.mul(cos_m1, ry).addcmul_(sin, rx, value=-1.0)  # (cos - 1) ry - sin rx
    return dx, dy


def tap_windows(plane: torch.Tensor, k: int, dilation: int, h: int, w: int) -> list[torch.Tensor]:
    """The (..., H, W) window of a widened-grid plane (..., H + 2 reach, W + 2 reach) that each
    tap reads, row-major: views, no copies."""
    return [plane[..., i * dilation: i * dilation + h, j * dilation: j * dilation + w] for i in range(k) for j in range(k)]


def offsets_from_displacement(dx: torch.Tensor, dy: torch.Tensor, k: int, dilation: int) -> torch.Tensor:
    """torchvision offsets (1, 2K, H, W) of (dy, dx) from a displacement on the widened grid: tap
    t of pixel p moves by the displacement at p + t. What the fast path stands for."""
    reach = dilation * (k // 2)
    h, w = dx.shape[0] - 2 * reach, dx.shape[1] - 2 * reach
    out, out_dx, out_dy = offsets_buffer(k * k, h, w, dx)
    for t, (wx, wy) in enumerate(zip(tap_windows(dx, k, dilation, h, w), tap_windows(dy, k, dilation, h, w))):
        out_dx[t].copy_(wx)
        out_dy[t].copy_(wy)
    return out


class DisplacementOffsets:
    """The offsets :func:`offsets_from_displacement` gives, made only where they are read.

    A view reads a strided subset (an arrow every 16 px, one clicked pixel), and the whole
    (1, 2K, H, W) field of a 512x512 image cost 3.4 ms a frame to write out. Indexing with
    ``[..., rows, columns]`` (two slices) returns exactly ``offsets_from_displacement(...)[...,
    rows, columns]``; :meth:`full` returns the whole tensor."""

    def __init__(self, dx: torch.Tensor, dy: torch.Tensor, k: int, dilation: int) -> None:
        reach = dilation * (k // 2)
        h, w = dx.shape[0] - 2 * reach, dx.shape[1] - 2 * reach
        self._dx, self._dy, self._k, self._dilation = dx, dy, k, dilation
        self._windows = list(zip(tap_windows(dy, k, dilation, h, w), tap_windows(dx, k, dilation, h, w)))
        self.shape = torch.Size((1, 2 * k * k, h, w))
        self.device, self.dtype = dx.device, dx.dtype

    def __getitem__(self, key) -> torch.Tensor:
        if not (isinstance(key, tuple) and len(key) == 3 and key[0] is Ellipsis
                and all(isinstance(s, slice) for s in key[1:])):
            raise TypeError(f"index with [..., rows, columns] (two slices), not {key!r}")
        return torch.stack([plane[key[1:]] for pair in self._windows for plane in pair])[None]

    def full(self) -> torch.Tensor:
        return offsets_from_displacement(self._dx, self._dy, self._k, self._dilation)


def resample_widened(input: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``input`` (N, C, H, W) read bilinearly, zero outside, at every point q + D(q) of the widened
    grid: (N, C, H + 2 reach, W + 2 reach)."""
    n, _, h, w = input.shape
    hp, wp = dx.shape
    if dy.shape != dx.shape or (hp - h) != (wp - w) or (hp - h) % 2 or hp < h:
        raise ValueError(f"dx {tuple(dx.shape)} and dy {tuple(dy.shape)} must be one widened grid "
                         f"(H + 2 reach, W + 2 reach) of the input's {h}x{w} (H x W)")
    x, y = widened_coords(h, w, (hp - h) // 2, input.device)
    grid = input.new_empty(1, hp, wp, 2)
    torch.addcmul((x + 0.5) * (2.0 / w) - 1.0, dx, input.new_tensor(2.0 / w), out=grid[0, ..., 0])
    torch.addcmul((y + 0.5) * (2.0 / h) - 1.0, dy, input.new_tensor(2.0 / h), out=grid[0, ..., 1])
    return F.grid_sample(input, grid.expand(n, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=False)


def depthwise_window_sum(widened: torch.Tensor, kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """sum_t kernel[t] * (tap t's window) of a widened (N, C, H + 2 reach, W + 2 reach) image: a
    depthwise convolution with one (K,) kernel on every channel, (N, C, H, W). Nine shifted
    multiply-adds ran 7x faster than a dilated depthwise conv2d on the CPU (0.8 against 5.9 ms
    at 512 x 512)."""
    k = int(round(kernel.numel() ** 0.5))
    if k * k != kernel.numel():
        raise ValueError(f"kernel must hold k * k taps, got {kernel.numel()}")
    reach = dilation * (k // 2)
    h, w = widened.shape[-2] - 2 * reach, widened.shape[-1] - 2 * reach
    side = 2 * reach + 1
    dilated = kernel.new_zeros(side, side)
    dilated[::dilation, ::dilation] = kernel.view(k, k)
    if correlates_in_opencv(widened, dilated):  # tap (0, 0)'s window is the valid corner's origin
        return correlate_planes(widened, dilated, (0, 0), (h, w))
    out = None
    for window, weight in zip(tap_windows(widened, k, dilation, h, w), kernel.tolist()):
        out = window * weight if out is None else out.add_(window, alpha=weight)
    return out


def depthwise_conv(image: torch.Tensor, kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """The (K,) kernel on every channel of (N, C, H, W), zero 'same' padding: the regular twin of
    the deformed output, by the same shifted windows."""
    reach = dilation * (int(round(kernel.numel() ** 0.5)) // 2)
    return depthwise_window_sum(F.pad(image, (reach,) * 4), kernel, dilation)


def global_warp_taps(input: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, k: int, dilation: int) -> torch.Tensor:
    """The sampled taps (N, C, H, W, K) of ``deform_conv2d`` with 'same' padding at the offsets
    :func:`offsets_from_displacement` gives, as shifted windows of one :func:`resample_widened`
    image. The v1 output is :func:`depthwise_window_sum` of that image."""
    h, w = input.shape[2:]
    return torch.stack(tap_windows(resample_widened(input, dx, dy), k, dilation, h, w), -1)
