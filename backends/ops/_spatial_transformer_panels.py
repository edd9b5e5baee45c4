"""The spatial transformer operator's panels: the warped output, the sampling grid, where the
output frame lands on the input, the inverse map, the fit's target and loss, and the metrics.
Points are pixel-index coordinates of the input (x right, y down)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from backends.functional.affine import decompose_affine, sampling_map_from_theta
from backends.functional.coords import border_polyline, frame_centre, points_to_normalized, points_to_pixels
from backends.layers import INPUT, CurveLayer, ImageLayer, MetricsLayer, PointSet, PointsLayer, SamplingGridLayer
from backends.ops._spatial_transformer_warp import Registration, Warp

GRID_LINES = 33  # samples per side of the thinned sampling grid handed to the view
Mapped = Callable[[torch.Tensor], torch.Tensor]


def pixel_map(warp: Warp, w: int, h: int, align_corners: bool) -> Mapped:
    """Output pixels (..., 2) -> the input pixels they read, float32."""
    def mapped(pixels: torch.Tensor) -> torch.Tensor:
        normalized = points_to_normalized(pixels.double(), w, h, align_corners)
        return points_to_pixels(warp.map_normalized(normalized), w, h, align_corners).float()
    return mapped


def layers(size: tuple[int, int], params: Mapping[str, Any], warp: Warp, shown: torch.Tensor, back: Optional[torch.Tensor],
           target: torch.Tensor, fit: Optional[Registration], fit_blur: float, timings: dict[str, float]) -> tuple:
    """Every panel for a (W, H) frame; the inverse map only when ``back`` is given."""
    w, h = size
    ac = params["align_corners"]
    mapped = pixel_map(warp, w, h, ac)
    ys = torch.linspace(0, h - 1, min(h, GRID_LINES), dtype=torch.float64)
    xs = torch.linspace(0, w - 1, min(w, GRID_LINES), dtype=torch.float64)
    lattice = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (Gh, Gw, 2) of (x, y)
    edge = mapped(border_polyline(w, h, 24, torch.float64))  # pixel-index coordinates, like the grid
    step = (w - 1) / max(len(xs) - 1, 1)
    losses = fit.losses if fit else []
    out = (
        ImageLayer("Warped output", shown, levels=(0.0, 1.0),
                   caption=f"{params['interpolation']}, {params['padding']} padding, align_corners={ac}"),
        SamplingGridLayer("Sampling grid", mapped(lattice), background=INPUT, outline=edge,
                          caption=f"where output pixels read the input, every {step:.0f} px; outline: the output frame"),
        source_frame(warp, edge, mapped, w, h, ac),
        ImageLayer("Inverse map", back if back is not None else shown, levels=(0.0, 1.0),
                   caption="the output sampled back through the inverse " + ("matrix" if warp.theta is not None else "TPS (targets -> controls)")),
        ImageLayer("Fit target", target, levels=(0.0, 1.0),
                   caption=f"content turned {params['target_rotate']:g} deg, scaled {params['target_scale']:g}, "
                           f"shifted ({params['target_tx'] * w:.1f}, {params['target_ty'] * h:.1f}) px"),
        CurveLayer("Fit loss", {"MSE": (np.arange(1, len(losses) + 1, dtype=np.float32), np.asarray(losses, np.float32))},
                   "step", "loss", log_y=bool(losses),
                   caption=f"{len(losses)} Adam steps at {params['fit_size']} px, blur {fit_blur:g} px to 0" if losses else "press Start fit"),
        MetricsLayer("Metrics", metrics(params, warp, w, h, fit, timings)),
    )
    return out if back is not None else tuple(lay for lay in out if lay.name != "Inverse map")


def source_frame(warp: Warp, edge: torch.Tensor, mapped: Mapped, w: int, h: int, ac: bool) -> PointsLayer:
    """Where the output frame lands on the input: its edge dotted, its corners joined to its
    centre (affine), or the TPS controls and targets; the view zooms out to hold it all."""
    dots = PointSet(edge, color=(255, 200, 60), size=3.0, label="output frame edge")
    centre = mapped(torch.tensor([frame_centre(w, h)], dtype=torch.float64))[0]
    if warp.theta is not None:
        corners = mapped(torch.tensor([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], dtype=torch.float64))
        sets = (dots, PointSet(corners, color=(255, 120, 40), size=10.0, label="corners",
                               join_to=(float(centre[0]), float(centre[1]))))
        what = "corners joined to the centre"
    else:
        controls = points_to_pixels(warp.controls.double(), w, h, ac).float()
        targets = points_to_pixels(warp.targets.double(), w, h, ac).float()
        sets = (dots, PointSet(controls, color=(170, 170, 190), size=7.0, label="control points"),
                PointSet(targets, color=(255, 90, 60), size=10.0, label="targets"))
        what = "grey: control points; red: their targets (click to move the nearest)"
    pts = torch.cat([s.points for s in sets] + [torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0]])])
    lo, hi = pts.min(0).values - 8, pts.max(0).values + 8
    focus = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    return PointsLayer("Source quadrilateral", sets, background=INPUT, boxes=((0.0, 0.0, float(w), float(h)),),
                       focus=focus, caption=f"the output frame on the input (box): {what}")


def metrics(params: Mapping[str, Any], warp: Warp, w: int, h: int, fit: Optional[Registration],
            timings: dict[str, float]) -> dict[str, Any]:
    """theta and the content map it undoes (affine), or the TPS targets' shift; the fit's state."""
    ac = params["align_corners"]
    out: dict[str, Any] = {}
    if warp.theta is not None:
        t = warp.theta.tolist()
        content = decompose_affine(torch.linalg.inv(sampling_map_from_theta(warp.theta, (w, h), (w, h), ac)), frame_centre(w, h))
        out.update({
            "theta row 1": " ".join(f"{v:+.4f}" for v in t[0]),
            "theta row 2": " ".join(f"{v:+.4f}" for v in t[1]),
            "content angle deg": round(content["angle"], 3),
            "content scale": round(content["scale"], 4),
            "content shear": round(content["shear"], 4),
            "content shift px": f"({content['tx']:.2f}, {content['ty']:.2f})",
            "area ratio (det)": round(float(torch.linalg.det(warp.theta[:, :2])), 4),
        })
    else:
        moved = (warp.targets - warp.controls).double() * torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
        out.update({"control points": warp.controls.shape[0], "mean target shift px": round(float(moved.norm(dim=1).mean()), 2)})
    if fit is not None and fit.losses:
        out.update({"fit steps": len(fit.losses), "fit loss": f"{fit.losses[-1]:.3g}", "fit step ms": round(fit.step_ms, 2)})
        out.update({"target angle deg": params["target_rotate"], "target scale": params["target_scale"],
                    "target shift px": f"({params['target_tx'] * w:.2f}, {params['target_ty'] * h:.2f})"})
    out.update(timings)
    return out
