"""The tricks operator's spatial panels: a soft argmax over a window of a heatmap against the
hard argmax (and its bias near the window's border), a crop by a soft boxcar with the gradient
of the crop's mean brightness along each edge, and a point drawn as a blurred delta from a
lookup table with its gradient. Points are pixel-index coordinates of the input (x right, y
down); extents and boxes are edge coordinates."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np
import torch

from backends.functional.tricks import (
    blurred_delta,
    boxcar_mask,
    boxcar_profile,
    gaussian_lut,
    hard_argmax2d,
    hard_box_mask,
    lut_kernel,
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
SWEEP = 2.0  # px each way the point moves in the score curve
SWEEP_STEPS = 161
DIVERGING = "CET-D1"
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


# -- blurred delta -----------------------------------------------------------------------------------

def delta_study(heat: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int]) -> dict[str, Any]:
    sigma, phases = float(params["blur_sigma"]), int(params["phases"])
    table, radius = gaussian_lut(sigma, phases)
    point = torch.tensor([q[0] + float(params["subpixel_x"]), q[1] + float(params["subpixel_y"])], dtype=torch.float64)
    h, w = heat.shape
    side = 2 * (radius + 3) + 1
    ox, oy = q[0] - radius - 3, q[1] - radius - 3
    patch = padded_patch(heat.double(), ox, oy, side + 2 * int(math.ceil(SWEEP)))
    margin = int(math.ceil(SWEEP))
    local = point - torch.tensor([ox - margin, oy - margin], dtype=torch.float64)
    drawn = blurred_delta(local[None], patch.shape[0], patch.shape[1], table, phases, radius)[0]
    shifts = torch.linspace(-SWEEP, SWEEP, SWEEP_STEPS, dtype=torch.float64)
    moved = local[None] + torch.stack([shifts, torch.zeros_like(shifts)], 1)
    with torch.enable_grad():
        mp = moved.clone().requires_grad_(True)
        scores = (blurred_delta(mp, patch.shape[0], patch.shape[1], table, phases, radius) * patch).sum((1, 2))
        (slope,) = torch.autograd.grad(scores.sum(), mp)
    rounded = patch[(moved[:, 1].round().long()), (moved[:, 0].round().long())]
    grads = delta_gradient(local, patch.shape, table, phases, radius)
    sub = (slice(margin, margin + side), slice(margin, margin + side))
    offsets = torch.linspace(-radius - 0.5, radius + 0.5, 8 * (2 * radius + 1) + 1, dtype=torch.float64)
    exact = torch.exp(-offsets**2 / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
    score_grad = score_gradient(local, patch, table, phases, radius)
    return {"point": point, "origin": (ox, oy), "side": side, "drawn": drawn[sub].float(),
            "grads": grads[(slice(None),) + sub].float(), "shifts": shifts, "scores": scores.detach(),
            "slope": slope[:, 0], "rounded": rounded, "offsets": offsets, "exact": exact,
            "lut": lut_kernel(table, phases, radius, offsets), "radius": radius, "score_grad": score_grad,
            "finite": score_finite_difference(local, patch, table, phases, radius)}


def padded_patch(heat: torch.Tensor, ox: int, oy: int, side: int) -> torch.Tensor:
    """``heat[oy - m: oy - m + side, ox - m: ox - m + side]`` with m = ceil(SWEEP), zeros outside the frame."""
    m = int(math.ceil(SWEEP))
    h, w = heat.shape
    out = heat.new_zeros(side, side)
    ys, xs = oy - m, ox - m
    y_lo, y_hi, x_lo, x_hi = max(ys, 0), min(ys + side, h), max(xs, 0), min(xs + side, w)
    if y_lo < y_hi and x_lo < x_hi:
        out[y_lo - ys: y_hi - ys, x_lo - xs: x_hi - xs] = heat[y_lo:y_hi, x_lo:x_hi]
    return out


def delta_gradient(point: torch.Tensor, shape: tuple[int, int], table: torch.Tensor, phases: int,
                   radius: int) -> torch.Tensor:
    """(2, H, W): d drawing / d x and d drawing / d y per pixel. The drawing is a row profile times a
    column profile; each profile gets one copy of the coordinate per entry, so autograd returns
    every entry's derivative at once."""
    h, w = shape
    with torch.enable_grad():
        px = point[0].expand(w).clone().requires_grad_(True)
        py = point[1].expand(h).clone().requires_grad_(True)
        kx = lut_kernel(table, phases, radius, torch.arange(w, dtype=point.dtype) - px)
        ky = lut_kernel(table, phases, radius, torch.arange(h, dtype=point.dtype) - py)
        (dkx,) = torch.autograd.grad(kx.sum(), px)
        (dky,) = torch.autograd.grad(ky.sum(), py)
    kx, ky = kx.detach(), ky.detach()
    return torch.stack([ky[:, None] * dkx[None, :], dky[:, None] * kx[None, :]])


