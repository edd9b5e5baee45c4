"""The spatial transformer operator's panels: the warped output, the sampling grid with its folds,
a spline's control points and targets, the inverse map, the fit's target and loss, and the metrics.
Points are pixel-index coordinates of the input (x right, y down)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from backends.functional.affine import decompose_affine, sampling_map_from_theta
from backends.functional.coords import border_polyline, frame_centre, points_to_normalized, points_to_pixels
from backends.layers import INPUT, CurveLayer, ImageLayer, MetricsLayer, PointSet, PointsLayer, SamplingGridLayer
from backends.ops._spatial_transformer_warp import Folds, Registration, Warp

GRID_LINES = 33  # samples per side of the thinned sampling grid handed to the view
Mapped = Callable[[torch.Tensor], torch.Tensor]


def pixel_map(warp: Warp, w: int, h: int, align_corners: bool) -> Mapped:
    """Output pixels (..., 2) -> the input pixels they read, float32."""
    def mapped(pixels: torch.Tensor) -> torch.Tensor:
        normalized = points_to_normalized(pixels.double(), w, h, align_corners)
        return points_to_pixels(warp.map_normalized(normalized), w, h, align_corners).float()
    return mapped


def layers(size: tuple[int, int], params: Mapping[str, Any], warp: Warp, shown: torch.Tensor, back: Optional[torch.Tensor],
           target: torch.Tensor, fit: Optional[Registration], folds: Folds, fit_blur: float, timings: dict[str, float]) -> tuple:
    """Every panel for a (W, H) frame; the inverse map only when ``back`` is given, the control
    points only for a spline (an affine map's outline is on the grid panel already)."""
    w, h = size
    ac = params["align_corners"]
    mapped = pixel_map(warp, w, h, ac)
    ys = torch.linspace(0, h - 1, min(h, GRID_LINES), dtype=torch.float64)
    xs = torch.linspace(0, w - 1, min(w, GRID_LINES), dtype=torch.float64)
    lattice = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (Gh, Gw, 2) of (x, y)
    edge = mapped(border_polyline(w, h, 24, torch.float64))  # pixel-index coordinates, like the grid
    step = (w - 1) / max(len(xs) - 1, 1)
    losses = fit.losses if fit else []
    about = describe(warp, w, h, ac, fit)
    folded = (f"; folded on {folds.fraction:.1%} of the output (boxed; red on the grid panel): not invertible there"
              if folds.fraction > 0 else "")
    out = [
        ImageLayer("Warped output", shown, levels=(0.0, 1.0), boxes=folds.boxes,
                   caption=f"{about['caption']}; {params['interpolation']}, {params['padding']} padding, "
                           f"align_corners={ac}{folded}"),
        SamplingGridLayer("Sampling grid", mapped(lattice), background=folds.background, outline=edge,
                          caption=f"where output pixels read the input, every {step:.0f} px; yellow: the output frame's "
                                  f"border mapped into the input (the sampled region's outline)"
                                  + (f"; red: where the grid folds over ({folds.fraction:.1%} of the output), det <= 0: "
                                     "the warp is not invertible there" if folds.fraction > 0 else "")),
    ]
    if warp.theta is None:
        out.append(control_points(warp, edge, w, h, ac))
    if back is not None:
        out.append(ImageLayer("Inverse map", back, levels=(0.0, 1.0), caption=inverse_caption(warp, folds)))
    out += [
        ImageLayer("Fit target", target, levels=(0.0, 1.0),
                   caption=f"content turned {params['target_rotate']:g} deg, scaled {params['target_scale']:g}, "
                           f"shifted ({params['target_tx'] * w:.1f}, {params['target_ty'] * h:.1f}) px"),
        CurveLayer("Fit loss", {"MSE": (np.arange(1, len(losses) + 1, dtype=np.float32), np.asarray(losses, np.float32))},
                   "step", "loss", log_y=bool(losses),
                   caption=f"{len(losses)} Adam steps at {params['fit_size']} px, blur {fit_blur:g} px to 0" if losses else "press Start fit"),
        MetricsLayer("Metrics", {**about["metrics"], **fit_metrics(params, fit, w, h),
                                 "folded": f"{folds.fraction:.1%}", **timings}),
    ]
    return tuple(out)


def inverse_caption(warp: Warp, folds: Folds) -> str:
    if folds.fraction > 0:
        return (f"folded on {folds.fraction:.1%} of the output: the warp is not invertible there, so this inverse map "
                "is not meaningful")
    return "the output sampled back through the inverse " + ("matrix" if warp.theta is not None else "TPS (targets -> controls)")


def control_points(warp: Warp, edge: torch.Tensor, w: int, h: int, ac: bool) -> PointsLayer:
    """The spline's control points (where they sit on the output) and their targets (where
    they read the input), with the sampled region's outline; the view zooms out to hold it all."""
    controls = points_to_pixels(warp.controls.double(), w, h, ac).float()
    targets = points_to_pixels(warp.targets.double(), w, h, ac).float()
    sets = (PointSet(edge, color=(255, 200, 60), size=3.0, label="sampled region outline"),
            PointSet(controls, color=(170, 170, 190), size=7.0, label="control points"),
            PointSet(targets, color=(255, 90, 60), size=10.0, label="targets"))
    pts = torch.cat([s.points for s in sets] + [torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0]])])
    lo, hi = pts.min(0).values - 8, pts.max(0).values + 8
    focus = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    return PointsLayer("Control points", sets, background=INPUT, boxes=((0.0, 0.0, float(w), float(h)),), focus=focus,
                       caption="grey: control points on the output frame; red: the input points they read (targets, "
                               "click to move the nearest); yellow dots: the sampled region's outline; box: the input")


