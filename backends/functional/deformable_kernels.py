"""Deformable kernels (Gao et al., "Deformable Kernels: Adapting Effective Receptive Fields for
Object Deformation", ICLR 2020): the input is read on the regular K x K grid, and the kernel itself
is resampled. Its weights live on a larger S x S grid, the kernel space; tap t of output pixel p
takes its weight bilinearly from the kernel space at the centre + t + offset_t(p), zero outside:

    out(p) = sum_t W_space(c + t + offset_t(p)) * input(p + t * dilation)

so the theoretical receptive field stays K x K while the weights, and with them the effective
receptive field, change. Deformable convolution moves the reads instead; with one offset per tap
for every pixel it equals a plain convolution with each tap's weight spread bilinearly onto the
pixels around where it reads (:func:`splat_taps`, tested against ``deform_conv2d``).

Offsets are (N, 2 * K * K, Ho, Wo) of (dy, dx) per tap, taps row-major as in torchvision, in
kernel-space cells; (N, 2 * K * K, 1, 1) gives every pixel the same offsets (a "global" deformable
kernel: one resampled kernel per image). Kernel-space coordinates: column x, row y, cell centres
on integers, centre c = (S - 1) / 2. Tensors are NCHW.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.filters import correlate_planes, correlates_in_opencv


def _check_space(weight_space: torch.Tensor, kernel_size: int) -> None:
    if weight_space.dim() != 4 or weight_space.shape[-1] != weight_space.shape[-2]:
        raise ValueError(f"weight_space must be (C_out, C_in / groups, S, S), got {tuple(weight_space.shape)}")
    s = weight_space.shape[-1]
    if kernel_size < 1 or kernel_size % 2 == 0 or s < max(kernel_size, 2) or (s - kernel_size) % 2:
        raise ValueError(f"kernel_size {kernel_size} must be odd and fit the {s}x{s} kernel space with an even "
                         f"margin (S - K even, S >= 2), weight_space {tuple(weight_space.shape)}")


def tap_grid(kernel_size: int, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(K * K, 2) regular tap positions (x, y) about the kernel's centre, row-major."""
    c = torch.arange(kernel_size, device=device, dtype=dtype) - kernel_size // 2
    return torch.stack([c.repeat(kernel_size), c.repeat_interleave(kernel_size)], 1)


