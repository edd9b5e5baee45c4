"""Dilated (atrous) convolution with 'same' padding of any mode, and the receptive field of a
stack of dilated layers: analytic (:func:`stack_support`) and measured by autograd
(:func:`effective_receptive_field`).

Tensors are NCHW. Queries and offsets are (x, y) pixels, x right, y down.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def same_padding(kernel_size: int, dilation: int) -> int:
    """Padding that keeps the output the input's size at stride 1."""
    return dilation * (kernel_size - 1) // 2


def dilated_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: int = 1,
                   dilation: int = 1, padding_mode: str = "zeros", groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` with 'same' padding of any mode, so the output centre stays on the input's.

    Args:
        input: (N, C_in, H, W).
        weight: (C_out, C_in / groups, k, k), k odd.
        bias: (C_out,) or None.
        padding_mode: one of ``PADDING_MODES``; reflect needs more than the padding on each side.
    Returns:
        (N, C_out, ceil(H / stride), ceil(W / stride)).
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    k = weight.shape[-1]
    if weight.dim() != 4 or k % 2 != 1 or weight.shape[-2] != k:
        raise ValueError(f"weight must be (C_out, C_in / groups, k, k) with k odd, got {tuple(weight.shape)}")
    if input.dim() != 4 or input.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"input must be (N, {weight.shape[1] * groups}, H, W) for this weight and {groups} groups, "
                         f"got {tuple(input.shape)}")
    pad = same_padding(k, dilation)
    if padding_mode == "zeros":
        return F.conv2d(input, weight, bias, stride=stride, padding=pad, dilation=dilation, groups=groups)
    if padding_mode == "reflect" and pad >= min(input.shape[-2:]):
        raise ValueError(
            f"reflect padding of {pad} px needs an image larger than {pad} px on each side "
            f"(got {input.shape[-1]}x{input.shape[-2]}); lower the dilation or kernel size"
        )
    if padding_mode == "circular" and pad > min(input.shape[-2:]):
        raise ValueError(
            f"circular padding of {pad} px would wrap around an image of {input.shape[-1]}x{input.shape[-2]} px "
            f"more than once; lower the dilation or kernel size"
        )
    padded = F.pad(input, (pad, pad, pad, pad), mode=padding_mode)
    return F.conv2d(padded, weight, bias, stride=stride, padding=0, dilation=dilation, groups=groups)


class DilatedConv2d(nn.Module):
    """Module twin of :func:`dilated_conv2d`: a k x k convolution, taps ``dilation`` apart,
    'same' padding of ``padding_mode``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 padding_mode: str = "zeros", groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.stride, self.dilation, self.padding_mode, self.groups = stride, dilation, padding_mode, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dilated_conv2d(input, self.weight, self.bias, self.stride, self.dilation, self.padding_mode, self.groups)


def stack_support(kernel_size: int, rates: Sequence[int]) -> np.ndarray:
    """Analytic support of a stack of dilated k x k layers: a (S, S) bool mask of the input
    offsets that can reach the centre output, S = 1 + sum(rate * (k - 1)), row = y, column = x."""
    c = kernel_size // 2
    offsets = {0}
    for r in rates:
        offsets = {o + r * j for o in offsets for j in range(-c, c + 1)}
    half = sum(r * c for r in rates)
    line = np.zeros(2 * half + 1, bool)
    for o in offsets:
        line[o + half] = True
    return line[:, None] & line[None, :]


def effective_receptive_field(image: torch.Tensor, kernel: torch.Tensor, rates: Sequence[int], padding_mode: str,
                              query: tuple[int, int]) -> torch.Tensor:
    """|d out[query] / d input| through a stack of single-channel dilated layers, by autograd.

    Args:
        image: (1, 1, H, W).
        kernel: (1, 1, k, k), the same at every layer.
        rates: the dilation of each layer, first layer first.
        query: (x, y) of the output pixel.
    Returns:
        (H, W). The stack is linear, so only the window of its receptive field matters: autograd
        runs on that crop, exact wherever the crop needs no padding other than the image's own
        zeros (zeros mode, or a window clear of the border); otherwise on the whole image.
    """
    if image.dim() != 4 or tuple(image.shape[:2]) != (1, 1) or kernel.dim() != 4 or tuple(kernel.shape[:2]) != (1, 1):
        raise ValueError(f"image must be (1, 1, H, W) and kernel (1, 1, k, k), got {tuple(image.shape)} and {tuple(kernel.shape)}")
    _, _, h, w = image.shape
    qx, qy = query
    half = sum(int(r) * (kernel.shape[-1] // 2) for r in rates)
    x0, y0 = max(0, qx - half), max(0, qy - half)
    x1, y1 = min(w, qx + half + 1), min(h, qy + half + 1)
    inside = x0 == qx - half and y0 == qy - half and x1 == qx + half + 1 and y1 == qy + half + 1
    if padding_mode != "zeros" and not inside:
        x0, y0, x1, y1 = 0, 0, w, h
    with torch.enable_grad():  # callers may run under no_grad; this needs autograd
        crop = image[..., y0:y1, x0:x1].detach().clone().requires_grad_(True)
        y = crop
        for r in rates:
            y = dilated_conv2d(y, kernel, dilation=int(r), padding_mode=padding_mode)
        y[0, 0, qy - y0, qx - x0].backward()
    erf = torch.zeros((h, w), dtype=image.dtype, device=image.device)
    erf[y0:y1, x0:x1] = crop.grad[0, 0].abs()
    return erf
