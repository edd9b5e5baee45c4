"""Deformable convolution (v1 and v2) in pure torch, with the layouts of
``torchvision.ops.deform_conv2d``: every tap of every output pixel reads the input at its
regular position plus an offset, bilinearly, zero outside; v2 also scales each tap by a mask.

Offsets are (N, 2 * G * kh * kw, Ho, Wo) holding (dy, dx) per tap, taps row-major (tap
``i * kw + j`` is row i, column j of the kernel), G offset groups each serving C_in / G
consecutive input channels. Pixel coordinates put pixel centres on integers, x right, y down.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

IntPair = Union[int, tuple[int, int]]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return pair


def deform_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length along one axis, as for ``F.conv2d``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: Optional[torch.Tensor],
           bias: Optional[torch.Tensor], out_hw: tuple[int, int]) -> int:
    """Validates the layouts; returns the number of offset groups."""
    if input.dim() != 4 or weight.dim() != 4 or offset.dim() != 4:
        raise ValueError(f"input, offset and weight must be 4-D, got {input.dim()}, {offset.dim()}, {weight.dim()}")
    n, c_in = input.shape[:2]
    c_out, c_per_group, kh, kw = weight.shape
    if c_per_group == 0 or c_in % c_per_group:
        raise ValueError(f"input channels {c_in} are not a multiple of the weight's {c_per_group} per group")
    if c_out % (c_in // c_per_group):
        raise ValueError(f"output channels {c_out} are not divisible by the {c_in // c_per_group} weight groups")
    taps = kh * kw
    if offset.shape[1] % (2 * taps) or offset.shape[1] == 0:
        raise ValueError(f"offset has {offset.shape[1]} channels; expected a multiple of 2 * kh * kw = {2 * taps}")
    groups = offset.shape[1] // (2 * taps)
    if c_in % groups:
        raise ValueError(f"input channels {c_in} are not divisible by the {groups} offset groups")
    if offset.shape[0] != n or tuple(offset.shape[2:]) != out_hw:
        raise ValueError(f"offset is {tuple(offset.shape)}; expected ({n}, {offset.shape[1]}, {out_hw[0]}, {out_hw[1]})")
    if mask is not None and tuple(mask.shape) != (n, groups * taps, *out_hw):
        raise ValueError(f"mask is {tuple(mask.shape)}; expected ({n}, {groups * taps}, {out_hw[0]}, {out_hw[1]})")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias is {tuple(bias.shape)}; expected ({c_out},)")
    return groups


def sampling_grid(offset: torch.Tensor, in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                  padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` coordinates of every tap: (N * G, Ho, Wo * K, 2), K = kh * kw row-major,
    the taps of one output pixel side by side.

    Tap (i, j) of output (y, x) reads input pixel (y * stride - pad + i * dil + dy, x * stride - pad + j * dil + dx);
    with ``align_corners=False`` pixel p sits at (2p + 1) / size - 1, folded into the small
    regular part so the full-size tensors see one multiply-add per coordinate. Taps innermost
    keep ``grid_sample``'s reads local: a swirl field sampled tap by tap over whole rows measured
    ~3x slower on the CPU.
    """
    n, _, ho, wo = offset.shape
    (kh, kw), (h, w) = kernel, in_hw
    dev, dt = offset.device, offset.dtype
    off = offset.reshape(n, -1, kh * kw, 2, ho, wo).permute(0, 1, 4, 5, 2, 3)  # (N, G, Ho, Wo, K, 2) view
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dilation[1]).repeat(kh)
    base_y = torch.arange(ho, device=dev, dtype=dt) * stride[0] - padding[0]
    base_x = torch.arange(wo, device=dev, dtype=dt) * stride[1] - padding[1]
    regular_y = (base_y[:, None, None] + tap_y + 0.5) * (2.0 / h) - 1.0  # (Ho, 1, K)
    regular_x = (base_x[:, None] + tap_x + 0.5) * (2.0 / w) - 1.0  # (Wo, K)
    sx, sy = off.new_tensor(2.0 / w), off.new_tensor(2.0 / h)
    if torch.is_grad_enabled() and offset.requires_grad:
        gx = torch.addcmul(regular_x, off[..., 1], sx)
        gy = torch.addcmul(regular_y, off[..., 0], sy)
        return torch.stack([gx, gy], -1).reshape(-1, ho, wo * kh * kw, 2)
    # No autograd: write both coordinates straight into the interleaved grid, which measured
    # ~4x faster on the CPU than stacking two planes (out= cannot record a graph).
    grid = off.new_empty(n, off.shape[1], ho, wo, kh * kw, 2)
    torch.addcmul(regular_x, off[..., 1], sx, out=grid[..., 0])
    torch.addcmul(regular_y, off[..., 0], sy, out=grid[..., 1])
    return grid.reshape(-1, ho, wo * kh * kw, 2)


