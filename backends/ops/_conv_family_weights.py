"""The convolution family's weights and forward passes: six variants on the same named input
channels, each also as the dense (C_out, C_in, k, k) kernel a standard convolution would need.

Weights are deterministic: the depthwise kernels are named filters (blur, d/dx, d/dy,
Laplacian); the standard, group and pointwise weights are drawn from a generator seeded with
``seed``; the group convolution uses the standard convolution's weights inside its groups (so
it is the standard convolution with the weights between groups set to zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backends.functional.conv_family import (
    channel_shuffle,
    compose_pointwise,
    conv2d_parameter_count,
    dense_weight,
    depthwise_conv2d,
    depthwise_separable_conv2d,
    group_conv2d,
    pointwise_conv2d,
    shuffle_permutation,
)
from backends.functional.kernels import make_kernel

VARIANTS = ("standard", "depthwise", "pointwise", "group", "separable", "group pair")
TITLES = {
    "standard": "standard k x k",
    "depthwise": "depthwise",
    "pointwise": "pointwise 1 x 1",
    "group": "group conv",
    "separable": "depthwise separable",
    "group pair": "two group layers",
}
# The depthwise kernels, in the order the channel multiplier takes them: (bank name, tile name).
DEPTHWISE_KERNELS = (("gaussian", "blur"), ("sobel_x", "d/dx"), ("sobel_y", "d/dy"), ("laplacian", "lap"))


@dataclass(frozen=True)
class FamilyWeights:
    """Every variant's weights for C_in inputs, C_out outputs, k x k kernels, multiplier m, g groups."""

    standard: torch.Tensor  # (C_out, C_in, k, k)
    depthwise: torch.Tensor  # (C_in m, 1, k, k)
    pointwise: torch.Tensor  # (C_out, C_in, 1, 1)
    group: torch.Tensor  # (C_out, C_in / g, k, k): the standard weights inside each group
    separable_pointwise: torch.Tensor  # (C_out, C_in m, 1, 1)
    pair_pointwise: torch.Tensor  # (C_out, C_out / g, 1, 1): the second layer of the group pair
    groups: int
    shuffle: bool

    @property
    def in_channels(self) -> int:
        return int(self.standard.shape[1])

    @property
    def multiplier(self) -> int:
        return int(self.depthwise.shape[0]) // self.in_channels


def family_weights(in_channels: int, out_channels: int, kernel_size: int, multiplier: int, groups: int,
                   shuffle: bool, seed: int, device=None, dtype: torch.dtype = torch.float32) -> FamilyWeights:
    """The weights every variant uses (see the module's docstring); the same arguments give the same weights."""
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{groups} groups must divide {in_channels} input and {out_channels} output channels")
    if not 1 <= multiplier <= len(DEPTHWISE_KERNELS):
        raise ValueError(f"the channel multiplier must be 1 to {len(DEPTHWISE_KERNELS)}, got {multiplier}")
    gen = torch.Generator().manual_seed(int(seed))
    k = kernel_size

    def normal(*shape: int) -> torch.Tensor:
        fan_in = shape[1] * shape[2] * shape[3]
        return torch.randn(shape, generator=gen, dtype=torch.float64) / fan_in**0.5

    standard = normal(out_channels, in_channels, k, k)
    pointwise = normal(out_channels, in_channels, 1, 1)
    separable_pointwise = normal(out_channels, in_channels * multiplier, 1, 1)
    pair_pointwise = normal(out_channels, out_channels // groups, 1, 1)
    kernels = torch.stack([torch.from_numpy(make_kernel(name, k)).double() for name, _ in DEPTHWISE_KERNELS[:multiplier]])
    depthwise = kernels.repeat(in_channels, 1, 1)[:, None]
    per_in, per_out = in_channels // groups, out_channels // groups
    group = torch.cat([standard[j * per_out: (j + 1) * per_out, j * per_in: (j + 1) * per_in] for j in range(groups)])

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype).contiguous()

    return FamilyWeights(cast(standard), cast(depthwise), cast(pointwise), cast(group), cast(separable_pointwise),
                         cast(pair_pointwise), groups, shuffle)


def forward(variant: str, x: torch.Tensor, w: FamilyWeights) -> torch.Tensor:
    """The variant's output (N, C, H, W) for the input x (N, C_in, H, W), through the family's cores."""
    if variant == "standard":
        return group_conv2d(x, w.standard)
    if variant == "depthwise":
        return depthwise_conv2d(x, w.depthwise)
    if variant == "pointwise":
        return pointwise_conv2d(x, w.pointwise)
    if variant == "separable":
        return depthwise_separable_conv2d(x, w.depthwise, w.separable_pointwise)
    out = group_conv2d(x, w.group, groups=w.groups)
    if w.shuffle:
        out = channel_shuffle(out, w.groups)
    if variant == "group":
        return out
    if variant == "group pair":
        return pointwise_conv2d(out, w.pair_pointwise, groups=w.groups)
    raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")


def dense(variant: str, w: FamilyWeights) -> torch.Tensor:
    """The variant as one standard convolution: its (C_out, C_in, k, k) kernel (k = 1 for pointwise)."""
    if variant == "standard":
        return w.standard
    if variant == "pointwise":
        return w.pointwise
    depthwise = dense_weight(w.depthwise, w.in_channels)
    if variant == "depthwise":
        return depthwise
    if variant == "separable":
        return compose_pointwise(w.separable_pointwise, depthwise)
    group = dense_weight(w.group, w.groups)
    if w.shuffle:
        group = group[shuffle_permutation(group.shape[0], w.groups).to(group.device)]
    if variant == "group":
        return group
    if variant == "group pair":
        return compose_pointwise(dense_weight(w.pair_pointwise, w.groups), group)
    raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")


def input_groups(variant: str, w: FamilyWeights) -> int:
    """How many groups the variant's first layer splits its inputs into."""
    return {"standard": 1, "pointwise": 1, "depthwise": w.in_channels, "separable": w.in_channels}.get(variant, w.groups)


def parameter_count(variant: str, c_in: int, c_out: int, k: int, m: int, g: int) -> int:
    """Weights of the variant (no biases), from the grouped convolution's formula per layer."""
    counts = {
        "standard": conv2d_parameter_count(c_in, c_out, k),
        "depthwise": conv2d_parameter_count(c_in, c_in * m, k, c_in),
        "pointwise": conv2d_parameter_count(c_in, c_out, 1),
        "group": conv2d_parameter_count(c_in, c_out, k, g),
        "separable": conv2d_parameter_count(c_in, c_in * m, k, c_in) + conv2d_parameter_count(c_in * m, c_out, 1),
        "group pair": conv2d_parameter_count(c_in, c_out, k, g) + conv2d_parameter_count(c_out, c_out, 1, g),
    }
    return counts[variant]


def output_channels(variant: str, c_in: int, c_out: int, m: int) -> int:
    return c_in * m if variant == "depthwise" else c_out
