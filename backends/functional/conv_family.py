"""The convolution family on (N, C, H, W) maps: standard, depthwise (with a channel multiplier),
pointwise (1x1), group convolution with ShuffleNet's channel shuffle (Zhang et al., 2018), and
the depthwise separable convolution of MobileNet (Howard et al., 2017): depthwise, then pointwise.

Every k x k layer here pads 'same' (k odd, zeros, stride 1), so outputs keep the input's size.
Weights are in ``F.conv2d``'s layout (C_out, C_in / groups, k, k). Each grouped layer also has a
dense twin (:func:`dense_weight`, :func:`compose_pointwise`): the (C_out, C_in, k, k) kernel a
standard convolution would need to compute the same map, whose non-zero (output, input) pairs
are the layer's connectivity.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _check(input: torch.Tensor, weight: torch.Tensor, groups: int, what: str) -> None:
    if weight.dim() != 4 or weight.shape[-1] % 2 != 1 or weight.shape[-2] != weight.shape[-1]:
        raise ValueError(f"{what}: weight must be (C_out, C_in / groups, k, k) with k odd, got {tuple(weight.shape)}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"{what}: {groups} groups do not divide the {weight.shape[0]} output channels of weight "
                         f"{tuple(weight.shape)}")
    if input.dim() != 4 or input.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"{what}: input must be (N, {weight.shape[1] * groups}, H, W) for weight "
                         f"{tuple(weight.shape)} and {groups} groups, got {tuple(input.shape)}")


def group_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 groups: int = 1) -> torch.Tensor:
    """A k x k convolution whose channels are split into ``groups``: output group j reads input
    group j only. ``groups=1`` is the standard convolution.

    Args:
        input: (N, C_in, H, W).
        weight: (C_out, C_in / groups, k, k), k odd; padding k // 2 (zeros), stride 1.
        bias: (C_out,) or None.
    Returns:
        (N, C_out, H, W), the same as ``F.conv2d(input, weight, bias, padding=k // 2, groups=groups)``.
    """
    _check(input, weight, groups, "group_conv2d")
    return F.conv2d(input, weight, bias, padding=weight.shape[-1] // 2, groups=groups)


def depthwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each input channel convolved with its own ``m`` kernels (the channel multiplier).

    Args:
        input: (N, C, H, W).
        weight: (C * m, 1, k, k): output channel c * m + j is input channel c through kernel j.
    Returns:
        (N, C * m, H, W): ``F.conv2d`` with ``groups=C``.
    """
    c = input.shape[1] if input.dim() == 4 else -1
    if weight.dim() != 4 or weight.shape[1] != 1 or c < 1 or weight.shape[0] % c:
        raise ValueError(f"depthwise_conv2d: weight must be (C * m, 1, k, k) for input (N, C, H, W), got weight "
                         f"{tuple(weight.shape)} and input {tuple(input.shape)}")
    return group_conv2d(input, weight, bias, groups=c)


def pointwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     groups: int = 1) -> torch.Tensor:
    """A 1 x 1 convolution: each output pixel a weighted sum of the input's channels at that pixel.

    Args:
        input: (N, C_in, H, W).
        weight: (C_out, C_in / groups, 1, 1) or (C_out, C_in / groups).
    Returns:
        (N, C_out, H, W).
    """
    if weight.dim() == 2:
        weight = weight[:, :, None, None]
    if weight.dim() != 4 or weight.shape[-2:] != (1, 1):
        raise ValueError(f"pointwise_conv2d: weight must be (C_out, C_in / groups, 1, 1), got {tuple(weight.shape)}")
    return group_conv2d(input, weight, bias, groups)


