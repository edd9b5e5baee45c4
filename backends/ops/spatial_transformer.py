"""Spatial transformer: a sampling grid (affine or thin-plate spline) and ``grid_sample``. Shows
where each output pixel reads, where the output frame lands on the input, the inverse map, and
a live registration that recovers a known transform by gradient descent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from backends.layers import (
    INPUT,
    CurveLayer,
    ImageLayer,
    MetricsLayer,
    PointSet,
    PointsLayer,
    Result,
    SamplingGridLayer,
    complete,
)
from backends.memo import Memo
from backends.ops.deformable import FrameThrottle, downsample
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.warp import (
    border_polyline,
    compose_affine,
    control_lattice,
    decompose_affine,
    frame_centre,
    gaussian_blur,
    normalized_to_pixel,
    pixel_to_normalized,
    sampling_map_from_theta,
    theta_from_sampling_map,
    tps_apply,
    tps_fit,
    tps_grid,
)

INTERPOLATIONS = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
THETA_NAMES = ("theta_11", "theta_12", "theta_13", "theta_21", "theta_22", "theta_23")
GRID_LINES = 33  # samples per side of the thinned sampling grid handed to the view
FIT_BLUR = 4.0  # starting blur (fit pixels) of the coarse-to-fine schedule
FIT_LR = 0.01  # Adam step in normalized units (1 = half the frame)
TPS_STEP = 4  # shown TPS grids: the spline every 4 px, linear between (see tps_grid)


def spatial_transform(input: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                      align_corners: bool = False) -> torch.Tensor:
    """``F.grid_sample`` with the transformer's options spelled out. input (N, C, Hin, Win), grid
    (N, H, W, 2) normalized (x, y) -> (N, C, H, W). Nearest sampling passes no gradient to the grid."""
    if mode not in INTERPOLATIONS or padding_mode not in PADDINGS:
        raise ValueError(f"mode must be one of {INTERPOLATIONS} and padding one of {PADDINGS}, got {mode!r}, {padding_mode!r}")
    return F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def affine_transform(input: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                     align_corners: bool = False) -> torch.Tensor:
    """``F.affine_grid`` then ``F.grid_sample``: theta (N, 2, 3) maps output to input, normalized."""
    grid = F.affine_grid(theta.to(input.dtype), list(input.shape), align_corners=align_corners)
    return spatial_transform(input, grid, mode, padding_mode, align_corners)


def affine_sampling_grid(theta: torch.Tensor, h: int, w: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
    """``F.affine_grid(theta[None], [1, 1, h, w], align_corners)`` for one (2, 3) theta, without
    autograd: each coordinate is a row term plus a column term, two broadcast adds (0.4 ms at
    512 x 512 against affine_grid's 3.2; equal to 1e-6, tested). The fit keeps affine_grid."""
    def normalized(n: int) -> torch.Tensor:
        r = torch.linspace(-1.0, 1.0, n, device=like.device, dtype=like.dtype)
        return r if align_corners else r * ((n - 1) / n)

    xs, ys = normalized(w), normalized(h)
    (a, b, c), (d, e, f) = theta.tolist()
    grid = like.new_empty(1, h, w, 2)
    torch.add((xs * a)[None, :], (ys * b + c)[:, None], out=grid[0, ..., 0])
    torch.add((xs * d)[None, :], (ys * e + f)[:, None], out=grid[0, ..., 1])
    return grid


def content_theta(params: Mapping[str, Any], w: int, h: int) -> torch.Tensor:
    """(2, 3) float64 theta of the 'compose' controls, which move the *content* (turn it by
    ``rotate`` degrees about the centre, scale, shear, shift by fractions of the frame): the
    sampling map is that map's inverse, composed in pixels so it stays rigid on any aspect."""
    content = compose_affine(params["rotate"], params["scale"], params["shear"], params["translate_x"] * w,
                             params["translate_y"] * h, frame_centre(w, h))
    return theta_from_sampling_map(torch.linalg.inv(content), (w, h), (w, h), params["align_corners"])


def target_theta(params: Mapping[str, Any], w: int, h: int) -> torch.Tensor:
    """(2, 3) theta of the registration target, built like :func:`content_theta` from target_*."""
    content = compose_affine(params["target_rotate"], params["target_scale"], 0.0, params["target_tx"] * w,
                             params["target_ty"] * h, frame_centre(w, h))
    return theta_from_sampling_map(torch.linalg.inv(content), (w, h), (w, h), params["align_corners"])


@dataclass
class Warp:
    """A sampling map in normalized coordinates: affine (theta) or TPS (controls -> targets)."""

    theta: Optional[torch.Tensor] = None  # (2, 3) float64
    controls: Optional[torch.Tensor] = None  # (K, 2)
    targets: Optional[torch.Tensor] = None  # (K, 2)

    @property
    def key(self) -> tuple:
        if self.theta is not None:
            return ("affine", tuple(round(v, 9) for v in self.theta.flatten().tolist()))
        return ("tps", tuple(round(v, 9) for v in self.targets.flatten().tolist()))

    def grid(self, h: int, w: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
        """(1, H, W, 2) where each output pixel samples the input, normalized."""
        if self.theta is not None:
            return affine_sampling_grid(self.theta, h, w, align_corners, like)
        return tps_grid(self.controls.to(like), self.targets.to(like), (h, w), align_corners, TPS_STEP)

    def inverse_grid(self, h: int, w: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
        """(1, H, W, 2): where each input pixel's content went in the output (the reverse map)."""
        if self.theta is not None:
            full = torch.eye(3, dtype=torch.float64)
            full[:2] = self.theta
            return affine_sampling_grid(torch.linalg.inv(full)[:2], h, w, align_corners, like)
        return tps_grid(self.targets.to(like), self.controls.to(like), (h, w), align_corners, TPS_STEP)

    def map_normalized(self, points: torch.Tensor) -> torch.Tensor:
        """Normalized output points (..., 2) to the normalized input points they sample."""
        if self.theta is not None:
            t = self.theta.to(points)
            return points @ t[:, :2].T + t[:, 2]
        coeffs = tps_fit(self.controls.double(), self.targets.double())
        return tps_apply(coeffs, self.controls.double(), points.double()).to(points.dtype)


def to_pixels(points: torch.Tensor, w: int, h: int, align_corners: bool) -> torch.Tensor:
    return torch.stack([normalized_to_pixel(points[..., 0], w, align_corners), normalized_to_pixel(points[..., 1], h, align_corners)], -1)


def to_normalized(points: torch.Tensor, w: int, h: int, align_corners: bool) -> torch.Tensor:
    return torch.stack([pixel_to_normalized(points[..., 0], w, align_corners), pixel_to_normalized(points[..., 1], h, align_corners)], -1)


@dataclass
class Registration:
    """A fit's outcome: the affine theta, or the TPS targets (then kept as the clicked targets)."""

    key: tuple
    theta: Optional[torch.Tensor]
    losses: list[float] = field(default_factory=list)
    step_ms: float = 0.0


@register
class SpatialTransformer(Operator):
    spec = OperatorSpec(
        name="spatial_transformer",
        title="Spatial transformer",
        family="Spatial transforms",
        description=(
            "A sampling grid says where each output pixel reads the input; grid_sample reads it. Affine: compose "
            "rotate, scale, shear and shift, or type the six theta entries of F.affine_grid. Thin-plate spline: "
            "click to move the nearest control point's target there. Start fit to recover a known transform."
        ),
        params=(
            ChoiceParam("warp", "affine", ("affine", "tps"), help="Affine map or thin-plate spline through a lattice of control points."),
            ChoiceParam("mode", "compose", ("compose", "matrix"), help="Affine from the controls below, or from the six theta entries."),
            FloatParam("rotate", 20.0, -180.0, 180.0, step=1.0, help="Turn the content counter-clockwise about the centre, degrees."),
            FloatParam("scale", 0.85, 0.25, 4.0, step=0.01, help="Scale the content about the centre."),
            FloatParam("shear", 0.0, -1.0, 1.0, step=0.01, help="Shear the content: x moves by shear * (y - centre)."),
            FloatParam("translate_x", 0.05, -1.0, 1.0, step=0.01, help="Shift the content right, as a fraction of the width."),
            FloatParam("translate_y", 0.0, -1.0, 1.0, step=0.01, help="Shift the content down, as a fraction of the height."),
            FloatParam("theta_11", 1.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 1 (x_in = t11 x + t12 y + t13, normalized)."),
            FloatParam("theta_12", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 1."),
            FloatParam("theta_13", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 1 (shift)."),
            FloatParam("theta_21", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 2 (y_in = t21 x + t22 y + t23)."),
            FloatParam("theta_22", 1.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 2."),
            FloatParam("theta_23", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 2 (shift)."),
            ChoiceParam("tps_points", "9", ("4", "9", "16"), help="Control points of the spline, on a square lattice with the corners."),
            FloatParam("tps_jitter", 0.06, 0.0, 0.25, step=0.01, help="Random displacement of the targets, as a fraction of the frame."),
            SeedParam("tps_seed", 0, help="Seed of the target jitter."),
            BoolParam("align_corners", False, help="grid_sample's convention: -1 and 1 are the corner pixel centres (on) or the outer edges (off)."),
            ChoiceParam("padding", "zeros", PADDINGS, help="What is read outside the input."),
            ChoiceParam("interpolation", "bilinear", INTERPOLATIONS, help="How the input is read between pixels (the fit always uses bilinear)."),
            FloatParam("target_rotate", 25.0, -90.0, 90.0, step=1.0, help="Fit target: the content turned by this many degrees..."),
            FloatParam("target_scale", 1.15, 0.5, 2.0, step=0.01, help="...scaled by this factor..."),
            FloatParam("target_tx", 0.06, -0.5, 0.5, step=0.01, help="...shifted right by this fraction of the width..."),
            FloatParam("target_ty", -0.04, -0.5, 0.5, step=0.01, help="...and down by this fraction of the height."),
            IntParam("fit_steps", 300, 10, 3000, step=10, help="Adam steps of the fit."),
            FloatParam("fit_lr", 1.0, 0.05, 10.0, step=0.05, help="Learning-rate factor (1 = 0.01 normalized units per step)."),
            ChoiceParam("fit_size", "128", ("64", "96", "128", "192", "256"), help="Long side, in pixels, at which the fit runs."),
        ),
        actions=(
            Action("fit", "fit", help="Adam on theta (affine) or the TPS targets so the warped image matches the target, "
                   "with a coarse-to-fine blur; starts from the current transform."),
            Action("reset", "Forget clicks and fits", help="Forget clicked and fitted TPS targets and the fitted affine.",
                   instant=True),
        ),
    )

    def __init__(self) -> None:
        self._memo = Memo(capacity=16)
        self._moved: dict[int, tuple[float, float]] = {}  # TPS control index -> target, normalized
        self._moved_key: tuple = ()
        self._last_query: Query = None
        self._fit: Optional[Registration] = None

    def reset_state(self) -> None:
        self._memo.clear()
        self._moved.clear()
        self._fit = None

    # -- run ---------------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        t0 = time.perf_counter()
        _, _, h, w = image.shape
        ac, interp, pad = params["align_corners"], params["interpolation"], params["padding"]
        self._memo.bind(image)
        self._bind_targets(image, params)
        self._follow_click(query, params, w, h)
        warp = self._warp(image, params)
        grid = self._memo.get(("grid", warp.key, ac), lambda: warp.grid(h, w, ac, image))
        shown = self._memo.get(("warped", warp.key, ac, interp, pad),
                               lambda: spatial_transform(image, grid, interp, pad, ac)[0].permute(1, 2, 0))
        t1 = time.perf_counter()
        inverse_key = ("inverse", warp.key, ac, interp, pad)

        def with_inverse() -> Result:
            t2 = time.perf_counter()
            back = self._memo.get(inverse_key, lambda: spatial_transform(
                shown.permute(2, 0, 1)[None], warp.inverse_grid(h, w, ac, image), interp, pad, ac)[0].permute(1, 2, 0))
            timings = {"warp ms": (t1 - t0) * 1e3, "inverse ms": (time.perf_counter() - t2) * 1e3}
            return Result(self._layers(image, params, warp, shown, back, timings))

        if inverse_key in self._memo:
            return with_inverse()
        # A warp change: the output, grid and quadrilateral now, the inverse map once the sliders rest.
        fast = self._layers(image, params, warp, shown, None, {"warp ms": (t1 - t0) * 1e3})
        return Result(fast, settle=with_inverse, pending=("Inverse map",))

    def _bind_targets(self, image: torch.Tensor, params: Mapping[str, Any]) -> None:
        """Clicked and fitted TPS targets belong to one image and one lattice size."""
        key = (id(image), params["tps_points"])
        if key != self._moved_key:
            self._moved.clear()
            self._moved_key = key

    def _follow_click(self, query: Query, params: Mapping[str, Any], w: int, h: int) -> None:
        """A new query (a click) moves the TPS target nearest to it onto it. The first query seen
        is the default centre, not a click, so it moves nothing."""
        clicked = query is not None and self._last_query is not None and query != self._last_query
        self._last_query = query
        if not clicked or params["warp"] != "tps":
            return
        point = to_normalized(torch.tensor([float(query[0]), float(query[1])], dtype=torch.float64), w, h, params["align_corners"])
        targets = self._targets(params).double()
        nearest = int((targets - point).norm(dim=1).argmin())
        self._moved[nearest] = (float(point[0]), float(point[1]))

    def _targets(self, params: Mapping[str, Any]) -> torch.Tensor:
        """(K, 2) normalized TPS targets: the lattice, jittered, with clicked or fitted ones in place."""
        n = int(round(int(params["tps_points"]) ** 0.5))
        controls = control_lattice(n)
        g = torch.Generator().manual_seed(int(params["tps_seed"]))
        targets = controls + torch.randn(controls.shape, generator=g) * (2.0 * float(params["tps_jitter"]))
        for i, (x, y) in self._moved.items():
            targets[i] = torch.tensor([x, y])
        return targets

    def _warp(self, image: torch.Tensor, params: Mapping[str, Any]) -> Warp:
        _, _, h, w = image.shape
        if params["warp"] == "tps":
            n = int(round(int(params["tps_points"]) ** 0.5))
            return Warp(controls=control_lattice(n), targets=self._targets(params))
        if self._fit is not None and self._fit.key == _fit_key(params, image):
            return Warp(theta=self._fit.theta.detach().double())
        if params["mode"] == "matrix":
            return Warp(theta=torch.tensor([params[n] for n in THETA_NAMES], dtype=torch.float64).view(2, 3))
        return Warp(theta=content_theta(params, w, h))

    # -- the live registration ---------------------------------------------------------------------
    def start(self, action: str, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        if action == "reset":
            return self._reset_job(image, params, query)
        if action != "fit":
            raise ValueError(f"spatial_transformer has no action {action!r}")
        return self._fit_job(image, params, query)

    def _reset_job(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        self.reset_state()
        yield JobUpdate(1.0, "clicked and fitted targets forgotten", complete(self.run(image, params, query)))

    def _fit_job(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Adam on theta or the TPS targets, bilinear, zeros outside, at ``fit_size``, from the
        current transform; the blur shrinks to zero over the first 70% so far misfits still see
        a gradient. Normalized coordinates make theta the same at every resolution."""
        self._bind_targets(image, params)
        small = downsample(image, int(params["fit_size"]))
        sh, sw = small.shape[2:]
        ac = params["align_corners"]
        target = affine_transform(small, target_theta(params, sw, sh)[None], "bilinear", "zeros", ac)
        start = self._warp(image, params)
        tps = params["warp"] == "tps"
        var = (start.targets if tps else start.theta).to(image.device, image.dtype).clone().requires_grad_(True)
        controls = start.controls.to(image.device, image.dtype) if tps else None
        self._fit = Registration(_fit_key(params, image), None if tps else var)
        opt = torch.optim.Adam([var], lr=FIT_LR * float(params["fit_lr"]))
        steps, throttle = int(params["fit_steps"]), FrameThrottle()
        for i in range(steps):
            t0 = time.perf_counter()
            sigma = FIT_BLUR * max(0.0, 1.0 - i / (0.7 * steps))
            with torch.enable_grad():  # the worker thread runs with autograd off
                grid = tps_grid(controls, var, (sh, sw), ac) if tps else F.affine_grid(var[None], [1, 3, sh, sw], align_corners=ac)
                out = spatial_transform(gaussian_blur(small, sigma), grid, "bilinear", "zeros", ac)
                loss = F.mse_loss(out, gaussian_blur(target, sigma))
                opt.zero_grad()
                loss.backward()
                opt.step()
            self._fit.losses.append(float(loss))
            self._fit.step_ms = (time.perf_counter() - t0) * 1e3
            if tps:
                self._moved = {j: (float(x), float(y)) for j, (x, y) in enumerate(var.detach().tolist())}
            result = None
            if throttle.due(i == steps - 1):
                started = time.perf_counter()
                result = complete(self.run(image, params, query))
                throttle.built(started)
            yield JobUpdate((i + 1) / steps, f"step {i + 1}/{steps} · loss {float(loss):.3g}", result)

    # -- panels ------------------------------------------------------------------------------------
    def _layers(self, image: torch.Tensor, params: Mapping[str, Any], warp: Warp, shown: torch.Tensor,
                back: Optional[torch.Tensor], timings: dict[str, float]) -> tuple:
        """Every panel; the inverse map only when ``back`` is given."""
        _, _, h, w = image.shape
        ac = params["align_corners"]

        def mapped(pixels: torch.Tensor) -> torch.Tensor:  # output pixels -> the input pixels they read
            return to_pixels(warp.map_normalized(to_normalized(pixels.double(), w, h, ac)), w, h, ac).float()

        ys = torch.linspace(0, h - 1, min(h, GRID_LINES), dtype=torch.float64)
        xs = torch.linspace(0, w - 1, min(w, GRID_LINES), dtype=torch.float64)
        lattice = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (Gh, Gw, 2)
        edge = mapped(border_polyline(w, h, 24, torch.float64))
        outline = edge  # pixel-index coordinates, like the grid
        step = (w - 1) / max(len(xs) - 1, 1)
        fit = self._fit if self._fit is not None and self._fit.key == _fit_key(params, image) else None
        losses = fit.losses if fit else []
        target = self._memo.get(("target", params["target_rotate"], params["target_scale"], params["target_tx"],
                                 params["target_ty"], ac), lambda: affine_transform(
            image, target_theta(params, w, h)[None], "bilinear", "zeros", ac)[0].permute(1, 2, 0))
        layers = (
            ImageLayer("Warped output", shown, levels=(0.0, 1.0),
                       caption=f"{params['interpolation']}, {params['padding']} padding, align_corners={ac}"),
            SamplingGridLayer("Sampling grid", mapped(lattice), background=INPUT, outline=outline,
                              caption=f"where output pixels read the input, every {step:.0f} px; outline: the output frame"),
            self._source_frame(warp, edge, mapped, w, h, ac),
            ImageLayer("Inverse map", back if back is not None else shown, levels=(0.0, 1.0),
                       caption="the output sampled back through the inverse " + ("matrix" if warp.theta is not None else "TPS (targets -> controls)")),
            ImageLayer("Fit target", target, levels=(0.0, 1.0),
                       caption=f"content turned {params['target_rotate']:g} deg, scaled {params['target_scale']:g}, "
                               f"shifted ({params['target_tx'] * w:.1f}, {params['target_ty'] * h:.1f}) px"),
            CurveLayer("Fit loss", {"MSE": (np.arange(1, len(losses) + 1, dtype=np.float32), np.asarray(losses, np.float32))},
                       "step", "loss", log_y=bool(losses),
                       caption=f"{len(losses)} Adam steps at {params['fit_size']} px, blur {FIT_BLUR:g} px to 0" if losses else "press Start fit"),
            MetricsLayer("Metrics", self._metrics(params, warp, w, h, fit, timings)),
        )
        return layers if back is not None else tuple(lay for lay in layers if lay.name != "Inverse map")

    @staticmethod
    def _source_frame(warp: Warp, edge: torch.Tensor, mapped, w: int, h: int, ac: bool) -> PointsLayer:
        """Where the output frame lands on the input: its edge dotted, its corners joined to its
        centre (affine), or the TPS controls and targets; the view zooms out to hold it all."""
        dots = PointSet(edge, color=(255, 200, 60), size=3.0, label="output frame edge")
        centre = mapped(torch.tensor([[(w - 1) / 2.0, (h - 1) / 2.0]], dtype=torch.float64))[0]
        if warp.theta is not None:
            corners = mapped(torch.tensor([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], dtype=torch.float64))
            sets = (dots, PointSet(corners, color=(255, 120, 40), size=10.0, label="corners",
                                   join_to=(float(centre[0]), float(centre[1]))))
            what = "corners joined to the centre"
        else:
            controls = to_pixels(warp.controls.double(), w, h, ac).float()
            targets = to_pixels(warp.targets.double(), w, h, ac).float()
            sets = (dots, PointSet(controls, color=(170, 170, 190), size=7.0, label="control points"),
                    PointSet(targets, color=(255, 90, 60), size=10.0, label="targets"))
            what = "grey: control points; red: their targets (click to move the nearest)"
        pts = torch.cat([s.points for s in sets] + [torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0]])])
        lo, hi = pts.min(0).values - 8, pts.max(0).values + 8
        focus = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
        return PointsLayer("Source quadrilateral", sets, background=INPUT, boxes=((0.0, 0.0, float(w), float(h)),),
                           focus=focus, caption=f"the output frame on the input (box): {what}")

    @staticmethod
    def _metrics(params: Mapping[str, Any], warp: Warp, w: int, h: int, fit: Optional[Registration],
                 timings: dict[str, float]) -> dict[str, Any]:
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
        out.update({k: round(v, 2) for k, v in timings.items()})
        return out


def _fit_key(params: Mapping[str, Any], image: torch.Tensor) -> tuple:
    """What a fit depends on (its start, its target, its frame); changing any of it shows no fit."""
    ignored = ("interpolation", "padding", "fit_steps", "fit_lr", "tps_jitter", "tps_seed")
    return (id(image),) + tuple(v for k, v in sorted(params.items()) if k not in ignored)
