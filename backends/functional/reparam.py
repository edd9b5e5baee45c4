"""Structural reparameterization: a multi-branch block that trains as several convolutions (each
with its batch norm, plus an identity) runs at inference as one 3 x 3 convolution with a bias.

A block is a tuple of :class:`Branch`: a convolution (or the identity), an optional eval-mode
batch norm after it, and an optional per-channel factor. Every branch keeps the output the
input's size (zero 'same' padding, stride 1), so their sum is linear in the input and folds into
one kernel: batch norm scales each output channel by gamma / sqrt(var + eps) and shifts it by
beta - mean * that scale; 1 x 1, 1 x 3 and 3 x 1 kernels are zero-padded to 3 x 3 about their
centre; the identity is a 3 x 3 kernel with a single 1 at the centre of each channel's own tap.

Blocks: RepVGG (Ding et al. 2021: 3x3+BN, 1x1+BN, identity BN), ACNet (Ding et al. 2019: 3x3,
1x3 and 3x1, each with BN), DiracNet (Zagoruyko & Komodakis 2017: alpha * x + beta * (W * x)).
Tensors are NCHW; weights (C_out, C_in / groups, kh, kw) as ``F.conv2d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = ("repvgg", "acnet", "diracnet")
BN_EPS = 1e-5
BRANCH_SHAPES = {"repvgg": ((3, 3), (1, 1), None), "acnet": ((3, 3), (1, 3), (3, 1)), "diracnet": ((3, 3), None)}


@dataclass(frozen=True)
class BatchNorm:
    """Eval-mode batch norm of C channels: (x - mean) / sqrt(var + eps) * weight + bias, each (C,)."""

    mean: torch.Tensor
    var: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float = BN_EPS

    def scale(self) -> torch.Tensor:
        """(C,) the factor each channel is multiplied by: weight / sqrt(var + eps)."""
        return self.weight / torch.sqrt(self.var + self.eps)

    def shift(self) -> torch.Tensor:
        """(C,) what is added after the factor: bias - mean * scale."""
        return self.bias - self.mean * self.scale()


@dataclass(frozen=True)
class Branch:
    """One branch: ``weight`` (C_out, C_in / groups, kh, kw) with kh, kw odd, or None for the
    identity; then ``bn`` (eval mode) when given; then ``scale`` (C_out,) when given."""

    weight: Optional[torch.Tensor]
    bn: Optional[BatchNorm] = None
    scale: Optional[torch.Tensor] = None


def identity_kernel(channels: int, groups: int = 1, size: int = 3, dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """(C, C / groups, size, size): the convolution that returns its input. Output channel i
    reads input channel i, which is entry i mod (C / groups) of its group."""
    if channels % groups:
        raise ValueError(f"channels {channels} are not divisible by groups {groups}")
    per = channels // groups
    out = torch.zeros(channels, per, size, size, dtype=dtype, device=device)
    out[torch.arange(channels), torch.arange(channels) % per, size // 2, size // 2] = 1.0
    return out


def pad_kernel(weight: torch.Tensor, size: int = 3) -> torch.Tensor:
    """(C_out, C_in / g, kh, kw) zero-padded about its centre to (..., size, size), kh, kw odd."""
    kh, kw = weight.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0 or kh > size or kw > size:
        raise ValueError(f"kernel {kh}x{kw} must be odd and at most {size}x{size}, got weight {tuple(weight.shape)}")
    ph, pw = (size - kh) // 2, (size - kw) // 2
    return F.pad(weight, (pw, pw, ph, ph))


def branch_forward(x: torch.Tensor, branch: Branch, groups: int = 1) -> torch.Tensor:
    """One branch on (N, C, H, W): the convolution ('same' zero padding), batch norm, scale."""
    if branch.weight is None:
        y = x
    else:
        w = branch.weight
        if w.dim() != 4 or x.dim() != 4 or x.shape[1] != w.shape[1] * groups:
            raise ValueError(f"input must be (N, {w.shape[1] * groups}, H, W) for weight {tuple(w.shape)} and "
                             f"{groups} groups, got {tuple(x.shape)}")
        y = F.conv2d(x, w, padding=(w.shape[-2] // 2, w.shape[-1] // 2), groups=groups)
    if branch.bn is not None:
        bn = branch.bn
        y = F.batch_norm(y, bn.mean, bn.var, bn.weight, bn.bias, training=False, eps=bn.eps)
    if branch.scale is not None:
        y = y * branch.scale.view(1, -1, 1, 1)
    return y


def branched_forward(x: torch.Tensor, branches: Sequence[Branch], groups: int = 1) -> torch.Tensor:
    """The training-time block: the sum of its branches (N, C_out, H, W)."""
    out = None
    for b in branches:
        y = branch_forward(x, b, groups)
        out = y if out is None else out + y
    return out


def branch_kernel(branch: Branch, channels: int, groups: int = 1, size: int = 3,
                  like: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The branch as one (C, C / groups, size, size) kernel and a (C,) bias: batch norm and scale
    folded in, the kernel padded to ``size``. ``like`` gives dtype and device to the identity."""
    ref = branch.weight if branch.weight is not None else like
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, None)
    if branch.weight is None:
        kernel = identity_kernel(channels, groups, size, dtype, device)
    else:
        kernel = pad_kernel(branch.weight, size)
    bias = kernel.new_zeros(kernel.shape[0])
    if branch.bn is not None:
        kernel = kernel * branch.bn.scale().view(-1, 1, 1, 1)
        bias = branch.bn.shift()
    if branch.scale is not None:
        kernel = kernel * branch.scale.view(-1, 1, 1, 1)
        bias = bias * branch.scale
    return kernel, bias


