"""Dilated (atrous) convolution: a kernel bank, its dilated taps, the receptive field of the
clicked pixel, and the effective receptive field of a stack of dilated layers by autograd,
where equal rates leave the gridding holes that rates like 1, 2, 5 fill. The cores are in
:mod:`backends.functional.dilated`."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from backends.features import robust_max
from backends.functional.dilated import PADDING_MODES, dilated_conv2d, effective_receptive_field
from backends.functional.kernels import KERNEL_NAMES, NONNEGATIVE, dilate_kernel, make_kernel
from backends.imaging import luminance
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
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

MAX_RATE = 16
KERNEL_INPUTS = ("kernel", "kernel_size", "gabor_angle", "seed")
OUTPUT_INPUTS = KERNEL_INPUTS + ("dilation", "stride", "padding")
ERF_INPUTS = ("kernel_size", "padding", "stack_box_weights")
CHANNEL_NAMES = ("red", "green", "blue")
SATURATED = 0.02  # the share of a signed output drawn at the ends of its colour scale
KERNEL_TITLES = {"gabor": "gabor {gabor_angle:g}°", "random": "random, seed {seed}", "sobel_x": "sobel d/dx",
                 "sobel_y": "sobel d/dy"}
SUPPORT_EPS = 1e-7  # ERF values (normalized to a maximum of 1) above this count as reaching the query


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
            FloatParam("gabor_angle", 30.0, 0.0, 180.0, step=1.0, help="Orientation of the Gabor kernel, degrees.",
                       enabled_when=(("kernel", ("gabor",)),)),
            SeedParam("seed", 0, help="Seed of the random kernel.", enabled_when=(("kernel", ("random",)),)),
            IntParam("stack_layers", 3, 1, 4, help="Depth of the dilated stack whose effective receptive field is shown."),
            IntParam("rate_1", 2, 1, MAX_RATE, help="Dilation of stack layer 1."),
            IntParam("rate_2", 2, 1, MAX_RATE, help="Dilation of stack layer 2.", enabled_when=(("stack_layers", (2, 3, 4)),)),
            IntParam("rate_3", 2, 1, MAX_RATE, help="Dilation of stack layer 3.", enabled_when=(("stack_layers", (3, 4)),)),
            IntParam("rate_4", 2, 1, MAX_RATE, help="Dilation of stack layer 4.", enabled_when=(("stack_layers", (4,)),)),
            BoolParam("stack_box_weights", True, help="Stack of box kernels (shows the support clearly); off uses the chosen kernel."),
        ),
        primary="Output",
    )
    memo_capacity = 6

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        k, d, stride = int(params["kernel_size"]), int(params["dilation"]), int(params["stride"])
        qx, qy = query_point(query, w, h)
        kernel = make_kernel(params["kernel"], k, params["gabor_angle"], params["seed"])
        rates = [int(params[f"rate_{i + 1}"]) for i in range(int(params["stack_layers"]))]

        with timer("output"):
            output_layer = self.memo.stage("output", params, OUTPUT_INPUTS, lambda: self._output_layer(image, kernel, params))
        box = params["stack_box_weights"]
        erf_kernel = make_kernel("box", k) if box else kernel
        with timer("stack ERF"):
            erf = self.memo.stage("erf", params, ERF_INPUTS + (() if box else KERNEL_INPUTS),
                                  lambda: _normalized_erf(image, erf_kernel, rates, params["padding"], (qx, qy)),
                                  extra=(tuple(rates), qx, qy))

        rf_single = d * (k - 1) + 1
        rf_stack = 1 + sum(r * (k - 1) for r in rates)
        coverage = stack_coverage(erf, k, rates, (qx, qy))
        out_h, out_w = -(-h // stride), -(-w // stride)
        channels = 2 if params["kernel"] == "sobel" else 1  # the Sobel pair: d/dx and d/dy
        layers = (
            output_layer,
            kernel_layer(kernel, params, d),
            PointsLayer(
                "Receptive field",
                sets=(
                    PointSet(tap_points(qx, qy, k, d), color=(255, 90, 60), size=8.0, label="taps of the query pixel",
                             join_to=(qx, qy), values=np.abs(kernel).reshape(-1)),
                    PointSet(np.array([[qx, qy]], np.float32), color=(60, 220, 255), size=11.0, label="query"),
                ),
                background=INPUT,
                boxes=(_box(qx, qy, rf_single), _box(qx, qy, rf_stack)),
                focus=_box(qx, qy, max(rf_single, rf_stack) + 16),
                caption=f"single layer {rf_single}x{rf_single} px (inner box); stack {rf_stack}x{rf_stack} px (outer box)",
            ),
            HeatmapLayer("Stack effective receptive field", erf, background=INPUT, levels=(0.0, 1.0), opacity=0.9,
                         focus=_box(qx, qy, rf_stack + 16),
                         caption=f"rates {', '.join(map(str, rates))}: {coverage:.0%} of the {rf_stack}x{rf_stack} box reaches the query"),
            MetricsLayer("Metrics", {
                "parameters": 3 * channels * k * k,
                "multiply-adds": 3 * channels * k * k * out_h * out_w,
                "output size": f"{out_w} x {out_h}",
                "receptive field (1 layer)": f"{rf_single} x {rf_single}",
                "receptive field (stack)": f"{rf_stack} x {rf_stack}",
                "stack coverage": f"{coverage:.1%}",
                "query": f"({qx}, {qy})",
                **timer.metrics(),
            }),
        )
        return Result(layers)

    def _output_layer(self, image: torch.Tensor, kernel: np.ndarray, params: Mapping[str, Any]):
        _, c, h, w = image.shape
        name, d, stride, pad_mode = params["kernel"], int(params["dilation"]), int(params["stride"]), params["padding"]
        kt = torch.from_numpy(kernel).to(image.device, image.dtype)
        extent = (0.0, 0.0, float(w), float(h)) if stride > 1 else None
        if name == "sobel":
            grey = self.memo.stage("luminance", params, (), lambda: luminance(image))
            weight = torch.stack([kt, kt.T])[:, None]
            g = _conv(grey, weight, stride=stride, dilation=d, padding_mode=pad_mode)
            mag = g.pow(2).sum(1).sqrt()[0]
            hi = float(robust_max(mag, samples=65536))
            return ImageLayer("Output", mag, levels=(0.0, hi), colormap="inferno", extent=extent,
                              caption=f"gradient magnitude sqrt(gx² + gy²) of the Sobel pair d/dx, d/dy on the luma, "
                                      f"dilation {d}")
        weight = kt.expand(c, 1, *kt.shape).contiguous()
        out = _conv(image, weight, stride=stride, dilation=d, padding_mode=pad_mode, groups=c)
        if name in NONNEGATIVE:
            return ImageLayer("Output", out[0].permute(1, 2, 0), levels=(0.0, 1.0), extent=extent,
                              caption=f"{name} applied to each channel, dilation {d}")
        hi = float(robust_max(out.abs(), q=1 - SATURATED, samples=65536))  # faint edges stay visible
        return FeatureMapsLayer("Output", out[0], labels=CHANNEL_NAMES, levels=(-hi, hi), colormap="CET-D4",
                                caption=f"{name} response of each colour channel, dilation {d}; "
                                        f"the strongest {SATURATED:.0%} beyond ±{hi:.2g} saturate")


def _conv(x: torch.Tensor, weight: torch.Tensor, **options) -> torch.Tensor:
    """The core's refusal (reflect padding wider than the image) as a message for the window."""
    try:
        return dilated_conv2d(x, weight, **options)
    except ValueError as exc:
        raise ParamError(str(exc)) from None