def sample_taps(input: torch.Tensor, grid: torch.Tensor, taps: int) -> torch.Tensor:
    """Bilinear samples, zero outside, of ``input`` (N, C, H, W) at a :func:`sampling_grid` of G
    groups (N * G, Ho, Wo * K, 2); channel block g reads group g's grid. Returns (N, C, Ho, Wo, K).

    One ``grid_sample`` call for all taps; its zero padding gives torchvision's rule that a corner
    outside the image reads 0, and nothing is read beyond one pixel outside.
    """
    n, c, h, w = input.shape
    g = grid.shape[0] // max(n, 1)
    if grid.dim() != 4 or grid.shape[0] != n * g or g == 0 or c % g or grid.shape[2] % taps:
        raise ValueError(f"grid {tuple(grid.shape)} does not fit input {tuple(input.shape)} with {taps} taps")
    out = F.grid_sample(input.reshape(n * g, c // g, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(n, c, grid.shape[1], grid.shape[2] // taps, taps)


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution, v1 (no mask) or v2 (mask), as ``torchvision.ops.deform_conv2d``.

    Args:
        input: (N, C_in, H, W).
        offset: (N, 2 * G * kh * kw, Ho, Wo), (dy, dx) per tap, row-major taps, G offset groups.
        weight: (C_out, C_in / groups, kh, kw).
        bias: (C_out,) or None.
        mask: (N, G * kh * kw, Ho, Wo) for v2, or None.
    Returns:
        (N, C_out, Ho, Wo) with Ho = (H + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1.
        Pure torch: any device, differentiable in every tensor argument.
    """
    stride_, padding_, dilation_ = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    c_out, c_per_group, kh, kw = weight.shape
    out_hw = tuple(deform_output_size(input.shape[2 + i], (kh, kw)[i], stride_[i], padding_[i], dilation_[i]) for i in range(2))
    groups = _check(input, offset, weight, mask, bias, out_hw)
    n, c_in = input.shape[:2]
    if n == 0 or out_hw[0] <= 0 or out_hw[1] <= 0:
        return input.new_zeros((n, c_out, max(out_hw[0], 0), max(out_hw[1], 0)))
    grid = sampling_grid(offset, input.shape[2:], (kh, kw), stride_, padding_, dilation_)
    taps = sample_taps(input, grid, kh * kw)  # (N, C_in, Ho, Wo, K)
    if mask is not None:
        m = mask.reshape(n, groups, 1, kh * kw, *out_hw).permute(0, 1, 2, 4, 5, 3)
        taps = (taps.reshape(n, groups, c_in // groups, *out_hw, kh * kw) * m).reshape(n, c_in, *out_hw, kh * kw)
    wgroups = c_in // c_per_group
    taps = taps.reshape(n, wgroups, c_per_group, out_hw[0] * out_hw[1], kh * kw)
    w = weight.reshape(wgroups, c_out // wgroups, c_per_group, kh * kw)
    out = torch.einsum("gock,ngclk->ngol", w, taps).reshape(n, c_out, *out_hw)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Module twin of :func:`deform_conv2d`; offsets (and the v2 mask) come with each call."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size, "kernel_size")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, input: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


def modulated_depthwise(taps: torch.Tensor, kernel: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """deform_conv2d's last step for a depthwise weight: the sum of sampled taps (N, C, H, W, K)
    weighted by one (K,) kernel on every channel and an optional mask (N, K, H, W). (N, C, H, W)."""
    if taps.shape[-1] != kernel.numel() or (mask is not None and mask.shape[1] != kernel.numel()):
        raise ValueError(f"taps {tuple(taps.shape)}, kernel {tuple(kernel.shape)} and mask "
                         f"{None if mask is None else tuple(mask.shape)} disagree on the number of taps")
    if mask is None:
        return taps @ kernel
    return (taps * (mask.permute(0, 2, 3, 1) * kernel)[:, None]).sum(-1)


def tap_vectors(k: int, dilation: int, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(K, 2) regular tap positions (x, y) relative to the output pixel, 'same' padding, row-major."""
    c = (torch.arange(k, device=device, dtype=dtype) - k // 2) * dilation
    return torch.stack([c.repeat(k), c.repeat_interleave(k)], 1)


def offsets_to_xy(offsets: torch.Tensor) -> torch.Tensor:
    """(1, 2K, H, W) offsets of (dy, dx) -> (K, H, W, 2) displacements of (dx, dy); thin it first."""
    if offsets.dim() != 4 or offsets.shape[0] != 1 or offsets.shape[1] % 2:
        raise ValueError(f"offsets must be (1, 2K, H, W), got {tuple(offsets.shape)}")
    _, c, h, w = offsets.shape
    return offsets.reshape(c // 2, 2, h, w).permute(0, 2, 3, 1).flip(-1)


def offset_magnitude(offsets: torch.Tensor) -> torch.Tensor:
    """(1, 2K, H, W) offsets -> (K, H, W) lengths in pixels."""
    _, c, h, w = offsets.shape
    return offsets.reshape(c // 2, 2, h, w).pow(2).sum(1).sqrt()


def offsets_buffer(k: int, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An empty (1, 2K, H, W) offsets tensor and its dx and dy planes (K, H, W), to be filled with
    ``out=`` and in-place ops: offset fields are memory-bound, so every full-size pass counts."""
    out = like.new_empty(1, 2 * k, h, w)
    planes = out.view(k, 2, h, w)
    return out, planes[:, 1], planes[:, 0]


def tap_positions(offset: torch.Tensor, y: int, x: int, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0,
                  dilation: IntPair = 1) -> torch.Tensor:
    """Where :func:`deform_conv2d` reads the input for output pixel (y, x) of image 0: (G, K, 2)
    input pixel coordinates (x, y), one row per row-major tap and offset group.

    Tap (i, j) reads (x * stride - pad + j * dil + dx, y * stride - pad + i * dil + dy), with
    (dy, dx) at offset channels 2 * (g * K + k) and 2 * (g * K + k) + 1: dy first, as torchvision."""
    kh, kw = _pair(kernel, "kernel")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if offset.dim() != 4 or offset.shape[1] % (2 * kh * kw):
        raise ValueError(f"offset must be (N, 2 * G * {kh * kw}, Ho, Wo), got {tuple(offset.shape)}")
    d = offset[0, :, y, x].reshape(-1, kh * kw, 2)  # (G, K, (dy, dx))
    ii = torch.arange(kh, dtype=d.dtype, device=d.device).repeat_interleave(kw)
    jj = torch.arange(kw, dtype=d.dtype, device=d.device).repeat(kh)
    px = x * sw - pw + jj * dw + d[..., 1]
    py = y * sh - ph + ii * dh + d[..., 0]
    return torch.stack([px, py], -1)
