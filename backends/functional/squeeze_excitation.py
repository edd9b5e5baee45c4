"""Squeeze-and-excitation (Hu et al., 2018): channel attention on (N, C, H, W) maps.

Squeeze: the global average pool z = mean over (H, W), (N, C). Excitation: s = sigmoid(fc2(
relu(fc1(z)))) with fc1 (C -> C/r) and fc2 (C/r -> C), weights in ``nn.Linear``'s layout (the
1x1 convolutions of torchvision's ``SqueezeExcitation`` with their kernel dims dropped).
Scale: each channel times its weight, y = x * s[:, :, None, None].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def se_hidden_size(channels: int, reduction: int) -> int:
    """C // r, at least 1: the paper's bottleneck width."""
    return max(1, channels // reduction)


def se_parameter_count(channels: int, reduction: int) -> int:
    """Weights and biases of the excitation MLP: C*h + h + h*C + C = 2*C*C/r + C/r + C."""
    h = se_hidden_size(channels, reduction)
    return 2 * channels * h + h + channels


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): each channel's mean."""
    if x.ndim != 4:
        raise ValueError(f"squeeze expects x (N, C, H, W), got {tuple(x.shape)}")
    return x.mean((2, 3))


def excitation(z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Channel weights (N, C) in (0, 1) from the squeeze z (N, C): sigmoid(fc2(relu(fc1(z))))
    with fc1 = (w1 (h, C), b1 (h,)) and fc2 = (w2 (C, h), b2 (C,))."""
    if z.ndim != 2 or w1.shape[1] != z.shape[1] or w2.shape != (z.shape[1], w1.shape[0]):
        raise ValueError(f"expected z (N, C) with fc1 (h, C) and fc2 (C, h); got z {tuple(z.shape)}, "
                         f"fc1 {tuple(w1.shape)}, fc2 {tuple(w2.shape)}")
    return torch.sigmoid(F.linear(F.relu(F.linear(z, w1, b1)), w2, b2))


def squeeze_excitation(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                       b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SE block on x (N, C, H, W): the recalibrated maps (N, C, H, W) and the channel
    weights (N, C). Same arithmetic as torchvision.ops.SqueezeExcitation (ReLU, sigmoid)."""
    if x.ndim != 4 or w1.shape[1] != x.shape[1] or w2.shape[0] != x.shape[1]:
        raise ValueError(f"expected x (N, C, H, W) with fc1 (h, C) and fc2 (C, h); got x {tuple(x.shape)}, "
                         f"fc1 {tuple(w1.shape)}, fc2 {tuple(w2.shape)}")
    s = excitation(squeeze(x), w1, b1, w2, b2)
    return x * s[:, :, None, None], s


def se_init(channels: int, reduction: int, seed: int, gain: float = 1.0,
            device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w1, b1, w2, b2) drawn as ``nn.Linear`` draws them, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    times ``gain``, from a generator seeded with ``seed`` (so the global RNG is untouched)."""
    h = se_hidden_size(channels, reduction)
    gen = torch.Generator().manual_seed(int(seed))

    def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        bound = gain / fan_in**0.5
        return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).to(device)

    return (uniform((h, channels), channels), uniform((h,), channels),
            uniform((channels, h), h), uniform((channels,), h))


class SEBlock(nn.Module):
    """:func:`squeeze_excitation` with fc1 and fc2 as ``nn.Linear`` layers. ``forward(x)``
    returns the recalibrated maps, as torchvision's block does; :meth:`weights` the (N, C)
    channel weights."""

    def __init__(self, channels: int, reduction: int = 16, device=None, dtype=None) -> None:
        super().__init__()
        h = se_hidden_size(channels, reduction)
        self.fc1 = nn.Linear(channels, h, device=device, dtype=dtype)
        self.fc2 = nn.Linear(h, channels, device=device, dtype=dtype)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return excitation(squeeze(x), self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return squeeze_excitation(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)[0]
