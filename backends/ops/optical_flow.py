"""Optical flow as a spatial transformation: a second image (a turned, scaled and shifted copy
of the input), OpenCV's dense flow from the first to it (DIS or Farneback), drawn as arrows and in
the Middlebury colour wheel beside the true flow of the transform, the second image warped back
by ``grid_sample`` along the flow, and what is left (the residual). The cores are
:mod:`backends.functional.flow`."""

from __future__ import annotations

from typing import Any, Mapping

import cv2
import numpy as np
import torch

from backends.features import robust_max
from backends.functional.affine import compose_affine
from backends.functional.coords import frame_centre
from backends.functional.flow import (
    DIS_PRESETS,
    METHODS,
    affine_flow,
    color_wheel,
    dense_flow,
    flow_to_color,
    grey_uint8,
    warp_by_flow,
)
from backends.imaging import hwc, long_side_size, luminance, resize
from backends.layers import INPUT, HeatmapLayer, ImageLayer, MetricsLayer, Result, VectorFieldLayer
from backends.params import ChoiceParam, FloatParam, IntParam
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

WORK_INPUTS = ("shift_x", "shift_y", "rotate", "scale", "flow_size")
FLOW_INPUTS = WORK_INPUTS + ("method", "preset", "levels", "window")
DIS_ONLY = (("method", ("DIS",)),)
FARNEBACK_ONLY = (("method", ("Farneback",)),)
BORDER_MARGIN = 8  # px (input) kept clear of the frame and of the moved frame for the error figures
EPE_LEVEL = 2.0  # px: the endpoint error drawn at full colour
DARK = 0.12  # the backing of the legend wheel
WHEEL_SHARE = 0.22  # the legend wheel's diameter as a share of the flow picture's short side
ARROW_COLORMAP = "viridis"
CHECK_LAYERS = ("Warped back", "Residual", "Endpoint error")


@register
class OpticalFlow(Operator):
    spec = OperatorSpec(
        name="optical_flow",
        title="Optical flow",
        family="Spatial transforms",
        description=(
            "Dense optical flow from the image to a turned, scaled and shifted copy of it (OpenCV's DIS or "
            "Farneback): arrows, the colour wheel beside the transform's true flow, the copy warped back along "
            "the flow with grid_sample, and the residual."
        ),
        params=(
            ChoiceParam("method", "DIS", METHODS, help="DIS: dense inverse search (fast); Farneback: polynomial "
                                                       "expansion over a pyramid."),
            ChoiceParam("preset", "fast", tuple(DIS_PRESETS), help="DIS's speed against accuracy.", enabled_when=DIS_ONLY),
            IntParam("levels", 4, 1, 6, help="Farneback's pyramid levels (more follow larger motion).",
                     enabled_when=FARNEBACK_ONLY),
            IntParam("window", 15, 5, 41, step=2, help="Farneback's averaging window, px at the flow's size.",
                     enabled_when=FARNEBACK_ONLY),
            FloatParam("shift_x", 6.0, -32.0, 32.0, step=0.5, help="The copy's content moves right by this, px."),
            FloatParam("shift_y", -3.5, -32.0, 32.0, step=0.5, help="The copy's content moves down by this, px."),
            FloatParam("rotate", 4.0, -20.0, 20.0, step=0.5, help="The copy's content turns counter-clockwise about "
                                                                  "the centre, degrees."),
            FloatParam("scale", 1.0, 0.8, 1.25, step=0.01, help="The copy's content grows by this about the centre."),
            IntParam("flow_size", 256, 128, 1024, step=32, help="Long side the flow is computed at, px (never more "
                                                               "than the image's)."),
            IntParam("arrow_spacing", 32, 8, 64, step=4, help="Distance between the arrows drawn, px."),
        ),
        primary="Flow colours",
    )
    memo_capacity = 10

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        size = long_side_size(h, w, int(params["flow_size"]))
        motion = compose_affine(params["rotate"], params["scale"], 0.0, params["shift_x"], params["shift_y"],
                                frame_centre(w, h))
        with timer("second image"):
            first = self.memo.stage("first", params, ("flow_size",), lambda: _pair_member(resize(image, size)))
            second = self.memo.stage("second", params, WORK_INPUTS,
                                     lambda: _pair_member(second_image(first["rgb"], work_motion(motion, (h, w), size))))
        with timer("flow"):
            flow = self.memo.stage("flow", params, FLOW_INPUTS, lambda: _flow(first, second, params))
        with timer("colours"):
            true = self.memo.stage("true", params, WORK_INPUTS,
                                   lambda: affine_flow(work_motion(motion, (h, w), size), *size, first["rgb"]))
            top = float(max(float(flow_length(true).max()), 1e-3))
            true_colours = self.memo.stage("true colours", params, WORK_INPUTS, lambda: flow_to_color(true, top))
            wheel = self.memo.stage("legend", params, ("flow_size",), lambda: legend(size, true))
            colours = self.memo.stage("colours", params, FLOW_INPUTS, lambda: _colour_tiles(flow_to_color(flow, top),
                                                                                          true_colours, wheel))
        fast = flow_layers(image, second["rgb"], params, flow, colours, top)
        rows = {"method": method_name(params), "flow size": f"{size[1]} x {size[0]}"}

        def with_checks() -> Result:
            with timer("warp back"):
                checks = self.memo.stage("checks", params, FLOW_INPUTS,
                                         lambda: _checks(first["rgb"], second["rgb"], flow, true, (h, w)))
            more, figures = check_layers(checks, (h, w), size)
            return Result(fast + more + (MetricsLayer("Metrics", {**rows, **figures, **timer.metrics()}),))

        if self.memo.stage_key("checks", params, FLOW_INPUTS) in self.memo:
            return with_checks()
        # A transform or method change: the flow now; warping back and the errors against the
        # true flow (3-4 ms at the default size on one core) once the slider rests.
        return Result(fast + (MetricsLayer("Metrics", {**rows, **timer.metrics()}),), settle=with_checks,
                      pending=CHECK_LAYERS)


