"""Offsets and masks of deformable layers, and the points they make a layer read.

Both the project's ``DeformConv2d`` and torchvision's take the offsets (and the v2 mask) as
forward inputs, so a forward pre-hook sees them; layers are recognised by their class name and
the attributes they share (weight, stride, padding, dilation), so torchvision need not be
installed. Offsets follow ``deform_conv2d``'s layout: (dy, dx) per tap, taps row-major.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def is_deformable(module: nn.Module) -> bool:
    """A layer whose forward is (input, offset, mask=None): ours or torchvision's DeformConv2d."""
    return (type(module).__name__ == "DeformConv2d" and isinstance(getattr(module, "weight", None), torch.Tensor)
            and all(hasattr(module, a) for a in ("stride", "padding", "dilation")))


@dataclass(frozen=True)
class DeformSample:
    """What one deformable layer read in one forward."""

    in_hw: tuple[int, int]
    offset: torch.Tensor  # (1, 2 G K, Ho, Wo)
    mask: Optional[torch.Tensor]  # (1, G K, Ho, Wo) or None (v1)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple(self.offset.shape[-2:])

    @property
    def groups(self) -> int:
        return self.offset.shape[1] // (2 * self.kernel[0] * self.kernel[1])


def sample_of(module: nn.Module, args: tuple, kwargs: dict) -> Optional[DeformSample]:
    """The capture from a forward pre-hook's (args, kwargs); None when no offset was passed."""
    names = ("input", "offset", "mask")
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    x, offset = bound.get("input"), bound.get("offset")
    if not isinstance(x, torch.Tensor) or not isinstance(offset, torch.Tensor):
        return None
    mask = bound.get("mask")
    return DeformSample(tuple(x.shape[-2:]), offset.detach(), mask.detach() if isinstance(mask, torch.Tensor) else None,
                        tuple(module.weight.shape[-2:]), _pair(module.stride), _pair(module.padding), _pair(module.dilation))


def sampling_points(sample: DeformSample, y: int, x: int, group: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where output pixel (y, x) reads the layer's input, tap by tap: (regular (K, 2), deformed
    (K, 2), mask (K,)), points as (x, y) in the input's pixel indices. Tap (i, j) reads
    (x * stride - pad + j * dil + dx, y * stride - pad + i * dil + dy)."""
    (kh, kw), taps = sample.kernel, sample.kernel[0] * sample.kernel[1]
    off = sample.offset[0, 2 * taps * group: 2 * taps * (group + 1), y, x].reshape(taps, 2).double()
    i = torch.arange(kh, dtype=torch.float64).repeat_interleave(kw)
    j = torch.arange(kw, dtype=torch.float64).repeat(kh)
    ry = y * sample.stride[0] - sample.padding[0] + i * sample.dilation[0]
    rx = x * sample.stride[1] - sample.padding[1] + j * sample.dilation[1]
    regular = torch.stack([rx, ry], -1)
    deformed = regular + torch.stack([off[:, 1], off[:, 0]], -1)
    mask = (sample.mask[0, taps * group: taps * (group + 1), y, x].double() if sample.mask is not None
            else torch.ones(taps, dtype=torch.float64))
    return regular, deformed, mask


def to_frame(points: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """(x, y) pixel indices on a map of ``from_hw`` that covers the same field as ``to_hw``
    (a feature map of the resized image), as pixel indices there: centres align."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    return torch.stack([(points[:, 0] + 0.5) * sx - 0.5, (points[:, 1] + 0.5) * sy - 0.5], -1)
