"""Dilated (atrous) convolution: a kernel bank, its dilated taps, the receptive field of the
clicked pixel, and the effective receptive field of a stack of dilated layers by autograd,
where equal rates leave the gridding holes that rates like 1, 2, 5 fill."""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from backends.features import robust_max
from backends.kernels import KERNEL_NAMES, NONNEGATIVE, dilate_kernel, make_kernel
from backends.layers import (
    INPUT,
    FeatureMapsLayer,
    HeatmapLayer,
    ImageLayer,
    MetricsLayer,
    PointSet,
    PointsLayer,
    Result,
)
from backends.memo import Memo
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Operator, OperatorSpec, Query, register

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
MAX_RATE = 16


def same_padding(kernel_size: int, dilation: int) -> int:
    """Padding that keeps the output the input's size at stride 1."""
    return dilation * (kernel_size - 1) // 2


def dilated_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    dilation: int = 1,
    padding_mode: str = "zeros",
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` with 'same' padding of any mode, so the output centre stays on the input's.

    Shapes: input (N, C_in, H, W), weight (C_out, C_in / groups, k, k) with k odd.
    Output (N, C_out, ceil(H / stride), ceil(W / stride)).
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    k = weight.shape[-1]
    if k % 2 != 1 or weight.shape[-2] != k:
        raise ValueError(f"weight must be square with an odd size, got {tuple(weight.shape[-2:])}")
    pad = same_padding(k, dilation)
    if padding_mode == "zeros":
        return F.conv2d(input, weight, bias, stride=stride, padding=pad, dilation=dilation, groups=groups)
    if padding_mode == "reflect" and pad >= min(input.shape[-2:]):
        raise ValueError(
            f"reflect padding of {pad} px needs an image larger than {pad} px on each side "
            f"(got {input.shape[-1]}x{input.shape[-2]}); lower the dilation or kernel size"
        )
    padded = F.pad(input, (pad, pad, pad, pad), mode=padding_mode)
    return F.conv2d(padded, weight, bias, stride=stride, padding=0, dilation=dilation, groups=groups)


def stack_support(kernel_size: int, rates: Sequence[int]) -> np.ndarray:
    """Analytic support of a stack of dilated k x k layers: a (S, S) bool mask of the input
    offsets that can reach the centre output, S = 1 + sum(rate * (k - 1))."""
    c = kernel_size // 2
    offsets = {0}
    for r in rates:
        offsets = {o + r * j for o in offsets for j in range(-c, c + 1)}
    half = sum(r * c for r in rates)
    line = np.zeros(2 * half + 1, bool)
    for o in offsets:
        line[o + half] = True
    return line[:, None] & line[None, :]


def effective_receptive_field(
    image_grey: torch.Tensor, kernel: torch.Tensor, rates: Sequence[int], padding_mode: str, query: tuple[int, int]
) -> torch.Tensor:
    """|d out[query] / d input| for a stack of single-channel dilated layers, by autograd. (H, W).

    The stack is linear, so only the window of its receptive field matters: autograd runs on that
    crop, which is exact wherever the crop does not need padding other than the image's own zeros
    (zeros mode, or a window clear of the border). Otherwise it runs on the whole image.
    """
    _, _, h, w = image_grey.shape
    qx, qy = query
    half = sum(int(r) * (kernel.shape[-1] // 2) for r in rates)
    x0, y0 = max(0, qx - half), max(0, qy - half)
    x1, y1 = min(w, qx + half + 1), min(h, qy + half + 1)
    inside = x0 == qx - half and y0 == qy - half and x1 == qx + half + 1 and y1 == qy + half + 1
    if padding_mode != "zeros" and not inside:
        x0, y0, x1, y1 = 0, 0, w, h
    with torch.enable_grad():  # the worker runs under no_grad; this stage needs autograd
        crop = image_grey[..., y0:y1, x0:x1].detach().clone().requires_grad_(True)
        y = crop
        for r in rates:
            y = dilated_conv2d(y, kernel, dilation=int(r), padding_mode=padding_mode)
        y[0, 0, qy - y0, qx - x0].backward()
    erf = torch.zeros((h, w), dtype=image_grey.dtype, device=image_grey.device)
    erf[y0:y1, x0:x1] = crop.grad[0, 0].abs()
    return erf


def luminance(image: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


@register
class DilatedConvolution(Operator):
    spec = OperatorSpec(
        name="dilated",
        title="Dilated convolution",
        family="Convolution",
        description=(
            "A k x k kernel whose taps are spread `dilation` pixels apart: a wider view for the same "
            "parameters. Click a pixel to see which input pixels it reads; the stack panel shows how "
            "equal rates leave holes (gridding) that mixed rates such as 1, 2, 5 fill."
        ),
        params=(
            ChoiceParam("kernel", "sobel", KERNEL_NAMES, help="Filter from the bank; 'sobel' shows the gradient magnitude of the x/y pair."),
            ChoiceParam("kernel_size", "3", ("3", "5", "7"), help="Taps per side."),
            IntParam("dilation", 2, 1, MAX_RATE, help="Spacing between taps; 1 is an ordinary convolution."),
            IntParam("stride", 1, 1, 4, help="Step between output pixels."),
            ChoiceParam("padding", "zeros", PADDING_MODES, help="How the border is filled ('same' padding)."),
            FloatParam("gabor_angle", 30.0, 0.0, 180.0, step=1.0, help="Orientation of the Gabor kernel, degrees."),
            SeedParam("seed", 0, help="Seed of the random kernel."),
            IntParam("stack_layers", 3, 1, 4, help="Depth of the dilated stack whose effective receptive field is shown."),
            IntParam("rate_1", 2, 1, MAX_RATE, help="Dilation of stack layer 1."),
            IntParam("rate_2", 2, 1, MAX_RATE, help="Dilation of stack layer 2."),
            IntParam("rate_3", 2, 1, MAX_RATE, help="Dilation of stack layer 3."),
            IntParam("rate_4", 2, 1, MAX_RATE, help="Dilation of stack layer 4."),
            BoolParam("stack_box_weights", True, help="Stack of box kernels (shows the support clearly); off uses the chosen kernel."),
        ),
    )

    def __init__(self) -> None:
        self._memo = Memo(capacity=6)

    def reset_state(self) -> None:
        self._memo.clear()

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        t0 = time.perf_counter()
        _, _, h, w = image.shape
        k = int(params["kernel_size"])
        d = int(params["dilation"])
        stride = int(params["stride"])
        pad_mode = params["padding"]
        kernel_name = params["kernel"]
        qx, qy = query if query is not None else (w // 2, h // 2)
        qx, qy = int(np.clip(qx, 0, w - 1)), int(np.clip(qy, 0, h - 1))
        kernel = make_kernel(kernel_name, k, params["gabor_angle"], params["seed"])
        rates = [int(params[f"rate_{i + 1}"]) for i in range(int(params["stack_layers"]))]

        self._memo.bind(image)
        out_key = ("out", kernel_name, k, d, stride, pad_mode, params["gabor_angle"], params["seed"])
        output_layer = self._memo.get(out_key, lambda: self._output_layer(image, kernel, kernel_name, d, stride, pad_mode))
        t_out = time.perf_counter()

        erf_kernel = make_kernel("box", k) if params["stack_box_weights"] else kernel
        erf_key = ("erf", tuple(rates), k, pad_mode, (qx, qy), params["stack_box_weights"], out_key[2:])
        erf = self._memo.get(erf_key, lambda: self._erf(image, erf_kernel, rates, pad_mode, (qx, qy)))
        t_erf = time.perf_counter()

        background = INPUT
        rf_single = d * (k - 1) + 1
        rf_stack = 1 + sum(r * (k - 1) for r in rates)
        coverage = self._coverage(erf, k, rates, (qx, qy))
        out_h, out_w = -(-h // stride), -(-w // stride)
        channels = 2 if kernel_name == "sobel" else 1
        layers = (
            output_layer,
            ImageLayer(
                "Dilated kernel",
                dilate_kernel(kernel, d),
                levels=_symmetric_levels(kernel),
                colormap="CET-D1",
                caption=f"{k}x{k} taps spread over {rf_single}x{rf_single} px; zeros between taps",
            ),
            PointsLayer(
                "Receptive field",
                sets=(
                    PointSet(
                        self._taps(qx, qy, k, d),
                        color=(255, 90, 60),
                        size=8.0,
                        label="taps of the query pixel",
                        join_to=(qx, qy),
                        values=np.abs(kernel).reshape(-1),
                    ),
                    PointSet(np.array([[qx, qy]], np.float32), color=(60, 220, 255), size=11.0, label="query"),
                ),
                background=background,
                boxes=(_box(qx, qy, rf_single), _box(qx, qy, rf_stack)),
                focus=_box(qx, qy, max(rf_single, rf_stack) + 16),
                caption=f"single layer {rf_single}x{rf_single} px (inner box); stack {rf_stack}x{rf_stack} px (outer box)",
            ),
            HeatmapLayer(
                "Stack effective receptive field",
                erf,
                background=background,
                levels=(0.0, 1.0),
                opacity=0.9,
                focus=_box(qx, qy, rf_stack + 16),
                caption=f"rates {', '.join(map(str, rates))}: {coverage:.0%} of the {rf_stack}x{rf_stack} box reaches the query",
            ),
            MetricsLayer(
                "Metrics",
                {
                    "parameters": 3 * channels * k * k,
                    "multiply-adds": 3 * channels * k * k * out_h * out_w,
                    "output size": f"{out_w} x {out_h}",
                    "receptive field (1 layer)": f"{rf_single} x {rf_single}",
                    "receptive field (stack)": f"{rf_stack} x {rf_stack}",
                    "stack coverage": f"{coverage:.1%}",
                    "query": f"({qx}, {qy})",
                    "output ms": round((t_out - t0) * 1e3, 2),
                    "stack ERF ms": round((t_erf - t_out) * 1e3, 2),
                },
            ),
        )
        return Result(layers)

    def _output_layer(self, image: torch.Tensor, kernel: np.ndarray, name: str, d: int, stride: int, pad_mode: str):
        _, c, h, w = image.shape
        kt = torch.from_numpy(kernel).to(image.device, image.dtype)
        extent = (0.0, 0.0, float(w), float(h)) if stride > 1 else None
        if name == "sobel":
            grey = self._memo.get("luminance", lambda: luminance(image))
            weight = torch.stack([kt, kt.T])[:, None]
            g = dilated_conv2d(grey, weight, stride=stride, dilation=d, padding_mode=pad_mode)
            mag = g.pow(2).sum(1).sqrt()[0]
            hi = float(robust_max(mag, samples=65536))
            return ImageLayer("Output", mag, levels=(0.0, hi), colormap="inferno", extent=extent,
                              caption=f"gradient magnitude of the Sobel pair, dilation {d}")
        weight = kt.expand(c, 1, *kt.shape).contiguous()
        out = dilated_conv2d(image, weight, stride=stride, dilation=d, padding_mode=pad_mode, groups=c)
        if name in NONNEGATIVE:
            return ImageLayer("Output", out[0].permute(1, 2, 0), levels=(0.0, 1.0), extent=extent,
                              caption=f"{name} applied to each channel, dilation {d}")
        hi = float(out.abs().amax().clamp_min(1e-6))
        return FeatureMapsLayer("Output", out[0], labels=("R", "G", "B"), levels=(-hi, hi), colormap="CET-D1",
                                caption=f"{name} response per channel, dilation {d}")

    @staticmethod
    def _erf(image: torch.Tensor, kernel: np.ndarray, rates: list[int], pad_mode: str, query: tuple[int, int]) -> torch.Tensor:
        kt = torch.from_numpy(kernel).to(image.device, image.dtype)[None, None]
        try:
            erf = effective_receptive_field(luminance(image), kt, rates, pad_mode, query)
        except ValueError as exc:
            raise ParamError(str(exc)) from None
        return erf / erf.max().clamp_min(1e-12)

    @staticmethod
    def _taps(qx: int, qy: int, k: int, d: int) -> np.ndarray:
        c = k // 2
        js = (np.arange(k) - c) * d
        xs, ys = np.meshgrid(qx + js, qy + js)
        return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)

    @staticmethod
    def _coverage(erf: torch.Tensor, k: int, rates: list[int], query: tuple[int, int]) -> float:
        half = sum(r * (k // 2) for r in rates)
        qx, qy = query
        h, w = erf.shape
        window = erf[max(0, qy - half) : min(h, qy + half + 1), max(0, qx - half) : min(w, qx + half + 1)]
        return float((window > 1e-7).float().mean()) if window.numel() else 0.0


def _symmetric_levels(a: np.ndarray) -> tuple[float, float]:
    hi = float(np.abs(a).max()) or 1.0
    return (-hi, hi)


def _box(cx: int, cy: int, size: int) -> tuple[float, float, float, float]:
    half = size / 2.0
    return (cx + 0.5 - half, cy + 0.5 - half, float(size), float(size))