def sample_kernel(weight_space: torch.Tensor, offset: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Bilinear samples of the kernel space at every tap's position, zero outside.

    Args:
        weight_space: (C_out, C_in / groups, S, S), S - K even.
        offset: (N, 2 * K * K, Ho, Wo) of (dy, dx) per tap, row-major, in kernel-space cells.
    Returns:
        (N, C_out, C_in / groups, K * K, Ho, Wo): tap t's weight at each output pixel. Zero
        offsets give the central K x K crop of the kernel space.
    """
    _check_space(weight_space, kernel_size)
    taps = kernel_size * kernel_size
    if offset.dim() != 4 or offset.shape[1] != 2 * taps:
        raise ValueError(f"offset must be (N, {2 * taps}, Ho, Wo) for a {kernel_size}x{kernel_size} kernel, "
                         f"got {tuple(offset.shape)}")
    n, _, ho, wo = offset.shape
    c_out, per, s, _ = weight_space.shape
    centre = (s - 1) / 2.0
    base = tap_grid(kernel_size, offset.device, offset.dtype) + centre  # (K*K, 2) of (x, y)
    off = offset.reshape(n, taps, 2, ho, wo)
    x = base[:, 0].view(1, taps, 1, 1) + off[:, :, 1]
    y = base[:, 1].view(1, taps, 1, 1) + off[:, :, 0]
    # align_corners=True: cell i of S sits at 2 i / (S - 1) - 1, so zero offsets land on cells.
    grid = torch.stack([x, y], -1).mul(2.0 / (s - 1)).sub(1.0)  # (N, K*K, Ho, Wo, 2)
    grid = grid.permute(0, 2, 3, 1, 4).reshape(n, ho, wo * taps, 2)
    space = weight_space.reshape(1, c_out * per, s, s).expand(n, -1, -1, -1)
    out = F.grid_sample(space, grid.to(weight_space.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(n, c_out, per, ho, wo, taps).permute(0, 1, 2, 5, 3, 4)


def deform_kernel_conv2d(input: torch.Tensor, offset: torch.Tensor, weight_space: torch.Tensor, kernel_size: int,
                         bias: Optional[torch.Tensor] = None, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """Deformable-kernel convolution, stride 1, zero 'same' padding.

    Args:
        input: (N, C_in, H, W).
        offset: (N, 2 * K * K, H, W) per pixel, or (N, 2 * K * K, 1, 1) for every pixel alike.
        weight_space: (C_out, C_in / groups, S, S), the kernel space.
        bias: (C_out,) or None.
    Returns:
        (N, C_out, H, W). Differentiable in input, offset, weight space and bias.
    """
    _check_space(weight_space, kernel_size)
    n, c_in, h, w = input.shape if input.dim() == 4 else (0, 0, 0, 0)
    c_out, per = weight_space.shape[:2]
    if input.dim() != 4 or c_in != per * groups or c_out % groups:
        raise ValueError(f"input must be (N, {per * groups}, H, W) for weight_space {tuple(weight_space.shape)} and "
                         f"{groups} groups, got {tuple(input.shape)}")
    if offset.dim() != 4 or offset.shape[0] != n or tuple(offset.shape[2:]) not in ((h, w), (1, 1)):
        raise ValueError(f"offset must be (N, {2 * kernel_size ** 2}, H, W) or (N, {2 * kernel_size ** 2}, 1, 1) for "
                         f"input {tuple(input.shape)}, got {tuple(offset.shape)}")
    k, pad = kernel_size, dilation * (kernel_size - 1) // 2
    weights = sample_kernel(weight_space, offset, k)  # (N, C_out, per, K*K, ho, wo)
    if offset.shape[2:] == (1, 1):  # one kernel per sample: a grouped convolution over the batch
        kernel = weights.reshape(n * c_out, per, k, k)
        out = F.conv2d(input.reshape(1, n * c_in, h, w), kernel, padding=pad, dilation=dilation, groups=n * groups)
        out = out.reshape(n, c_out, h, w)
    else:
        cols = F.unfold(input, k, dilation=dilation, padding=pad).reshape(n, groups, per, k * k, h, w)
        wg = weights.reshape(n, groups, c_out // groups, per, k * k, h, w)
        out = torch.einsum("ngockhw,ngckhw->ngohw", wg, cols).reshape(n, c_out, h, w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class DeformableKernelConv2d(nn.Module):
    """Module twin of :func:`deform_kernel_conv2d`: a learned ``space_size`` x ``space_size``
    kernel space from which K x K kernels are sampled; offsets come with each call."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, space_size: int, dilation: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.dilation, self.groups = kernel_size, dilation, groups
        self.weight_space = nn.Parameter(torch.empty(out_channels, in_channels // groups, space_size, space_size))
        nn.init.kaiming_uniform_(self.weight_space, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        _check_space(self.weight_space, kernel_size)

    def forward(self, input: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_kernel_conv2d(input, offset, self.weight_space, self.kernel_size, self.bias, self.dilation, self.groups)


SPACE_PATTERNS = ("gabor", "gaussian", "edge", "log")
GABOR_WAVELENGTH = 4.0  # cells: one period fits a 5 x 5 crop
GABOR_ANGLE = 30.0  # degrees, counter-clockwise on screen: a turn or shear of the kernel shows


def pattern_space(name: str, size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A (size, size) kernel space whose pattern fills it (Gaussian envelope, sigma = (size - 1) / 4):
    ``gabor`` stripes of 4 cells at 30 deg (zero mean), ``gaussian`` (sums to 1), ``edge`` the x
    derivative of the Gaussian, ``log`` its negated Laplacian (zero mean). Signed patterns have an
    absolute sum of 2, as the kernel bank's."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    c = (size - 1) / 2.0
    t = torch.arange(size, dtype=torch.float64) - c
    y, x = t.view(-1, 1), t.view(1, -1)
    sigma = max((size - 1) / 4.0, 0.5)
    env = torch.exp(-(x * x + y * y) / (2 * sigma * sigma))
    if name == "gaussian":
        return (env / env.sum()).to(dtype)
    if name == "gabor":
        a = math.radians(GABOR_ANGLE)
        u = x * math.sin(a) + y * math.cos(a)  # across stripes at angle a on screen (y down)
        k = env * torch.cos(2 * math.pi * u / GABOR_WAVELENGTH)
        k = k - env * (k.sum() / env.sum())
    elif name == "edge":
        k = -x * env
    elif name == "log":
        r2 = (x * x + y * y) / (sigma * sigma)
        k = (2.0 - r2) * env
        k = k - k.mean()
    else:
        raise ValueError(f"unknown pattern {name!r}; one of {', '.join(SPACE_PATTERNS)}")
    return (2.0 * k / k.abs().sum().clamp_min(1e-12)).to(dtype)


def affine_tap_offsets(matrix: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(2 * K * K,) offsets (dy, dx) that move each regular tap t to A t, for a (2, 2) linear map A
    (the linear part of :func:`backends.functional.affine.compose_affine`): a zoom, turn or shear
    of the tap pattern about its centre. In kernel-space cells for a deformable kernel, in input
    pixels for a deformable convolution."""
    if tuple(matrix.shape) != (2, 2):
        raise ValueError(f"matrix must be (2, 2), got {tuple(matrix.shape)}")
    t = tap_grid(kernel_size, matrix.device, matrix.dtype)
    moved = t @ matrix.T - t  # (K*K, 2) of (dx, dy)
    return moved.flip(-1).reshape(-1)


def splat_taps(weights: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """One kernel that reads like taps of ``weights`` (T,) at sub-pixel ``positions`` (T, 2) of
    (x, y) about the centre, each read bilinearly: every weight spread onto the four pixels around
    its position. (2R + 1, 2R + 1) with R the farthest position's ceiling, centre at (R, R).

    A deformable convolution whose offsets are the same at every pixel equals the 'same'
    zero-padded convolution with this kernel (both read zero outside the image)."""
    if weights.dim() != 1 or positions.shape != (weights.shape[0], 2):
        raise ValueError(f"weights (T,) and positions (T, 2) disagree: {tuple(weights.shape)} and {tuple(positions.shape)}")
    r = int(math.ceil(float(positions.abs().max()) - 1e-9)) if positions.numel() else 0
    size = 2 * r + 1
    p = positions + r
    lo = p.floor()
    frac = p - lo
    lo = lo.long()
    out = weights.new_zeros(size + 1, size + 1)  # one spare row and column for corners of zero weight
    for dy in (0, 1):
        for dx in (0, 1):
            wy = frac[:, 1] if dy else 1 - frac[:, 1]
            wx = frac[:, 0] if dx else 1 - frac[:, 0]
            out.index_put_((lo[:, 1] + dy, lo[:, 0] + dx), weights * wy * wx, accumulate=True)
    return out[:size, :size]


WINDOW_LIMIT = 40  # non-zero taps up to which shifted windows beat an FFT (about 0.03 ms a window at 256 x 256 x 3)


def depthwise_same(input: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """One (k, k) kernel, k odd, correlated with every channel of (N, C, H, W), zero 'same'
    padding (as ``F.conv2d`` with padding k // 2). A kernel with few non-zero taps (a splatted one)
    is a sum of shifted windows that skips its zeros; a denser one goes through an FFT. Both ran
    several times faster than a depthwise ``F.conv2d`` on the CPU."""
    k = kernel.shape[-1]
    if kernel.dim() != 2 or kernel.shape[0] != k or k % 2 == 0 or input.dim() != 4:
        raise ValueError(f"expected input (N, C, H, W) and an odd square kernel, got {tuple(input.shape)} and "
                         f"{tuple(kernel.shape)}")
    if correlates_in_opencv(input, kernel):
        return correlate_planes(input, kernel, (k // 2, k // 2))
    if int(torch.count_nonzero(kernel)) <= WINDOW_LIMIT:
        return _window_sum(input, kernel)
    return _fft_correlate(input, kernel)


def _window_sum(input: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    r = kernel.shape[-1] // 2
    h, w = input.shape[-2:]
    padded = F.pad(input, (r, r, r, r))
    out = torch.zeros_like(input)
    ys, xs = torch.nonzero(kernel, as_tuple=True)
    for y, x, value in zip(ys.tolist(), xs.tolist(), kernel[ys, xs].tolist()):
        out.add_(padded[..., y: y + h, x: x + w], alpha=value)
    return out


def _fast_size(n: int) -> int:
    """The smallest m >= n whose prime factors are 2, 3 and 5: a fast FFT length."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _fft_correlate(input: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """out[p] = sum_t kernel[t] input[p + t - r] by a product of spectra on a grid at least r larger
    than the input on each axis, so the circular wrap only reads zeros."""
    k = kernel.shape[-1]
    r = k // 2
    h, w = input.shape[-2:]
    gh, gw = _fast_size(h + r), _fast_size(w + r)
    flipped = input.new_zeros(gh, gw)
    rows = (r - torch.arange(k, device=input.device)) % gh
    cols = (r - torch.arange(k, device=input.device)) % gw
    flipped[rows.view(-1, 1), cols.view(1, -1)] = kernel.to(input.dtype)
    spectrum = torch.fft.rfft2(input, s=(gh, gw)) * torch.fft.rfft2(flipped)
    return torch.fft.irfft2(spectrum, s=(gh, gw))[..., :h, :w]


def receptive_field(fn: Callable[[torch.Tensor], torch.Tensor], input: torch.Tensor, query: tuple[int, int]) -> torch.Tensor:
    """|d sum_c fn(input)[0, c, y, x] / d input| summed over input channels, (H, W): the effective
    receptive field of output pixel ``query`` = (x, y), by autograd (on even under no_grad)."""
    qx, qy = query
    with torch.enable_grad():
        x = input.detach().clone().requires_grad_(True)
        fn(x)[0, :, qy, qx].sum().backward()
    return x.grad[0].abs().sum(0)
