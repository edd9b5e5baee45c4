"""The tricks operator's blurred-delta panels: a point drawn at a sub-pixel location as a blur
kernel read from a lookup table, the gradient of the drawing with respect to the location, the
table's kernel against the Gaussian it samples, and the score the point reads as it moves, a
rounded point's beside it. Points are pixel-index coordinates of the input (x right, y down);
extents and focus are edge coordinates."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from backends.functional.tricks import blurred_delta, gaussian_lut, lut_kernel
from backends.layers import INPUT, CurveLayer, HeatmapLayer

SWEEP = 2.0  # px each way the point moves in the score curve
SWEEP_STEPS = 161
DIVERGING = "CET-D1"


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
                             f"table of {phases} entr{'y' if phases == 1 else 'ies'} per px, linear between them"),
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