def depthwise_separable_conv2d(input: torch.Tensor, depthwise_weight: torch.Tensor, pointwise_weight: torch.Tensor,
                               depthwise_bias: Optional[torch.Tensor] = None,
                               pointwise_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise (C -> C * m, k x k), then pointwise (C * m -> C_out, 1 x 1).

    Args:
        input: (N, C, H, W).
        depthwise_weight: (C * m, 1, k, k).
        pointwise_weight: (C_out, C * m, 1, 1) or (C_out, C * m).
    Returns:
        (N, C_out, H, W).
    """
    mid = depthwise_conv2d(input, depthwise_weight, depthwise_bias)
    if pointwise_weight.shape[1] != mid.shape[1]:
        raise ValueError(f"depthwise_separable_conv2d: the pointwise weight {tuple(pointwise_weight.shape)} must read "
                         f"the depthwise output's {mid.shape[1]} channels (depthwise weight {tuple(depthwise_weight.shape)})")
    return pointwise_conv2d(mid, pointwise_weight, pointwise_bias)


def shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """(C,) long: output channel j of :func:`channel_shuffle` is input channel ``perm[j]`` =
    (j mod g) * (C / g) + j // g, so consecutive outputs come from consecutive groups."""
    if groups < 1 or channels % groups:
        raise ValueError(f"channel shuffle: {groups} groups do not divide {channels} channels")
    j = torch.arange(channels)
    return (j % groups) * (channels // groups) + j // groups


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (N, C, H, W) viewed as (N, g, C / g, H, W), the two channel
    axes swapped, flattened back. ``channel_shuffle(channel_shuffle(x, g), C // g)`` is ``x``."""
    if x.dim() != 4 or groups < 1 or x.shape[1] % groups:
        raise ValueError(f"channel_shuffle: {groups} groups must divide the channels of x (N, C, H, W), "
                         f"got {tuple(x.shape)}")
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def dense_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The grouped weight (C_out, C_in / g, k, k) as the block-diagonal (C_out, C_in, k, k) a
    standard convolution needs for the same map: zeros between groups."""
    c_out, per, kh, kw = weight.shape
    if groups < 1 or c_out % groups:
        raise ValueError(f"dense_weight: {groups} groups do not divide weight {tuple(weight.shape)}")
    out = weight.new_zeros(c_out, per * groups, kh, kw)
    step = c_out // groups
    for g in range(groups):
        out[g * step: (g + 1) * step, g * per: (g + 1) * per] = weight[g * step: (g + 1) * step]
    return out


def compose_pointwise(pointwise: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """The dense kernel of a k x k layer ``dense`` (C_mid, C_in, k, k) followed by a 1 x 1 layer
    ``pointwise`` (C_out, C_mid[, 1, 1]): (C_out, C_in, k, k). Both are linear and the 1 x 1 layer
    mixes channels only, so their composition is one k x k convolution."""
    p = pointwise.reshape(pointwise.shape[0], -1)
    if p.shape[1] != dense.shape[0]:
        raise ValueError(f"compose_pointwise: pointwise {tuple(pointwise.shape)} must read the {dense.shape[0]} "
                         f"channels of dense {tuple(dense.shape)}")
    return torch.einsum("om,mikl->oikl", p, dense)


def connectivity(dense: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in) bool: whether any tap of input channel i reaches output channel o."""
    return dense.reshape(dense.shape[0], dense.shape[1], -1).ne(0).any(-1)


def group_of_input(channels: int, groups: int) -> torch.Tensor:
    """(C,) long: the group each of ``channels`` belongs to (contiguous blocks of C / g)."""
    if groups < 1 or channels % groups:
        raise ValueError(f"{groups} groups do not divide {channels} channels")
    return torch.arange(channels) // (channels // groups)


def conv2d_parameter_count(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1,
                           bias: bool = False) -> int:
    """Weights (and biases) of a grouped k x k convolution: C_out * (C_in / g) * k² (+ C_out)."""
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{groups} groups must divide {in_channels} input and {out_channels} output channels")
    return out_channels * (in_channels // groups) * kernel_size * kernel_size + (out_channels if bias else 0)


def conv2d_multiply_adds(in_channels: int, out_channels: int, kernel_size: int, out_height: int, out_width: int,
                         groups: int = 1) -> int:
    """Multiply-adds of a grouped k x k convolution: every output value reads C_in / g channels
    through k² taps, so C_out * (C_in / g) * k² * H_out * W_out (taps that fall on the zero
    padding counted, as libraries count them)."""
    return conv2d_parameter_count(in_channels, out_channels, kernel_size, groups) * out_height * out_width


def _init(weight: torch.Tensor) -> None:
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


class GroupConv2d(nn.Module):
    """A grouped k x k convolution ('same' padding), followed by a channel shuffle when asked
    (ShuffleNet's GConv + shuffle); ``groups=1`` and no shuffle is a standard convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1,
                 shuffle: bool = False, bias: bool = False) -> None:
        super().__init__()
        conv2d_parameter_count(in_channels, out_channels, kernel_size, groups)  # checks divisibility
        self.groups, self.shuffle = groups, shuffle
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        _init(self.weight)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = group_conv2d(input, self.weight, self.bias, self.groups)
        return channel_shuffle(out, self.groups) if self.shuffle else out


class DepthwiseConv2d(GroupConv2d):
    """:func:`depthwise_conv2d`: C -> C * multiplier channels, one k x k kernel per output."""

    def __init__(self, channels: int, kernel_size: int, multiplier: int = 1, bias: bool = False) -> None:
        super().__init__(channels, channels * multiplier, kernel_size, groups=channels, bias=bias)


class PointwiseConv2d(GroupConv2d):
    """:func:`pointwise_conv2d`: a 1 x 1 convolution, optionally grouped."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 1, groups=groups, bias=bias)


class DepthwiseSeparableConv2d(nn.Module):
    """:func:`depthwise_separable_conv2d`: a depthwise layer, then a pointwise one."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, multiplier: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        self.depthwise = DepthwiseConv2d(in_channels, kernel_size, multiplier, bias)
        self.pointwise = PointwiseConv2d(in_channels * multiplier, out_channels, bias=bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        d, p = self.depthwise, self.pointwise
        return depthwise_separable_conv2d(input, d.weight, p.weight, d.bias, p.bias)


class ChannelShuffle(nn.Module):
    """:func:`channel_shuffle` as a layer."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)
