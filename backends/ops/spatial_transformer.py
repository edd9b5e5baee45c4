"""Spatial transformer: a sampling grid (affine or thin-plate spline) and ``grid_sample``. Shows
where each output pixel reads, where the output frame lands on the input, the inverse map, and
a live registration that recovers a known transform by gradient descent. The cores are in
:mod:`backends.functional.affine` and :mod:`backends.functional.tps`."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F

from backends.functional.affine import INTERPOLATIONS, PADDINGS, affine_transform, spatial_transform
from backends.functional.coords import points_to_normalized
from backends.functional.filters import gaussian_blur
from backends.functional.optim import Adam  # torch.optim's first use costs ~1 s: see its docstring
from backends.functional.tps import control_lattice, tps_grid
from backends.imaging import resize_long_side
from backends.jobs import FrameThrottle
from backends.layers import Result, complete
from backends.ops._spatial_transformer_panels import layers
from backends.ops._spatial_transformer_warp import (
    Registration,
    Sampled,
    Warp,
    content_theta,
    fold_map,
    target_theta,
)
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

THETA_NAMES = ("theta_11", "theta_12", "theta_13", "theta_21", "theta_22", "theta_23")
SAMPLING_INPUTS = ("align_corners", "interpolation", "padding")
TARGET_INPUTS = ("target_rotate", "target_scale", "target_tx", "target_ty", "align_corners")
AFFINE = (("warp", ("affine",)),)  # when a parameter does anything
COMPOSE = AFFINE + (("mode", ("compose",)),)
MATRIX = AFFINE + (("mode", ("matrix",)),)
TPS = (("warp", ("tps",)),)
FIT_BLUR = 4.0  # starting blur (fit pixels) of the coarse-to-fine schedule
FIT_LR = 0.01  # Adam step in normalized units (1 = half the frame)


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
            ChoiceParam("mode", "compose", ("compose", "matrix"), help="Affine from the controls below, or from the six theta entries.",
                        enabled_when=AFFINE),
            FloatParam("rotate", 20.0, -180.0, 180.0, step=1.0, help="Turn the content counter-clockwise about the centre, degrees.",
                       enabled_when=COMPOSE),
            FloatParam("scale", 0.85, 0.25, 4.0, step=0.01, help="Scale the content about the centre.", enabled_when=COMPOSE),
            FloatParam("shear", 0.0, -1.0, 1.0, step=0.01, help="Shear the content: x moves by shear * (y - centre).", enabled_when=COMPOSE),
            FloatParam("translate_x", 0.05, -1.0, 1.0, step=0.01, help="Shift the content right, as a fraction of the width.",
                       enabled_when=COMPOSE),
            FloatParam("translate_y", 0.0, -1.0, 1.0, step=0.01, help="Shift the content down, as a fraction of the height.",
                       enabled_when=COMPOSE),
            FloatParam("theta_11", 1.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 1 (x_in = t11 x + t12 y + t13, normalized).",
                       enabled_when=MATRIX),
            FloatParam("theta_12", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 1.", enabled_when=MATRIX),
            FloatParam("theta_13", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 1 (shift).", enabled_when=MATRIX),
            FloatParam("theta_21", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 2 (y_in = t21 x + t22 y + t23).",
                       enabled_when=MATRIX),
            FloatParam("theta_22", 1.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 2.", enabled_when=MATRIX),
            FloatParam("theta_23", 0.0, -3.0, 3.0, step=0.01, help="matrix mode: theta row 2 (shift).", enabled_when=MATRIX),
            ChoiceParam("tps_points", "9", ("4", "9", "16"), help="Control points of the spline, on a square lattice with the corners.",
                        enabled_when=TPS),
            FloatParam("tps_jitter", 0.06, 0.0, 0.25, step=0.01, help="Random displacement of the targets, as a fraction of the frame.",
                       enabled_when=TPS),
            SeedParam("tps_seed", 0, help="Seed of the target jitter.", enabled_when=TPS),
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
                   "with a coarse-to-fine blur; starts from the current transform. The fitted values show in the "
                   "metrics and the output's caption; the sliders keep their own."),
            Action("reset", "Forget clicks and fits", help="Forget clicked and fitted TPS targets and the fitted affine.",
                   instant=True),
        ),
        primary="Warped output",
    )
    memo_capacity = 16
    edit = "warp"

    def __init__(self) -> None:
        super().__init__()
        self._moved: dict[int, tuple[float, float]] = {}  # TPS control index -> target, normalized
        self._moved_key: tuple = ()
        self._last_query: Query = None
        self._fit: Registration | None = None

    def reset_state(self) -> None:
        super().reset_state()
        self._moved.clear()
        self._fit = None

    # -- run ---------------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        ac, interp, pad = params["align_corners"], params["interpolation"], params["padding"]
        self._bind_targets(params)
        self._follow_click(query, params, w, h)
        with timer("warp"):
            warp = self._warp(image, params)
            grid = self.memo.stage("grid", params, ("align_corners",), lambda: warp.grid(h, w, ac, image), extra=warp.key)
            sampled = self.memo.stage("warped", params, SAMPLING_INPUTS, extra=warp.key, compute=lambda: Sampled(
                spatial_transform(image, grid, interp, pad, ac)[0].permute(1, 2, 0)))
        target = self.memo.stage("target", params, TARGET_INPUTS, lambda: affine_transform(
            image, target_theta(params, w, h)[None], "bilinear", "zeros", ac)[0].permute(1, 2, 0))
        fit = self._valid_fit(params)
        folds = self.memo.stage("folds", params, ("align_corners",), lambda: fold_map(warp, grid, image, ac), extra=warp.key)

        def with_inverse() -> Result:
            with timer("inverse"):
                if sampled.back is None and warp.singular:  # no inverse: a black frame, captioned so
                    sampled.back = torch.zeros_like(sampled.shown)
                elif sampled.back is None:
                    back_grid = warp.inverse_grid(h, w, ac, image)
                    sampled.back = spatial_transform(sampled.shown.permute(2, 0, 1)[None], back_grid, interp, pad, ac)[0].permute(1, 2, 0)
            return Result(layers((w, h), params, warp, sampled.shown, sampled.back, target, fit, folds, FIT_BLUR,
                                 timer.metrics()))

        if sampled.back is not None:
            return with_inverse()
        # A warp change: the output, grid and quadrilateral now, the inverse map once the sliders rest.
        fast = layers((w, h), params, warp, sampled.shown, None, target, fit, folds, FIT_BLUR, timer.metrics())
        return Result(fast, settle=with_inverse, pending=("Inverse map",))

    def full_resolution(self, live: torch.Tensor, full: torch.Tensor, params: Mapping[str, Any], query: Query) -> torch.Tensor:
        """The live warp (clicked, fitted) evaluated at every pixel of ``full``: its map is in
        normalized coordinates, so this grid is the live one upscaled, without interpolating it."""
        ac = params["align_corners"]
        grid = self._warp(live, params).grid(full.shape[2], full.shape[3], ac, full)
        return spatial_transform(full, grid, params["interpolation"], params["padding"], ac)

    def _bind_targets(self, params: Mapping[str, Any]) -> None:
        """Clicked and fitted TPS targets belong to one image and one lattice size."""
        key = (self.image_key, params["tps_points"])
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
        point = points_to_normalized(torch.tensor([float(query[0]), float(query[1])], dtype=torch.float64), w, h,
                                     params["align_corners"])
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
        fit = self._valid_fit(params)
        if fit is not None:
            return Warp(theta=fit.theta.detach().double())
        if params["mode"] == "matrix":
            return Warp(theta=torch.tensor([params[n] for n in THETA_NAMES], dtype=torch.float64).view(2, 3))
        return Warp(theta=content_theta(params, w, h))

    def _valid_fit(self, params: Mapping[str, Any]) -> Registration | None:
        fit = self._fit
        return fit if fit is not None and fit.key == self._fit_key(params) else None

    def _fit_key(self, params: Mapping[str, Any]) -> tuple:
        """What a fit depends on (its start, its target, its image); changing any of it shows no fit."""
        ignored = ("interpolation", "padding", "fit_steps", "fit_lr", "tps_jitter", "tps_seed")
        return (self.image_key,) + tuple(v for k, v in sorted(params.items()) if k not in ignored)

    # -- jobs --------------------------------------------------------------------------------------
    def job_reset(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        self.reset_state()
        yield JobUpdate(1.0, "clicked and fitted targets forgotten", complete(self.run(image, params, query)))

    def job_fit(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Adam on theta or the TPS targets, bilinear, zeros outside, at ``fit_size``, from the
        current transform; the blur shrinks to zero over the first 70% so far misfits still see
        a gradient. Normalized coordinates make theta the same at every resolution."""
        self._bind_targets(params)
        small = resize_long_side(image, int(params["fit_size"]), minimum=8, antialias=True)
        sh, sw = small.shape[2:]
        ac = params["align_corners"]
        target = affine_transform(small, target_theta(params, sw, sh)[None], "bilinear", "zeros", ac)
        start = self._warp(image, params)
        tps = params["warp"] == "tps"
        var = (start.targets if tps else start.theta).to(image.device, image.dtype).clone().requires_grad_(True)
        controls = start.controls.to(image.device, image.dtype) if tps else None
        self._fit = Registration(self._fit_key(params), None if tps else var)
        opt = Adam([var], lr=FIT_LR * float(params["fit_lr"]))
        steps, throttle = int(params["fit_steps"]), FrameThrottle()
        for i in range(steps):
            sigma = FIT_BLUR * max(0.0, 1.0 - i / (0.7 * steps))
            timer = StageTimer()
            with timer("fit step"), torch.enable_grad():  # the worker thread runs with autograd off
                grid = tps_grid(controls, var, (sh, sw), ac) if tps else F.affine_grid(var[None], [1, 3, sh, sw], align_corners=ac)
                out = spatial_transform(gaussian_blur(small, sigma), grid, "bilinear", "zeros", ac)
                loss = F.mse_loss(out, gaussian_blur(target, sigma))
                opt.zero_grad()
                loss.backward()
                opt.step()
            self._fit.losses.append(float(loss))
            self._fit.step_ms = timer.ms["fit step"]
            if tps:
                self._moved = {j: (float(x), float(y)) for j, (x, y) in enumerate(var.detach().tolist())}
            result = throttle.frame(lambda: complete(self.run(image, params, query)), last_step=i == steps - 1)
            yield JobUpdate((i + 1) / steps, f"step {i + 1}/{steps} · loss {float(loss):.3g}", result)