def _normalized_erf(image: torch.Tensor, kernel: np.ndarray, rates: list[int], pad_mode: str, query: tuple[int, int]) -> torch.Tensor:
    """The stack's ERF on the image's luma, scaled to a maximum of 1."""
    kt = torch.from_numpy(kernel).to(image.device, image.dtype)[None, None]
    try:
        erf = effective_receptive_field(luminance(image), kt, rates, pad_mode, query)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    return erf / erf.max().clamp_min(1e-12)


def tap_points(qx: int, qy: int, k: int, d: int) -> np.ndarray:
    """(k * k, 2) input pixels (x, y) the query pixel's taps read, row-major."""
    js = (np.arange(k) - k // 2) * d
    xs, ys = np.meshgrid(qx + js, qy + js)
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)


def stack_coverage(erf: torch.Tensor, k: int, rates: list[int], query: tuple[int, int]) -> float:
    """The share of the stack's receptive-field box (clipped to the image) whose ERF reaches the query."""
    half = sum(r * (k // 2) for r in rates)
    qx, qy = query
    h, w = erf.shape
    window = erf[max(0, qy - half): min(h, qy + half + 1), max(0, qx - half): min(w, qx + half + 1)]
    return float((window > SUPPORT_EPS).float().mean()) if window.numel() else 0.0


def kernel_layer(kernel: np.ndarray, params: Mapping[str, Any], d: int) -> ImageLayer:
    """The dilated taps as a picture: the taps' weights, NaN (transparent) for the zeros the
    dilation inserts between them, so a zero-weight tap keeps the colour of 0. The Sobel pair is
    two tiles side by side, d/dx and d/dy, each followed by a transparent gap wider than the
    spacing of the taps, so the two read as two (a uniform grid of tiles, labelled above)."""
    k = kernel.shape[0]
    span = d * (k - 1) + 1
    name = params["kernel"]
    if name == "sobel":
        gap = span // 2 + d
        tiles = [np.pad(dilate_kernel(t, d, np.nan), ((0, 0), (0, gap)), constant_values=np.nan) for t in (kernel, kernel.T)]
        picture, labels = np.concatenate(tiles, 1), ("d/dx", "d/dy")
        what = f"the Sobel pair: {k}x{k} taps each"
    else:
        picture, labels = dilate_kernel(kernel, d, np.nan), (KERNEL_TITLES.get(name, name).format(**params),)
        what = f"{k}x{k} taps"
    gaps = "; blank: the zeros inserted between taps" if d > 1 else ""
    return ImageLayer("Dilated kernel", picture, levels=_symmetric_levels(kernel), colormap="CET-D1", column_labels=labels,
                      caption=f"{what} spread over {span}x{span} px{gaps}")


def _symmetric_levels(a: np.ndarray) -> tuple[float, float]:
    hi = float(np.abs(a).max()) or 1.0
    return (-hi, hi)


def _box(cx: int, cy: int, size: int) -> tuple[float, float, float, float]:
    half = size / 2.0
    return (cx + 0.5 - half, cy + 0.5 - half, float(size), float(size))
