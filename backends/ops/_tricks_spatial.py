"""The tricks operator's spatial panels: a soft argmax over a window of a heatmap against the
hard argmax (and its bias near the window's border), and a crop by a soft boxcar with the
gradient of the crop's mean brightness along each edge (the blurred delta is in
``_tricks_delta``). Points are pixel-index coordinates of the input (x right, y down); extents
and boxes are edge coordinates."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np
import torch

from backends.functional.tricks import (
    boxcar_mask,
    boxcar_profile,
    hard_argmax2d,
    hard_box_mask,
    soft_argmax2d,
    soft_crop_edge_gradients,
    spatial_softmax2d,
)
from backends.imaging import hwc
from backends.layers import (
    INPUT,
    BarsLayer,
    CurveLayer,
    HeatmapLayer,
    ImageLayer,
    PointSet,
    PointsLayer,
    VectorFieldLayer,
)

TEMPERATURES = torch.logspace(-3, 0, 31, dtype=torch.float64)  # the error-against-temperature sweep
BIAS_SIDE = 96  # px: the synthetic window of the border-bias curve, at most
BIAS_STEPS = 25
PEAK_SIGMA = 4.0  # px: the synthetic peak's width
ARROWS_PER_EDGE = 8
ARROW_REACH = 0.3  # the longest edge arrow, as a share of the box's shorter side
SHARPNESS_SWEEP = torch.logspace(-1.5, 1.3, 29, dtype=torch.float64)  # 0.03 .. 20 / px
SWEEP_PANEL = "Error against temperature"
DECADES = 4  # the softmax weights are drawn over this many powers of ten below the largest
HARD_COLOR, SOFT_COLOR = (255, 80, 80), (110, 240, 110)
EDGE_NAMES = ("left edge", "top edge", "right edge", "bottom edge")


# -- soft argmax -------------------------------------------------------------------------------------

def window_of(q: tuple[int, int], side: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of the window of ``side`` px around ``q``, moved inside the frame."""
    ww, wh = min(side, w), min(side, h)
    x0 = min(max(q[0] - ww // 2, 0), w - ww)
    y0 = min(max(q[1] - wh // 2, 0), h - wh)
    return x0, y0, ww, wh


def soft_argmax_study(heat: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int]) -> dict[str, Any]:
    """The softmax weights, the soft and the hard argmax (input pixels) in the window at the
    chosen temperature."""
    h, w = heat.shape
    x0, y0, ww, wh = window_of(q, int(params["window"]), h, w)
    crop = heat[y0: y0 + wh, x0: x0 + ww].double()[None, None]
    t = float(params["temperature"])
    probs = spatial_softmax2d(crop, t)[0, 0]
    offset = torch.tensor([x0, y0], dtype=torch.float64)
    entropy = float(-(probs * probs.clamp_min(1e-300).log()).sum())
    log_probs = probs.clamp_min(1e-300).log10()
    return {"window": (x0, y0, ww, wh), "log_probs": log_probs.float(), "soft": soft_argmax2d(crop, t)[0, 0] + offset,
            "hard": hard_argmax2d(crop)[0, 0] + offset, "effective": math.exp(entropy)}


def temperature_sweep(heat: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    """(len(TEMPERATURES),) the soft argmax's distance from the hard one at each temperature, px."""
    x0, y0, ww, wh = window
    crop = heat[y0: y0 + wh, x0: x0 + ww].double()[None, None]
    sweep = torch.stack([soft_argmax2d(crop, float(s))[0, 0] for s in TEMPERATURES])
    return (sweep - hard_argmax2d(crop)[0, 0]).norm(dim=1)


def border_bias(ww: int, wh: int, temperature: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Soft minus true x of a synthetic Gaussian peak (height 1 on 0, sigma PEAK_SIGMA) moved from
    the window's left edge to its middle, at half, one and two times the temperature."""
    side_x, side_y = min(ww, BIAS_SIDE), min(wh, BIAS_SIDE)
    xs = torch.arange(side_x, dtype=torch.float64)
    ys = torch.arange(side_y, dtype=torch.float64)
    cy = (side_y - 1) / 2.0
    dist = torch.linspace(0, (side_x - 1) / 2.0, BIAS_STEPS, dtype=torch.float64)
    peaks = torch.exp(-((xs[None, None, :] - dist[:, None, None]) ** 2 + (ys[None, :, None] - cy) ** 2) / (2 * PEAK_SIGMA**2))
    out = {}
    for factor, label in ((0.5, "half the"), (1.0, "the chosen"), (2.0, "twice the")):
        t = temperature * factor
        soft = soft_argmax2d(peaks[:, None], t)[:, 0, 0]
        out[f"{label} temperature ({t:.3g})"] = (dist.numpy(), (soft - dist).numpy())
    return out


def soft_argmax_layers(study: dict[str, Any], sweep: Optional[torch.Tensor], bias: dict, heat: torch.Tensor,
                       params: Mapping[str, Any]) -> tuple[tuple, dict]:
    """The soft argmax's panels; without ``sweep``, all but the error against temperature."""
    x0, y0, ww, wh = study["window"]
    box = (float(x0), float(y0), float(ww), float(wh))
    pad = 0.15 * max(ww, wh)
    focus = (x0 - pad, y0 - pad, ww + 2 * pad, wh + 2 * pad)
    soft, hard = study["soft"], study["hard"]
    gap = float((soft - hard).norm())
    t = float(params["temperature"])
    what = "brightness" if params["heatmap"] == "brightness" else "edge energy"
    temps = TEMPERATURES.numpy()
    top_log = float(study["log_probs"].max())
    layers = (
        HeatmapLayer("Softmax weights", study["log_probs"], background=INPUT, extent=box, focus=focus, boxes=(box,),
                     levels=(top_log - DECADES, top_log), opacity=0.85,
                     caption=f"log10 of the softmax weights of the {what} / {t:g} over the {ww} x {wh} px window "
                             f"({DECADES} decades shown): the soft argmax averages positions with them; about "
                             f"{study['effective']:.0f} px share them"),
        PointsLayer("Soft and hard argmax", (
            PointSet(hard[None].float(), color=HARD_COLOR, size=11.0, label="hard argmax (no gradient)"),
            PointSet(soft[None].float(), color=SOFT_COLOR, size=11.0, label="soft argmax",
                     join_to=(float(hard[0]), float(hard[1]))),
        ), background=INPUT, boxes=(box,), focus=focus,
            caption=f"the soft argmax (green) is {gap:.1f} px from the hard one (red: the {what}'s maximum in the "
                    "window, boxed)"),
        ImageLayer("Scores", heat, levels=(0.0, 1.0), colormap="CET-L1", boxes=(box,),
                   caption=f"the heatmap the argmax reads: the {what} in 0..1; the window is boxed"),
        CurveLayer("Border bias", bias, x_label="the peak's distance to the window's left edge (px)",
                   y_label="soft - true x (px)",
                   caption=f"a synthetic peak (sigma {PEAK_SIGMA:g} px, height 1 on a floor of 0) moved towards the left "
                           "edge of a window of this size: the softmax mass the border cuts off, and the floor's pull "
                           "towards the centre, bias the soft argmax inward; cold temperatures hardly at all"),
    )
    if sweep is not None:
        top = float(sweep.max()) or 1.0
        layers = layers[:3] + (CurveLayer(SWEEP_PANEL, {
            "|soft - hard| (px)": (temps, sweep.numpy()),
            "chosen temperature": (np.array([t, t]), np.array([0.0, top])),
        }, x_label="temperature", y_label="|soft - hard| (px)", log_x=True,
            caption="as the temperature falls the soft argmax goes to the hard one; high temperatures pull it "
                    "towards the window's centre of mass"),) + layers[3:]
    rows = {"soft argmax": f"({float(soft[0]):.2f}, {float(soft[1]):.2f})",
            "hard argmax": f"({float(hard[0]):.0f}, {float(hard[1]):.0f})",
            "soft - hard px": round(gap, 3), "pixels sharing the weight": round(study["effective"], 1),
            "window": f"{ww} x {wh} at ({x0}, {y0})"}
    return layers, rows


# -- soft crop ---------------------------------------------------------------------------------------

def crop_box(q: tuple[int, int], params: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the box of box_width x box_height pixels around ``q``, in pixel-centre
    coordinates: its edges fall between pixels, so the hard crop holds exactly that many."""
    bw, bh = int(params["box_width"]), int(params["box_height"])
    x0, y0 = q[0] - bw // 2 - 0.5, q[1] - bh // 2 - 0.5
    return (x0, y0, x0 + bw, y0 + bh)


def soft_crop_study(rgb: torch.Tensor, grey: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int]) -> dict:
    """The mask, the soft crop, and the crop mean's gradient with respect to each edge (split by
    row and column, and by central differences) at the chosen sharpness."""
    h, w = grey.shape
    box = crop_box(q, params)
    k = float(params["sharpness"])
    mask = boxcar_mask(h, w, grey.new_tensor(box), k)
    mean, *parts = soft_crop_edge_gradients(grey, box, k)
    return {"box": box, "mask": mask, "masked": hwc(rgb * mask), "mean": float(mean), "parts": parts,
            "totals": [float(p.sum()) for p in parts], "finite": finite_differences(grey.double(), box, k)}


def hard_crop_study(grey: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int]) -> dict:
    """The hard crop and the soft crop's mean over SHARPNESS_SWEEP: what the sharpness tends to."""
    h, w = grey.shape
    box = crop_box(q, params)
    hard = hard_box_mask(h, w, box, grey)
    px = boxcar_profile(torch.arange(w, dtype=grey.dtype)[:, None], box[0], box[2], SHARPNESS_SWEEP[None].to(grey.dtype))
    py = boxcar_profile(torch.arange(h, dtype=grey.dtype)[:, None], box[1], box[3], SHARPNESS_SWEEP[None].to(grey.dtype))
    sweep = (py * (grey @ px)).sum(0) / (py.sum(0) * px.sum(0)).clamp_min(1e-12)  # one mean per sharpness
    return {"hard": hard, "hard_mean": float((hard * grey).sum() / hard.sum().clamp_min(1)), "sweep": sweep.double()}


def _soft_mean(grey: torch.Tensor, box: tuple[float, ...], k: float) -> torch.Tensor:
    """The boxcar-weighted mean, by its two separable profiles (no H x W mask)."""
    h, w = grey.shape
    px = boxcar_profile(torch.arange(w, dtype=grey.dtype), box[0], box[2], k)
    py = boxcar_profile(torch.arange(h, dtype=grey.dtype), box[1], box[3], k)
    return (py @ grey @ px) / (py.sum() * px.sum()).clamp_min(1e-12)


def finite_differences(grey: torch.Tensor, box: tuple[float, ...], k: float, step: float = 0.05) -> list[float]:
    """Central differences of the crop mean for each edge: an independent check of autograd's gradient."""
    out = []
    for i in range(4):
        plus, minus = list(box), list(box)
        plus[i] += step
        minus[i] -= step
        out.append(float(_soft_mean(grey, tuple(plus), k) - _soft_mean(grey, tuple(minus), k)) / (2 * step))
    return out


def edge_arrows(box: tuple[float, ...], parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """ARROWS_PER_EDGE arrows on each edge: the summed gradient of its stretch (rows and columns
    past the box's ends go to the end stretches, so an edge's arrows add up to its gradient),
    pointing along x for the left and right edges, along y for the top and bottom ones."""
    x0, y0, x1, y1 = box
    origins, vectors = [], []
    for i, part in enumerate(parts):
        along_y = i in (0, 2)  # left and right edges run down the rows
        lo, hi = (y0, y1) if along_y else (x0, x1)
        idx = torch.arange(part.numel(), dtype=torch.float64)
        stretch = ((idx - lo) * (ARROWS_PER_EDGE / (hi - lo))).floor().clamp(0, ARROWS_PER_EDGE - 1).long()
        sums = torch.zeros(ARROWS_PER_EDGE, dtype=torch.float64).index_add_(0, stretch, part.double())
        mids = lo + (torch.arange(ARROWS_PER_EDGE, dtype=torch.float64) + 0.5) * ((hi - lo) / ARROWS_PER_EDGE)
        fixed = (x0, y0, x1, y1)[i]
        for mid, g in zip(mids.tolist(), sums.tolist()):
            origins.append((fixed, mid) if along_y else (mid, fixed))
            vectors.append((g, 0.0) if along_y else (0.0, g))
    return torch.tensor(origins, dtype=torch.float32), torch.tensor(vectors, dtype=torch.float32)


def around_box(box: tuple[float, ...], k: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel slice bounds of the box with its soft edges (8 / k px) and its
    arrows, inside the frame."""
    h, w = shape
    m = max(8.0, 8.0 / k, ARROW_REACH * min(box[2] - box[0], box[3] - box[1]) + 4)
    x0, y0 = max(0, int(math.floor(box[0] - m))), max(0, int(math.floor(box[1] - m)))
    x1, y1 = min(w, int(math.ceil(box[2] + m)) + 1), min(h, int(math.ceil(box[3] + m)) + 1)
    return (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))


def soft_crop_layers(study: dict[str, Any], hard: dict[str, Any], params: Mapping[str, Any]) -> tuple[tuple, dict]:
    x0, y0, x1, y1 = study["box"]
    k = float(params["sharpness"])
    edge_box = (x0 + 0.5, y0 + 0.5, x1 - x0, y1 - y0)
    origins, vectors = edge_arrows(study["box"], study["parts"])
    region = around_box(study["box"], k, study["mask"].shape)
    origins = origins - origins.new_tensor(region[:2])
    longest = float(vectors.norm(dim=1).max())
    scale = ARROW_REACH * min(x1 - x0, y1 - y0) / longest if longest > 0 else 1.0
    row = min(max(int(round((y0 + y1) / 2)), 0), study["mask"].shape[0] - 1)
    xs = np.arange(study["mask"].shape[1], dtype=np.float64)
    sharp = SHARPNESS_SWEEP.numpy()
    means = hard["sweep"].numpy()
    layers = (
        HeatmapLayer("Soft crop mask", study["mask"], background=INPUT, levels=(0.0, 1.0), boxes=(edge_box,),
                     colormap="viridis", opacity=0.6,
                     caption=f"the boxcar (sigmoid(k(x - x0)) - sigmoid(k(x - x1))) times the same in y, k = {k:g}/px: "
                             f"1 inside, 0 outside, edges {4 / k:.1f} px wide; the hard box is drawn"),
        VectorFieldLayer("Edge gradients", origins, vectors, scale=scale, colormap="viridis",
                         background=study["masked"][region[1]: region[3], region[0]: region[2]],
                         caption="the soft crop and its surroundings; along each edge, which way moving that stretch "
                                 "raises the crop's mean brightness, and how much (d mean / d edge per px, summed over "
                                 "an eighth of the edge)"),
        CurveLayer("Mask across the box", {
            "soft boxcar": (xs, study["mask"][row].double().numpy()),
            "hard crop": (xs, hard["hard"][row].double().numpy()),
        }, x_label="x (px)", y_label="mask", caption=f"the mask along the box's middle row (y = {row})"),
        CurveLayer("Soft crop against sharpness", {
            "soft crop mean": (sharp, means),
            "hard crop mean": (sharp[[0, -1]], np.array([hard["hard_mean"]] * 2)),
            "chosen sharpness": (np.array([k, k]), np.array([means.min(), means.max()])),
        }, x_label="sharpness k (1/px)", y_label="mean brightness", log_x=True,
            caption="the soft crop's mean brightness goes to the hard crop's as the sharpness grows"),
        BarsLayer("Gradient per edge", EDGE_NAMES, {"autograd": study["totals"], "finite differences": study["finite"]},
                  value_label="d mean brightness / d edge (per px)",
                  caption="above 0: moving that edge right (left and right edges) or down (top and bottom edges) "
                          "raises the crop's mean brightness; by autograd and by central differences of ±0.05 px"),
    )
    rows = {"box": f"({x0:.0f}, {y0:.0f}) to ({x1:.0f}, {y1:.0f})", "soft crop mean": round(study["mean"], 5),
            "hard crop mean": round(hard["hard_mean"], 5),
            **{f"d mean / d {n}": f"{a:+.3g}" for n, a in zip(EDGE_NAMES, study["totals"])}}
    return layers, rows