def method_name(params: Mapping[str, Any]) -> str:
    return params["method"] + (f" ({params['preset']})" if params["method"] == "DIS" else "")


def work_motion(motion: torch.Tensor, frame: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The input's pixel map ``motion`` as a map of the flow's (h, w) pixels (pixel centres kept)."""
    sx, sy = size[1] / frame[1], size[0] / frame[0]
    to_work = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return to_work @ motion @ torch.linalg.inv(to_work)


def second_image(image: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """The second image: the content of ``image`` (1, 3, h, w) moved by ``motion`` (pixel map
    p -> A p; bilinear, OpenCV), black where nothing of it lands. A second file, resized to the
    same size, would be read here instead."""
    _, _, h, w = image.shape
    rgb = np.ascontiguousarray(image[0].permute(1, 2, 0).cpu().numpy())
    moved = cv2.warpAffine(rgb, motion[:2].numpy(), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return torch.from_numpy(moved).permute(2, 0, 1)[None].to(image)


def _pair_member(rgb: torch.Tensor) -> dict[str, Any]:
    return {"rgb": rgb, "grey": grey_uint8(luminance(rgb))}


def flow_length(flow: torch.Tensor) -> torch.Tensor:
    """(1, 2, h, w) -> (h, w)."""
    return torch.sqrt(flow[0, 0] ** 2 + flow[0, 1] ** 2)


def _flow(first: dict[str, Any], second: dict[str, Any], params: Mapping[str, Any]) -> torch.Tensor:
    flow = dense_flow(first["grey"], second["grey"], method=params["method"], preset=params["preset"],
                      levels=int(params["levels"]), window=int(params["window"]))
    return torch.from_numpy(flow).permute(2, 0, 1)[None].to(first["rgb"])


def _checks(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor, true: torch.Tensor,
            frame: tuple[int, int]) -> dict[str, Any]:
    """The endpoint error (input px), the warps back and their residuals, and the interior where
    both images hold the content, away from the borders."""
    hw, ww = first.shape[-2:]
    sx, sy = ww / frame[1], hw / frame[0]
    per_px = first.new_tensor([1 / sx, 1 / sy]).view(1, 2, 1, 1)
    epe = flow_length((flow - true) * per_px)
    back = warp_by_flow(second, flow)
    residual = torch.stack([(first - second).abs().mean(1)[0], (first - back).abs().mean(1)[0],
                            (first - warp_by_flow(second, true)).abs().mean(1)[0]])
    m = BORDER_MARGIN * max(sx, sy)
    ys = torch.arange(hw, dtype=first.dtype, device=first.device).view(-1, 1)
    xs = torch.arange(ww, dtype=first.dtype, device=first.device).view(1, -1)
    tx, ty = xs + true[0, 0], ys + true[0, 1]
    interior = ((xs >= m) & (xs <= ww - 1 - m) & (ys >= m) & (ys <= hw - 1 - m)
                & (tx >= m) & (tx <= ww - 1 - m) & (ty >= m) & (ty <= hw - 1 - m))
    return {"epe": epe, "back": back, "residual": residual, "interior": interior}


def legend(size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """(3, s, s): the colour wheel on a dark square, s about WHEEL_SHARE of the short side."""
    d = max(9, int(min(size) * WHEEL_SHARE)) | 1
    pad = max(2, d // 10)
    wheel, mask = color_wheel(d, like)
    out = like.new_full((3, d + 2 * pad, d + 2 * pad), DARK)
    out[:, pad: pad + d, pad: pad + d] = wheel + (1 - mask) * DARK
    return out


def _colour_tiles(estimated: torch.Tensor, true: torch.Tensor, wheel: torch.Tensor) -> torch.Tensor:
    """(h, 2 w + gap, 3): estimated and true flow colours side by side, the legend wheel in the
    first tile's top-right corner."""
    hw, ww = estimated.shape[-2:]
    gap = max(2, ww // 40)
    canvas = estimated.new_full((3, hw, 2 * ww + gap), 0.08)
    canvas[:, :, :ww] = estimated[0]
    canvas[:, :, ww + gap:] = true[0]
    s = wheel.shape[-1]
    canvas[:, :s, ww - s: ww] = wheel
    return hwc(canvas)


def _arrows(flow: torch.Tensor, frame: tuple[int, int], spacing: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins (input px) every ``spacing`` px and the flow there, in input px."""
    h, w = frame
    hw, ww = flow.shape[-2:]
    sx, sy = ww / w, hw / h
    spacing = max(1, min(spacing, h, w))  # at least one arrow on an image smaller than the spacing
    ys = torch.arange(spacing / 2, h, spacing, dtype=flow.dtype, device=flow.device)
    xs = torch.arange(spacing / 2, w, spacing, dtype=flow.dtype, device=flow.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    iy = ((gy + 0.5) * sy - 0.5).round().long().clamp(0, hw - 1)
    ix = ((gx + 0.5) * sx - 0.5).round().long().clamp(0, ww - 1)
    vec = flow[0][:, iy, ix].permute(1, 2, 0) / flow.new_tensor([sx, sy])
    return torch.stack([gx, gy], -1).reshape(-1, 2), vec.reshape(-1, 2)


def flow_layers(image: torch.Tensor, second: torch.Tensor, params: Mapping[str, Any], flow: torch.Tensor,
                colours: torch.Tensor, top: float) -> tuple:
    """The flow's own panels: colours beside the true flow, arrows, and the second image."""
    _, _, h, w = image.shape
    hw, ww = flow.shape[-2:]
    origins, vectors = _arrows(flow, (h, w), int(params["arrow_spacing"]))
    transform = (f"turned {params['rotate']:g} deg, scaled {params['scale']:g}, shifted ({params['shift_x']:g}, "
                 f"{params['shift_y']:g}) px")
    at = computed_at((h, w), (hw, ww))
    return (
        ImageLayer("Flow colours", colours, levels=(0.0, 1.0),
                   column_labels=(f"estimated by {params['method']}", "true (from the transform)"),
                   caption=f"hue is the direction (wheel, top right: right red, down yellow, left light blue, up "
                           f"violet), paleness the length: white is still, full colour a move of "
                           f"{top * w / ww:.1f} px{at}"),
        VectorFieldLayer("Flow arrows", origins, vectors, background=INPUT, colormap=ARROW_COLORMAP,
                         caption=f"where each pixel's content went in the second image, every {params['arrow_spacing']}"
                                 f" px, true length, coloured by length ({method_name(params)})"),
        ImageLayer("Second image", hwc(second[0]), levels=(0.0, 1.0), extent=(0.0, 0.0, float(w), float(h)),
                   caption=f"the input's content {transform}; black: where none of the input lands{at}"),
    )


def computed_at(frame: tuple[int, int], size: tuple[int, int]) -> str:
    return f" (computed at {size[1]} x {size[0]} px)" if tuple(size) != tuple(frame) else ""


def check_layers(checks: dict[str, Any], frame: tuple[int, int], size: tuple[int, int]) -> tuple[tuple, dict[str, Any]]:
    """The second image warped back, the residuals and the endpoint error, and their figures away
    from the borders."""
    h, w = frame
    full = (0.0, 0.0, float(w), float(h))
    at = computed_at(frame, size)
    inside = checks["interior"]
    some = bool(inside.any())
    epe = checks["epe"][inside] if some else checks["epe"].reshape(-1)
    median, mean = float(epe.median()), float(epe.mean())
    res = checks["residual"]
    res_mean = [float(r[inside].mean()) if some else float(r.mean()) for r in res]
    res_hi = float(robust_max(res[0], 0.99))
    return (
        ImageLayer("Warped back", hwc(checks["back"][0]), levels=(0.0, 1.0), extent=full,
                   caption=f"the second image read at p + flow(p) by grid_sample: back on the first where the flow "
                           f"is right{at}"),
        HeatmapLayer("Residual", res[:2], labels=("before", "after"), levels=(0.0, res_hi), colormap="inferno",
                     caption=f"|first - second| (before) and |first - second warped back| (after), the colour "
                             f"channels' mean: {res_mean[0]:.3f} before, {res_mean[1]:.3f} after ({res_mean[2]:.3f} "
                             "with the true flow) away from the borders"),
        HeatmapLayer("Endpoint error", checks["epe"], extent=full, levels=(0.0, EPE_LEVEL), colormap="magma",
                     caption=f"|estimated - true flow| in input px, {EPE_LEVEL:g} px and more at full colour: median "
                             f"{median:.2f} px away from the borders (where both images hold the content)"),
    ), {
        "median endpoint error px": round(median, 3),
        "mean endpoint error px": round(mean, 3),
        "residual before": round(res_mean[0], 4),
        "residual after (estimated flow)": round(res_mean[1], 4),
        "residual after (true flow)": round(res_mean[2], 4),
        "interior share": f"{float(inside.float().mean()):.0%}",
    }