def describe(warp: Warp, w: int, h: int, ac: bool, fit: Optional[Registration]) -> dict[str, Any]:
    """The warp in a caption and in metrics rows, marked 'fitted' when a fit made it: theta and
    the content map it undoes (affine), or the targets' shift (TPS)."""
    fitted = fit is not None and bool(fit.losses)
    tag = "fitted " if fitted else ""
    if warp.theta is not None:
        rows = {f"{tag}theta row {i + 1}": " ".join(f"{v:+.4f}" for v in row) for i, row in enumerate(warp.theta.tolist())}
        det = {"area ratio (det)": round(float(torch.linalg.det(warp.theta[:, :2])), 4)}
        if warp.singular:
            return {"caption": "theta is singular (det 0): the whole output reads one line of the input",
                    "metrics": {**rows, **det}}
        content = decompose_affine(torch.linalg.inv(sampling_map_from_theta(warp.theta, (w, h), (w, h), ac)), frame_centre(w, h))
        text = (f"content turned {content['angle']:.1f} deg, scaled {content['scale']:.3g}, "
                f"shifted ({content['tx']:.1f}, {content['ty']:.1f}) px")
        caption = f"fitted ({len(fit.losses)} Adam steps; the sliders keep their values): {text}" if fitted else text
        return {"caption": caption, "metrics": {
            **rows,
            f"{tag}content angle deg": round(content["angle"], 3),
            f"{tag}content scale": round(content["scale"], 4),
            f"{tag}content shear": round(content["shear"], 4),
            f"{tag}content shift px": f"({content['tx']:.2f}, {content['ty']:.2f})",
            **det,
        }}
    moved = ((warp.targets - warp.controls).double() * torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)).norm(dim=1)
    mean, top = round(float(moved.mean()), 2), round(float(moved.max()), 2)
    text = f"{warp.controls.shape[0]} control points, targets moved {mean:.1f} px on average, at most {top:.1f} px"
    caption = f"fitted TPS targets ({len(fit.losses)} Adam steps): {text}" if fitted else f"thin-plate spline: {text}"
    return {"caption": caption, "metrics": {"control points": warp.controls.shape[0],
                                            f"{tag}mean target shift px": mean, f"{tag}max target shift px": top}}


def fit_metrics(params: Mapping[str, Any], fit: Optional[Registration], w: int, h: int) -> dict[str, Any]:
    if fit is None or not fit.losses:
        return {}
    return {"fit steps": len(fit.losses), "fit loss": f"{fit.losses[-1]:.3g}", "fit step ms": round(fit.step_ms, 2),
            "target angle deg": params["target_rotate"], "target scale": params["target_scale"],
            "target shift px": f"({params['target_tx'] * w:.2f}, {params['target_ty'] * h:.2f})"}