def score_gradient(point: torch.Tensor, patch: torch.Tensor, table: torch.Tensor, phases: int, radius: int) -> torch.Tensor:
    """d/d(x, y) of the score sum(drawn * heat) by autograd."""
    with torch.enable_grad():
        p = point[None].clone().requires_grad_(True)
        score = (blurred_delta(p, *patch.shape, table, phases, radius)[0] * patch).sum()
        (g,) = torch.autograd.grad(score, p)
    return g[0]


def score_finite_difference(point: torch.Tensor, patch: torch.Tensor, table: torch.Tensor, phases: int, radius: int,
                            step: float = 1e-4) -> torch.Tensor:
    out = []
    for i in range(2):
        d = torch.zeros(2, dtype=torch.float64)
        d[i] = step
        s = [(blurred_delta((point + sgn * d)[None], *patch.shape, table, phases, radius)[0] * patch).sum() for sgn in (1, -1)]
        out.append((s[0] - s[1]) / (2 * step))
    return torch.stack(out)


def delta_layers(study: dict[str, Any], params: Mapping[str, Any]) -> tuple[tuple, dict]:
    ox, oy = study["origin"]
    side = study["side"]
    extent = (float(ox), float(oy), float(side), float(side))
    pad = side * 0.3
    focus = (ox - pad, oy - pad, side + 2 * pad, side + 2 * pad)
    px, py = (float(v) for v in study["point"])
    sigma, phases = float(params["blur_sigma"]), int(params["phases"])
    g_hi = float(study["grads"].abs().max()) or 1.0
    shifts = study["shifts"].numpy()
    off = study["offsets"].numpy()
    what = "brightness" if params["heatmap"] == "brightness" else "edge energy"
    sg, fd = study["score_grad"], study["finite"]
    layers = (
        HeatmapLayer("Blurred delta", study["drawn"], background=INPUT, extent=extent, focus=focus,
                     levels=(0.0, float(study["drawn"].max())), opacity=0.85,
                     caption=f"a point at ({px:.2f}, {py:.2f}) drawn as a Gaussian (sigma {sigma:g} px) read from a "
                             f"table of {phases} entries per px, linear between them"),
        HeatmapLayer("Gradient of the delta", study["grads"], labels=("d / d x", "d / d y"), levels=(-g_hi, g_hi),
                     colormap=DIVERGING,
                     caption="how each pixel of the drawing changes as the point moves right (d/dx) or down (d/dy): "
                             "a dipole, which a rounded point (a 1 at the nearest pixel) does not have"),
        CurveLayer("Kernel profile", {
            "Gaussian": (off, study["exact"].numpy()),
            f"lookup table ({phases} per px)": (off, study["lut"].numpy()),
        }, x_label="offset from the point (px)", y_label="kernel value",
            caption="the kernel the table gives, linear between its entries, against the Gaussian it samples"),
        CurveLayer("Score as the point moves", {
            "blurred delta": (shifts, study["scores"].numpy()),
            "rounded point": (shifts, study["rounded"].numpy()),
            "d score / dx (autograd)": (shifts, study["slope"].numpy()),
        }, x_label="shift of the point in x (px)", y_label="score",
            right=("d score / dx (autograd)",), right_label="d score / dx (per px)",
            caption=f"the score the point reads, the sum of drawing x {what}, as it moves: steps for a rounded point "
                    "(gradient 0), smooth for the blurred delta, whose gradient is drawn on the right axis"),
    )
    rows = {"point": f"({px:.2f}, {py:.2f})", "table entries": int(study["lut"].numel()), "radius px": study["radius"],
            "score gradient (autograd)": f"({float(sg[0]):+.4g}, {float(sg[1]):+.4g})",
            "score gradient (finite differences)": f"({float(fd[0]):+.4g}, {float(fd[1]):+.4g})"}
    return layers, rows