def fuse(branches: Sequence[Branch], channels: int, groups: int = 1, size: int = 3,
         like: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The block as one convolution: (C, C / groups, size, size) weight and (C,) bias whose
    ``F.conv2d(x, weight, bias, padding=size // 2, groups=groups)`` equals :func:`branched_forward`.
    The identity takes dtype and device from ``like``, else from the first branch with a weight."""
    if like is None:
        like = next((b.weight for b in branches if b.weight is not None), None)
    parts = [branch_kernel(b, channels, groups, size, like) for b in branches]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def fused_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The inference-time block: one convolution with 'same' zero padding."""
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=groups)


def random_batch_norm(channels: int, generator: torch.Generator, mean_scale: float, var_scale: float,
                      dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> BatchNorm:
    """Statistics as training might leave them: running mean ``mean_scale`` * N(0, 1), running
    variance exp(``var_scale`` * N(0, 1)) (log-normal about 1), gamma 1 + 0.25 N(0, 1), beta 0.1 N(0, 1)."""
    z = torch.randn(4, channels, generator=generator, dtype=torch.float64)
    mean, var, weight, bias = (t.to(device, dtype) for t in (mean_scale * z[0], torch.exp(var_scale * z[1]),
                                                            1.0 + 0.25 * z[2], 0.1 * z[3]))
    return BatchNorm(mean, var, weight, bias)


def random_block(block: str, channels: int, groups: int = 1, seed: int = 0, mean_scale: float = 0.2,
                 var_scale: float = 0.5, dirac_alpha: float = 1.0, dtype: torch.dtype = torch.float32,
                 device: Optional[torch.device] = None) -> tuple[Branch, ...]:
    """A block of ``block`` (one of BLOCKS) with seeded weights (N(0, 1) / sqrt(fan in)) and batch
    norm statistics (:func:`random_batch_norm`); DiracNet's identity weighs ``dirac_alpha``, its
    convolution 1 over the weight's norm per output channel (DiracNet's normalized W). The draws
    are made on the CPU in float64, so a seed gives the same block in any dtype and on any device."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; one of {', '.join(BLOCKS)}")
    if channels % groups:
        raise ValueError(f"channels {channels} are not divisible by groups {groups}")
    g = torch.Generator().manual_seed(int(seed))
    per = channels // groups
    branches = []
    for shape in BRANCH_SHAPES[block]:
        weight = None
        if shape is not None:
            weight = torch.randn(channels, per, *shape, generator=g, dtype=torch.float64) / (per * shape[0] * shape[1]) ** 0.5
        if block == "diracnet":
            scale = (torch.full((channels,), float(dirac_alpha), dtype=torch.float64) if weight is None
                     else 1.0 / weight.flatten(1).norm(dim=1).clamp_min(1e-12))
            branches.append(Branch(_to(weight, device, dtype), None, scale.to(device, dtype)))
        else:
            bn = random_batch_norm(channels, g, mean_scale, var_scale, dtype, device)
            branches.append(Branch(_to(weight, device, dtype), bn))
    return tuple(branches)


def _to(t: Optional[torch.Tensor], device: Optional[torch.device], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(device, dtype)


# -- module twins --------------------------------------------------------------------------------
class _Reparameterizable(nn.Module):
    """A block whose branches are modules. In training mode ``forward`` runs the modules (batch
    norm on batch statistics); in eval mode the functional branches, which ``fuse`` folds into one
    convolution."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels {channels} are not divisible by groups {groups}")
        self.channels, self.groups = channels, groups

    def branches(self) -> tuple[Branch, ...]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return branched_forward(x, self.branches(), self.groups)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One ``nn.Conv2d`` (3 x 3, padding 1, with bias) equal to this block in eval mode."""
        weight, bias = fuse(self.branches(), self.channels, self.groups, like=next(self.parameters()))
        conv = nn.Conv2d(self.channels, self.channels, 3, padding=1, groups=self.groups, bias=True)
        conv = conv.to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv


class _BatchNormBranches(_Reparameterizable):
    """Branches of a convolution (or none: the identity) followed by its own batch norm."""

    def __init__(self, channels: int, groups: int, shapes: Sequence[Optional[tuple[int, int]]]) -> None:
        super().__init__(channels, groups)
        self.paths = nn.ModuleList()
        for shape in shapes:
            conv = [] if shape is None else [nn.Conv2d(channels, channels, shape, padding=(shape[0] // 2, shape[1] // 2),
                                                       groups=groups, bias=False)]
            self.paths.append(nn.Sequential(*conv, nn.BatchNorm2d(channels)))

    def branches(self) -> tuple[Branch, ...]:
        out = []
        for path in self.paths:
            bn = path[-1]
            out.append(Branch(path[0].weight if len(path) == 2 else None,
                              BatchNorm(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)))
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # batch statistics, updating the running ones
            return sum(path(x) for path in self.paths)
        return super().forward(x)


class RepVGGBlock(_BatchNormBranches):
    """RepVGG's block (C -> C, stride 1): 3x3 conv + BN, 1x1 conv + BN, and BN of the identity."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__(channels, groups, BRANCH_SHAPES["repvgg"])


class ACBlock(_BatchNormBranches):
    """ACNet's asymmetric convolution block: 3x3, 1x3 and 3x1 convolutions, each with its BN."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__(channels, groups, BRANCH_SHAPES["acnet"])


class DiracConv2d(_Reparameterizable):
    """DiracNet's convolution: alpha * x + beta * (W / |W|) * x, per output channel alpha and beta."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__(channels, groups)
        self.weight = nn.Parameter(torch.empty(channels, channels // groups, 3, 3))
        nn.init.kaiming_normal_(self.weight)
        self.alpha = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.full((channels,), 0.1))

    def branches(self) -> tuple[Branch, ...]:
        norm = self.weight.flatten(1).norm(dim=1).clamp_min(1e-12)
        return (Branch(self.weight, None, self.beta / norm), Branch(None, None, self.alpha))
