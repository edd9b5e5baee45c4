"""Deformable convolution (v1 and v2): every tap of every output pixel reads the input at its
regular position plus a learned (dy, dx) offset, bilinearly; v2 also scales each tap by a
modulation mask. The core matches ``torchvision.ops.deform_conv2d`` in pure torch."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backends.features import robust_max
from backends.kernels import NONNEGATIVE, make_kernel
from backends.layers import (
    INPUT,
    CurveLayer,
    HeatmapLayer,
    ImageLayer,
    MetricsLayer,
    PointSet,
    PointsLayer,
    Result,
    VectorFieldLayer,
)
from backends.memo import Memo
from backends.ops.dilated import luminance
from backends.params import ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.warp import (
    GLOBAL_WARPS,
    analytic_offsets,
    compose_affine,
    edge_offsets,
    frame_centre,
    gaussian_blur,
    offset_magnitude,
    offsets_from_displacement,
    offsets_to_xy,
    structure_tensor,
    swirl_envelope,
    tap_vectors,
    tap_windows,
    theta_from_sampling_map,
    warp_displacement,
    widened_coords,
)

IntPair = Union[int, tuple[int, int]]
OFFSET_SOURCES = ("swirl", "zoom", "rotate", "shear", "random", "edges", "learned")
QUERY_CENTRED = ("swirl", "zoom", "rotate", "shear")  # warps about the clicked pixel
KERNELS = ("gaussian", "box", "identity", "sobel_x", "sobel_y", "laplacian")


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return pair


def deform_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
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


def sampling_grid(
    offset: torch.Tensor, in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
    padding: tuple[int, int], dilation: tuple[int, int],
) -> torch.Tensor:
    """``grid_sample`` coordinates of every tap: (N * G, Ho, Wo * K, 2), K = kh * kw row-major,
    the taps of one output pixel side by side.

    ``offset`` (N, 2 * G * K, Ho, Wo) holds (dy, dx) per tap, torchvision's layout. Tap (i, j) of
    output (y, x) reads input pixel (y * stride - pad + i * dil + dy, x * stride - pad + j * dil + dx);
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
    out = F.grid_sample(input.reshape(n * g, c // g, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(n, c, grid.shape[1], grid.shape[2] // taps, taps)


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Deformable convolution, v1 (no mask) or v2 (mask), as ``torchvision.ops.deform_conv2d``.

    Shapes: input (N, C_in, H, W); weight (C_out, C_in / groups, kh, kw); offset
    (N, 2 * G * kh * kw, Ho, Wo) with (dy, dx) per tap in row-major tap order, G offset groups
    each serving C_in / G consecutive channels; mask (N, G * kh * kw, Ho, Wo); bias (C_out,).
    Returns (N, C_out, Ho, Wo) with Ho = (H + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1.
    Pure torch, so it runs on any device and is differentiable in every tensor argument.
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


def resample_widened(input: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``input`` (N, C, H, W) read bilinearly, zero outside, at every point of the widened grid
    moved by a :func:`warp_displacement` (dx, dy): (N, C, H + 2 reach, W + 2 reach)."""
    n, _, h, w = input.shape
    hp, wp = dx.shape
    x, y = widened_coords(h, w, (hp - h) // 2, input.device)
    grid = input.new_empty(1, hp, wp, 2)
    torch.addcmul((x + 0.5) * (2.0 / w) - 1.0, dx, input.new_tensor(2.0 / w), out=grid[0, ..., 0])
    torch.addcmul((y + 0.5) * (2.0 / h) - 1.0, dy, input.new_tensor(2.0 / h), out=grid[0, ..., 1])
    return F.grid_sample(input, grid.expand(n, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=False)


def depthwise_window_sum(widened: torch.Tensor, kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """sum_t kernel[t] * (tap t's window) of a widened (N, C, H + 2 reach, W + 2 reach) image: a
    depthwise convolution with one (K,) kernel on every channel. Nine shifted multiply-adds ran
    7x faster than a dilated depthwise conv2d on the CPU (0.8 against 5.9 ms at 512 x 512)."""
    k = int(round(kernel.numel() ** 0.5))
    reach = dilation * (k // 2)
    h, w = widened.shape[-2] - 2 * reach, widened.shape[-1] - 2 * reach
    out = None
    for window, weight in zip(tap_windows(widened, k, dilation, h, w), kernel.tolist()):
        out = window * weight if out is None else out.add_(window, alpha=weight)
    return out


def global_warp_taps(input: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, k: int, dilation: int) -> torch.Tensor:
    """:func:`sample_taps` for the offsets a global warp gives every tap
    (:func:`offsets_from_displacement`), (N, C, H, W, K), from one resampled image.

    Tap t of pixel p reads the input at W(p + t), and p + t lies on the widened grid, so all K
    taps are shifted windows of I(W(q)) sampled once: 1/K of the bilinear reads. The v1 output
    is then :func:`depthwise_window_sum` of that image (tests hold both to deform_conv2d)."""
    h, w = input.shape[2:]
    return torch.stack(tap_windows(resample_widened(input, dx, dy), k, dilation, h, w), -1)


def bilateral_mask(taps: torch.Tensor, image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A v2 modulation from content: each tap weighs exp(-|tap colour - pixel colour|^2 / 2 sigma^2).

    taps (N, C, H, W, K) sampled values, image (N, C, H, W) -> mask (N, K, H, W), a view."""
    diff = (taps - image[..., None]).square_().mean(1)
    return diff.mul_(-0.5 / (sigma * sigma)).exp_().permute(0, 3, 1, 2)


def modulated_depthwise(taps: torch.Tensor, kernel: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The weighted sum of sampled taps (N, C, H, W, K) with one (K,) kernel per channel and an
    optional mask (N, K, H, W): deform_conv2d's last step for a depthwise weight. (N, C, H, W)."""
    if mask is None:
        return taps @ kernel
    return (taps * (mask.permute(0, 2, 3, 1) * kernel)[:, None]).sum(-1)


# -- the operator -----------------------------------------------------------------------------------


@dataclass
class LearnedOffsets:
    """What a fit leaves behind: offsets and v2 mask logits on a coarse lattice (corners aligned),
    in fit-resolution pixels, for the settings and image in ``key``."""

    key: tuple
    image: torch.Tensor
    fit_hw: tuple[int, int]
    offsets: torch.Tensor  # (1, 2K, hc, wc), (dy, dx) in fit pixels
    mask_logits: Optional[torch.Tensor]  # (1, K, hc, wc); the mask is 2 * sigmoid, so 1 at the start
    losses: list[float] = field(default_factory=list)

    def offsets_at(self, h: int, w: int, differentiable: bool = False) -> torch.Tensor:
        """(1, 2K, h, w) offsets in pixels of an (h, w) frame."""
        coarse = self.offsets if differentiable else self.offsets.detach()
        up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
        scale = up.new_tensor([h / self.fit_hw[0], w / self.fit_hw[1]]).repeat(up.shape[1] // 2)
        return up * scale.view(1, -1, 1, 1)

    def mask_at(self, h: int, w: int, differentiable: bool = False) -> Optional[torch.Tensor]:
        """(1, K, h, w) v2 modulation, or None for a v1 fit."""
        if self.mask_logits is None:
            return None
        coarse = self.mask_logits if differentiable else self.mask_logits.detach()
        up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
        return 2.0 * torch.sigmoid(up)


@dataclass
class Pieces:
    """One evaluation at a working resolution (h, w): the frame is the input image's."""

    offsets: torch.Tensor  # (1, 2K, h, w)
    mask: Optional[torch.Tensor]  # (1, K, h, w) or None for v1
    deformed: torch.Tensor  # (1, 3, h, w)
    regular: torch.Tensor  # (1, 3, h, w)
    keys: tuple = (None, None)  # memo keys of deformed and regular: their display tensors are kept too


FIT_CELL = 8  # fit pixels per cell of the coarse offset lattice: smooth fields, pooled gradients
FIT_BLUR = 3.0  # starting blur (fit pixels) of the coarse-to-fine schedule
FRAME_INTERVAL_S = 0.1  # live frames of a running fit, at most this often...
FRAME_SHARE = 0.25  # ...and at most this share of the fit's time, however slow a frame is
ARROWS_PER_SIDE = 26
STARS_PER_SIDE = 18


@register
class DeformableConvolution(Operator):
    spec = OperatorSpec(
        name="deformable",
        title="Deformable convolution",
        family="Convolution",
        description=(
            "Each tap of each output pixel reads the input at its regular place plus an offset, bilinearly "
            "(v2 also weighs each tap by a modulation mask). Offsets come from a global warp about the clicked "
            "pixel, from the image's edges, or from a live fit that learns them with Adam."
        ),
        params=(
            ChoiceParam("offsets", "swirl", OFFSET_SOURCES, help="Where offsets come from: a warp (swirl, zoom, rotate about the query; shear), smooth random fields, edge orientation, or the fit."),
            FloatParam("strength", 0.6, -1.0, 1.0, step=0.05, help="Amount of the warp or random field; for edges, how much taps stretch along the edge."),
            SeedParam("seed", 0, help="Seed of the random offsets."),
            ChoiceParam("version", "v1", ("v1", "v2"), help="v2 weighs each tap by a modulation mask: colour similarity to the centre for the analytic offsets, learned by the fit."),
            FloatParam("mask_sigma", 0.15, 0.02, 1.0, step=0.01, help="v2: colour distance at which a tap's weight falls to 0.6."),
            ChoiceParam("kernel", "gaussian", KERNELS, help="The depthwise kernel applied to each RGB channel."),
            ChoiceParam("kernel_size", "3", ("3", "5"), help="Taps per side."),
            IntParam("dilation", 2, 1, 8, help="Spacing of the regular taps, before offsets."),
            ChoiceParam("arrows", "auto", ("auto", "mean offset", "centre tap", "tap pattern"), help="Offset field view: mean or centre-tap offset per pixel, or arrows from each pixel to its taps; auto picks tap pattern for edges."),
            FloatParam("arrow_scale", 1.0, 0.1, 5.0, step=0.1, help="Arrow length factor; 1 shortens arrows only when they would overlap."),
            FloatParam("fit_rotate", 15.0, -45.0, 45.0, step=1.0, help="Fit target: the image turned by this many degrees about its centre..."),
            FloatParam("fit_scale", 1.15, 0.5, 2.0, step=0.01, help="...scaled by this factor..."),
            FloatParam("fit_shear", 0.0, -0.5, 0.5, step=0.01, help="...and sheared by this amount, then convolved with the kernel."),
            IntParam("fit_steps", 200, 10, 2000, step=10, help="Adam steps of the fit."),
            FloatParam("fit_lr", 1.0, 0.01, 5.0, step=0.05, help="Adam learning rate, in pixels of offset per step."),
            ChoiceParam("fit_size", "128", ("64", "96", "128", "192", "256"), help="Long side, in pixels, at which the fit runs."),
        ),
        actions=(
            Action("fit", "fit", help="Learn offsets (and the v2 mask) with Adam so the deformable output matches the kernel "
                   "applied to the rotated, scaled, sheared image. Set offsets to 'learned' first."),
        ),
    )

    def __init__(self) -> None:
        self._memo = Memo(capacity=24)
        self._fit: Optional[LearnedOffsets] = None

    def reset_state(self) -> None:
        self._memo.clear()
        self._fit = None

    # -- run ---------------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        t0 = time.perf_counter()
        _, _, h, w = image.shape
        q = _clip_query(query, w, h)
        self._memo.bind(image)
        kernel = self._kernel(params, image)
        fit = self._valid_fit(image, params)
        okey = self._offsets_key(params, q, fit)
        warp = self._memo.get(("warp",) + okey, lambda: self._warp(image, params, q)) if params["offsets"] in GLOBAL_WARPS else None
        offsets = self._memo.get(("offsets",) + okey, lambda: self._offsets(image, params, q, fit, warp))
        t1 = time.perf_counter()
        dkey = ("deformed",) + okey + (params["kernel"], params["version"], params["mask_sigma"])
        deformed, mask = self._memo.get(dkey, lambda: self._deform(image, offsets, kernel, params, fit, warp))
        t2 = time.perf_counter()
        rkey = ("regular", params["kernel"], params["kernel_size"], params["dilation"])
        regular = self._memo.get(rkey, lambda: depthwise_conv(image, kernel, int(params["dilation"])))
        t3 = time.perf_counter()
        timings = {"offsets ms": (t1 - t0) * 1e3, "deformable ms": (t2 - t1) * 1e3, "regular ms": (t3 - t2) * 1e3}
        return Result(self._layers(image, Pieces(offsets, mask, deformed, regular, (dkey, rkey)), params, q, fit, timings))

    def _kernel(self, params: Mapping[str, Any], image: torch.Tensor) -> torch.Tensor:
        k = int(params["kernel_size"])
        return torch.from_numpy(make_kernel(params["kernel"], k)).to(image.device, image.dtype).reshape(-1)

    def _valid_fit(self, image: torch.Tensor, params: Mapping[str, Any]) -> Optional[LearnedOffsets]:
        fit = self._fit
        return fit if fit is not None and fit.image is image and fit.key == _fit_key(params) else None

    @staticmethod
    def _offsets_key(params: Mapping[str, Any], q: tuple[int, int], fit: Optional[LearnedOffsets]) -> tuple:
        src = params["offsets"]
        key = (src, params["kernel_size"], params["dilation"])
        if src == "learned":
            return key + ((id(fit), len(fit.losses)) if fit else None,)
        key += (params["strength"],)
        if src == "random":
            key += (params["seed"],)
        return key + (q,) if src in QUERY_CENTRED else key

    def _warp(self, image: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A global warp's displacement on the widened grid, which every tap of every pixel reads."""
        _, _, h, w = image.shape
        k, d, src = int(params["kernel_size"]), int(params["dilation"]), params["offsets"]
        reach = d * (k // 2)
        envelope = None
        if src == "swirl":  # the fall-off depends on the query, not the strength: keep it
            envelope = self._memo.get(("swirl", q, reach), lambda: swirl_envelope(q, h, w, reach, image.device))
        return warp_displacement(src, float(params["strength"]), q, h, w, reach, image.device, envelope)

    def _offsets(self, image: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int],
                 fit: Optional[LearnedOffsets], warp: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        _, _, h, w = image.shape
        k, d, src = int(params["kernel_size"]), int(params["dilation"]), params["offsets"]
        if warp is not None:
            return offsets_from_displacement(*warp, k, d)
        if src == "learned":
            return fit.offsets_at(h, w) if fit else image.new_zeros(1, 2 * k * k, h, w)
        if src == "random":  # linear in strength: upsample the unit field once per seed
            unit = self._memo.get(("random", params["seed"], k, d), lambda: analytic_offsets("random", 1.0, q, h, w, k, d, params["seed"], image.device))
            return unit * float(params["strength"])
        if src == "edges":
            angle, coherence = self._memo.get(("structure",), lambda: structure_tensor(luminance(image)))
            return edge_offsets(angle, coherence, float(params["strength"]), k, d)
        raise ValueError(f"unknown offsets {src!r}; one of {', '.join(OFFSET_SOURCES)}")

    @staticmethod
    def _deform(image: torch.Tensor, offsets: torch.Tensor, kernel: torch.Tensor, params: Mapping[str, Any],
                fit: Optional[LearnedOffsets], warp: Optional[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        k, d = int(params["kernel_size"]), int(params["dilation"])
        pad = d * (k - 1) // 2
        weight = kernel.view(1, 1, k, k).expand(image.shape[1], 1, k, k)
        if warp is not None:  # one resampled image serves every tap (equal to deform_conv2d, tested)
            if params["version"] == "v1":
                return depthwise_window_sum(resample_widened(image, *warp), kernel, d), None
            taps = global_warp_taps(image, *warp, k, d)
            mask = bilateral_mask(taps, image, float(params["mask_sigma"]))
            return modulated_depthwise(taps, kernel, mask), mask
        if params["version"] == "v1":
            return deform_conv2d(image, offsets, weight, padding=pad, dilation=d), None
        if params["offsets"] == "learned":
            mask = fit.mask_at(*image.shape[2:]) if fit else torch.ones_like(offsets[:, : k * k])
            return deform_conv2d(image, offsets, weight, padding=pad, dilation=d, mask=mask), mask
        taps = sample_taps(image, sampling_grid(offsets, image.shape[2:], (k, k), (1, 1), (pad, pad), (d, d)), k * k)
        mask = bilateral_mask(taps, image, float(params["mask_sigma"]))
        return modulated_depthwise(taps, kernel, mask), mask

    # -- the live fit ------------------------------------------------------------------------------
    def start(self, action: str, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        if action != "fit":
            raise ValueError(f"deformable has no action {action!r}")
        if params["offsets"] != "learned":
            raise ValueError("the fit learns the offsets: set offsets to 'learned' first")
        return self._fit_job(image, params, query)

    def _problem(self, image: torch.Tensor, params: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(small image, target) at the fit resolution: target = kernel * (small warped by the fit_* map)."""
        self._memo.bind(image)

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            small = downsample(image, int(params["fit_size"]))
            return small, _target(small, params, self._kernel(params, image))

        return self._memo.get(("problem",) + _fit_key(params), build)

    def _fit_job(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        small, target = self._problem(image, params)
        h, w = small.shape[2:]
        k, d = int(params["kernel_size"]), int(params["dilation"])
        kernel = self._kernel(params, image)
        weight = kernel.view(1, 1, k, k).expand(3, 1, k, k)
        lattice = (max(2, -(-h // FIT_CELL) + 1), max(2, -(-w // FIT_CELL) + 1))
        offsets = image.new_zeros(1, 2 * k * k, *lattice).requires_grad_(True)
        logits = image.new_zeros(1, k * k, *lattice).requires_grad_(True) if params["version"] == "v2" else None
        state = LearnedOffsets(_fit_key(params), image, (h, w), offsets, logits)
        self._fit = state
        opt = torch.optim.Adam([t for t in (offsets, logits) if t is not None], lr=float(params["fit_lr"]))
        steps, throttle = int(params["fit_steps"]), FrameThrottle()
        pad = d * (k - 1) // 2
        q = _clip_query(query, image.shape[3], image.shape[2])
        for i in range(steps):
            sigma = FIT_BLUR * max(0.0, 1.0 - i / (0.6 * steps))  # coarse to fine: reach far, then sharpen
            t0 = time.perf_counter()
            with torch.enable_grad():  # the worker thread runs with autograd off
                off, mask = state.offsets_at(h, w, differentiable=True), state.mask_at(h, w, differentiable=True)
                out = deform_conv2d(gaussian_blur(small, sigma), off, weight, padding=pad, dilation=d, mask=mask)
                loss = F.mse_loss(out, gaussian_blur(target, sigma))
                opt.zero_grad()
                loss.backward()
                opt.step()
            state.losses.append(float(loss))
            now = time.perf_counter()
            result = None
            if throttle.due(i == steps - 1):
                result = self._fit_frame(image, small, params, q, state, weight, {"fit step ms": (now - t0) * 1e3})
                throttle.built(now)
            yield JobUpdate((i + 1) / steps, f"step {i + 1}/{steps} · loss {float(loss):.3g}", result)

    def _fit_frame(self, image: torch.Tensor, small: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int],
                   state: LearnedOffsets, weight: torch.Tensor, timings: dict[str, float]) -> Result:
        """The panels at the fit resolution, from the fit's current offsets."""
        h, w = small.shape[2:]
        k, d = int(params["kernel_size"]), int(params["dilation"])
        off, mask = state.offsets_at(h, w), state.mask_at(h, w)
        out = deform_conv2d(small, off, weight, padding=d * (k - 1) // 2, dilation=d, mask=mask)
        regular = depthwise_conv(small, weight[0, 0].reshape(-1), d)
        return Result(self._layers(image, Pieces(off, mask, out, regular), params, q, state, timings))

    # -- panels ------------------------------------------------------------------------------------
    def _kept(self, key: tuple, compute):
        """Memoized when ``key`` names a memoized stage; computed afresh for fit previews."""
        return compute() if None in key[1:2] else self._memo.get(key, compute)

    def _layers(self, image: torch.Tensor, pieces: Pieces, params: Mapping[str, Any], q: tuple[int, int],
                fit: Optional[LearnedOffsets], timings: dict[str, float]) -> tuple:
        """Panels from ``pieces`` computed at (h, w), placed on the input frame (H, W)."""
        frame = (image.shape[3], image.shape[2])
        work = (pieces.deformed.shape[3], pieces.deformed.shape[2])
        extent = None if work == frame else (0.0, 0.0, float(frame[0]), float(frame[1]))
        name, k, d = params["kernel"], int(params["kernel_size"]), int(params["dilation"])
        levels = None if name in NONNEGATIVE else self._kept(("levels", pieces.keys[1]), lambda: _symmetric(pieces.regular))

        def shown(x: torch.Tensor, key) -> torch.Tensor:  # a kept tensor converts to the same array: no redraw
            return self._kept(("shown", key, levels), lambda: _display(x, levels))
        where = f" (fit preview at {work[0]}x{work[1]})" if extent else ""
        mag = offset_magnitude(pieces.offsets[..., ::4, ::4])  # every 4th pixel: plenty for smooth fields
        layers = [
            _image_layer("Deformable output", shown(pieces.deformed, pieces.keys[0]), levels, extent,
                         f"{name} {k}x{k}, dilation {d}, {params['version']} with {params['offsets']} offsets{where}"),
            _image_layer("Regular convolution", shown(pieces.regular, pieces.keys[1]), levels, extent,
                         f"the same kernel on the regular grid{where}"),
            _offset_field(pieces.offsets, params, frame, work),
            _sampling_points(pieces.offsets, pieces.mask, params, q, frame, work),
            _modulation(pieces.mask, params, q, frame, work, extent),
        ]
        if params["offsets"] == "learned":
            th, tw = self._problem(image, params)[0].shape[2:]
            target = self._memo.get(("target",) + _fit_key(params), lambda: _target(image, params, self._kernel(params, image)))
            layers.append(_image_layer("Fit target", shown(target, ("target",) + _fit_key(params)), levels, None,
                                       f"kernel on the image turned {params['fit_rotate']:g} deg, scaled {params['fit_scale']:g}, "
                                       f"sheared {params['fit_shear']:g}; the fit runs at {tw}x{th}"))
            losses = fit.losses if fit else []
            steps = np.arange(1, len(losses) + 1, dtype=np.float32)
            layers.append(CurveLayer("Fit loss", {"MSE": (steps, np.asarray(losses, np.float32))}, "step", "loss", log_y=bool(losses),
                                     caption=f"{len(losses)} Adam steps, blur {FIT_BLUR:g} px to 0 over 60%" if losses else "press Start fit"))
        kk = k * k
        branch = (3 * kk + 1) * (3 * kk if params["version"] == "v2" else 2 * kk)
        metrics = {
            "parameters (depthwise kernel)": 3 * kk,
            "offset branch it would need (k x k conv)": branch,
            "multiply-adds": 3 * kk * work[0] * work[1],
            "bilinear reads": 4 * 3 * kk * work[0] * work[1],
            **({"bilinear reads done (one warped image serves every tap)":
                4 * 3 * (work[0] + 2 * d * (k // 2)) * (work[1] + 2 * d * (k // 2))}
               if params["offsets"] in GLOBAL_WARPS else {}),
            "mean |offset| px": round(float(mag.mean()) * frame[0] / work[0], 2),
            "max |offset| px": round(float(mag.max()) * frame[0] / work[0], 2),
            "query": f"({q[0]}, {q[1]})",
        }
        if fit is not None and fit.losses:
            metrics.update({"fit steps": len(fit.losses), "fit loss": f"{fit.losses[-1]:.3g}", "fit size": f"{fit.fit_hw[1]}x{fit.fit_hw[0]}"})
        metrics.update({key: round(v, 2) for key, v in timings.items()})
        layers.append(MetricsLayer("Metrics", metrics))
        return tuple(layers)


class FrameThrottle:
    """When a running fit builds a live frame: at most every ``FRAME_INTERVAL_S``, and never more
    than ``FRAME_SHARE`` of the time, so a slow machine gets fewer frames rather than a slow fit."""

    def __init__(self) -> None:
        self._next = 0.0

    def due(self, last_step: bool) -> bool:
        return last_step or time.perf_counter() >= self._next

    def built(self, started: float) -> None:
        now = time.perf_counter()
        self._next = now + max(FRAME_INTERVAL_S, (now - started) * (1.0 / FRAME_SHARE - 1.0))


def _fit_key(params: Mapping[str, Any]) -> tuple:
    """The settings a fit belongs to; changing any of them shows no fit until the next one."""
    return tuple(params[n] for n in ("kernel", "kernel_size", "dilation", "version", "fit_rotate", "fit_scale",
                                     "fit_shear", "fit_size"))


def _target(image: torch.Tensor, params: Mapping[str, Any], kernel: torch.Tensor) -> torch.Tensor:
    """The fit's target: the kernel on the image turned, scaled and sheared about its centre. (1, C, H, W)."""
    h, w = image.shape[2:]
    content = compose_affine(params["fit_rotate"], params["fit_scale"], params["fit_shear"], centre=frame_centre(w, h))
    theta = theta_from_sampling_map(torch.linalg.inv(content), (w, h), (w, h), False)
    grid = F.affine_grid(theta[None].to(image.device, image.dtype), [1, image.shape[1], h, w], align_corners=False)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return depthwise_conv(warped, kernel, int(params["dilation"]))


def _clip_query(query: Query, w: int, h: int) -> tuple[int, int]:
    qx, qy = query if query is not None else (w // 2, h // 2)
    return int(np.clip(qx, 0, w - 1)), int(np.clip(qy, 0, h - 1))


def depthwise_conv(image: torch.Tensor, kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """The (K,) kernel on every channel of (N, C, H, W), zero 'same' padding: the regular twin."""
    reach = dilation * (int(round(kernel.numel() ** 0.5)) // 2)
    return depthwise_window_sum(F.pad(image, (reach,) * 4), kernel, dilation)


def downsample(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """(1, C, H, W) resized (antialiased) so its long side is at most ``long_side``."""
    h, w = image.shape[2:]
    s = min(1.0, long_side / max(h, w))
    if s == 1.0:
        return image
    size = (max(8, round(h * s)), max(8, round(w * s)))
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def _symmetric(x: torch.Tensor) -> tuple[float, float]:
    flat = x.mean(1).abs().flatten()
    hi = float(robust_max(flat, samples=65536))
    return (-hi, hi)


def _display(x: torch.Tensor, levels) -> torch.Tensor:
    """(1, 3, H, W) -> what an ImageLayer shows: RGB (H, W, 3), or the channel mean for signed kernels."""
    return x[0].permute(1, 2, 0) if levels is None else x[0].mean(0)


def _image_layer(name: str, shown: torch.Tensor, levels, extent, caption: str) -> ImageLayer:
    if levels is None:
        return ImageLayer(name, shown, levels=(0.0, 1.0), extent=extent, caption=caption)
    return ImageLayer(name, shown, levels=levels, colormap="CET-D1", extent=extent, caption=caption)


def _to_frame(points: torch.Tensor, frame: tuple[int, int], work: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates (..., 2) of the working grid to those of the input frame."""
    s = points.new_tensor([frame[0] / work[0], frame[1] / work[1]])
    return (points + 0.5) * s - 0.5


def _offset_field(offsets: torch.Tensor, params: Mapping[str, Any], frame, work) -> VectorFieldLayer:
    """Offsets as arrows on a thinned lattice, or each pixel's tap pattern as a star of arrows."""
    mode = params["arrows"]
    if mode == "auto":
        mode = "tap pattern" if params["offsets"] == "edges" else "mean offset"
    per_side = STARS_PER_SIDE if mode == "tap pattern" else ARROWS_PER_SIDE
    step = max(1, round(max(work) / per_side))
    sel = offsets_to_xy(offsets[..., step // 2 :: step, step // 2 :: step])  # (K, ny, nx, 2)
    xy = sel
    ys = torch.arange(step // 2, work[1], step, device=xy.device)
    xs = torch.arange(step // 2, work[0], step, device=xy.device)
    gy, gx = torch.meshgrid(ys.to(xy.dtype), xs.to(xy.dtype), indexing="ij")
    centres = torch.stack([gx, gy], -1)
    s = xy.new_tensor([frame[0] / work[0], frame[1] / work[1]])
    if mode == "tap pattern":
        k, d = int(params["kernel_size"]), int(params["dilation"])
        vectors = (sel + tap_vectors(k, d, xy.device, xy.dtype)[:, None, None]) * s
        origins = _to_frame(centres, frame, work).expand_as(vectors)
        reach = 0.45
    else:
        vectors = (sel.mean(0) if mode == "mean offset" else sel[sel.shape[0] // 2]) * s
        origins = _to_frame(centres, frame, work)
        reach = 0.9
    spacing = step * frame[0] / work[0]
    longest = float(vectors.norm(dim=-1).max())
    fit = reach * spacing / longest if longest > 1e-9 else 1.0
    scale = float(params["arrow_scale"]) * (fit if mode == "tap pattern" else min(1.0, fit))
    what = {"tap pattern": "from each pixel to its taps", "mean offset": "mean offset of the taps",
            "centre tap": "offset of the centre tap"}[mode]
    return VectorFieldLayer("Offset field", origins.reshape(-1, 2), vectors.reshape(-1, 2), background=INPUT, scale=scale,
                            caption=f"{what}, every {spacing:.0f} px, arrows x{scale:.2g}; longest {longest:.1f} px")


def _sampling_points(offsets: torch.Tensor, mask: Optional[torch.Tensor], params: Mapping[str, Any], q: tuple[int, int],
                     frame, work) -> PointsLayer:
    """The query pixel's regular taps and where its deformed taps read, joined to the pixel."""
    k, d = int(params["kernel_size"]), int(params["dilation"])
    wx = min(work[0] - 1, int((q[0] + 0.5) * work[0] / frame[0]))
    wy = min(work[1] - 1, int((q[1] + 0.5) * work[1] / frame[1]))
    xy = offsets_to_xy(offsets[..., wy : wy + 1, wx : wx + 1])[:, 0, 0]  # (K, 2)
    centre = xy.new_tensor([wx, wy])
    regular = _to_frame(centre + tap_vectors(k, d, xy.device, xy.dtype), frame, work)
    deformed = _to_frame(centre + tap_vectors(k, d, xy.device, xy.dtype) + xy, frame, work)
    weights = torch.from_numpy(np.abs(make_kernel(params["kernel"], k)).reshape(-1)).to(xy)
    if mask is not None:
        weights = weights * mask[0, :, wy, wx]
    pts = torch.cat([regular, deformed])
    lo, hi = pts.min(0).values, pts.max(0).values
    margin = max(8.0, 0.25 * float((hi - lo).max()))
    # Snapped outward to 8 px, so the view re-zooms only when the taps move notably.
    x0, y0 = (math.floor((float(v) - margin) / 8) * 8 for v in lo)
    x1, y1 = (math.ceil((float(v) + margin) / 8) * 8 for v in hi)
    focus = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    span = d * (k - 1) + 1
    box = (q[0] + 0.5 - span / 2, q[1] + 0.5 - span / 2, float(span), float(span))
    return PointsLayer(
        "Sampling points",
        sets=(
            PointSet(regular, color=(170, 170, 190), size=6.0, label="regular taps"),
            PointSet(deformed, color=(255, 90, 60), size=9.0, label="deformed taps", join_to=(float(q[0]), float(q[1])), values=weights),
            PointSet(np.array([[q[0], q[1]]], np.float32), color=(60, 220, 255), size=11.0, label="query"),
        ),
        background=INPUT,
        boxes=(box,),
        focus=focus,
        caption=f"grey: regular {k}x{k} taps (box); red: where they read, brightness = |weight|"
                + (" x mask" if mask is not None else ""),
    )


@functools.lru_cache(maxsize=2)
def _ones(h: int, w: int) -> torch.Tensor:
    """The v1 'mask', one tensor per size: the worker hands the same array back and the view
    skips redrawing it."""
    return torch.ones(h, w)


def _modulation(mask: Optional[torch.Tensor], params: Mapping[str, Any], q: tuple[int, int], frame, work, extent) -> HeatmapLayer:
    if mask is None:
        return HeatmapLayer("Modulation", _ones(work[1], work[0]), background=INPUT, levels=(0.0, 1.0), opacity=0.0,
                            extent=extent, caption="v1: no modulation, every tap weighs 1 (choose version v2)")
    wx = min(work[0] - 1, int((q[0] + 0.5) * work[0] / frame[0]))
    wy = min(work[1] - 1, int((q[1] + 0.5) * work[1] / frame[1]))
    at_query = " ".join(f"{float(v):.2f}" for v in mask[0, :, wy, wx])
    top = 2.0 if params["offsets"] == "learned" else 1.0
    return HeatmapLayer("Modulation", mask[0].mean(0), background=INPUT, levels=(0.0, top), opacity=0.75, extent=extent,
                        caption=f"v2 mask, mean over taps; query taps: {at_query}")
