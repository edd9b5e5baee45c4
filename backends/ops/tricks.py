"""Differentiable tricks: four ways to get a gradient where the plain operation has none or a
noisy one. The reparameterization trick against the score-function estimator (REINFORCE) for
d/dmu E[f(z)]; a soft argmax over a heatmap of the image against the hard argmax; a crop with a
soft two-dimensional boxcar whose edges get gradients; and a point drawn at a sub-pixel location
as a blur kernel read from a lookup table. The cores are :mod:`backends.functional.tricks`; the
panels are in ``_tricks_estimators``, ``_tricks_spatial`` and ``_tricks_delta``."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from backends.features import robust_max
from backends.functional.saliency_sampling import edge_energy
from backends.functional.tricks import FUNCTIONS
from backends.imaging import luminance
from backends.layers import MetricsLayer, Result
from backends.ops._tricks_delta import delta_layers, delta_study
from backends.ops._tricks_estimators import (
    MU_LIMIT,
    VARIANCE_PANEL,
    estimator_layers,
    estimator_study,
    variance_study,
)
from backends.ops._tricks_spatial import (
    SWEEP_PANEL,
    border_bias,
    hard_crop_study,
    soft_argmax_layers,
    soft_argmax_study,
    soft_crop_layers,
    soft_crop_study,
    temperature_sweep,
)
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

TRICKS = ("reparameterization", "soft argmax", "soft crop", "blurred delta")
ESTIMATOR_INPUTS = ("function", "mu", "sigma", "samples", "baseline", "seed")
ARGMAX_INPUTS = ("heatmap", "temperature", "window")
SWEEP_INPUTS = ("heatmap", "window")
SWEEP_AT_ONCE = 160 * 160  # window pixels up to which the temperature sweep is computed at once
CROP_INPUTS = ("box_width", "box_height", "sharpness")
DELTA_INPUTS = ("heatmap", "blur_sigma", "phases", "subpixel_x", "subpixel_y")
EDGE_BLUR = 2.0  # px: the edge-energy heatmap's smoothing


def _when(*tricks: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (("trick", tricks),)


@register
class Tricks(Operator):
    spec = OperatorSpec(
        name="tricks",
        title="Tricks for the non-differentiable",
        family="Differentiable tricks",
        description=(
            "Gradients where the plain operation has none: sampling (the reparameterization trick against the "
            "score function), argmax (a soft argmax), cropping (a soft boxcar) and drawing a point (a blurred delta "
            "from a lookup table). Click to place the window, the box or the point."
        ),
        params=(
            ChoiceParam("trick", "reparameterization", TRICKS, help="Which trick the panels show."),
            ChoiceParam("function", "square", FUNCTIONS, help="f in E[f(z)]: z^2, a bump exp(-z^2/2), or a step "
                        "(1 for z > 0), which autograd sees as flat.", enabled_when=_when("reparameterization")),
            FloatParam("mu", 0.8, -MU_LIMIT, MU_LIMIT, step=0.05, help="Mean of z, the parameter the gradient is taken for.",
                       enabled_when=_when("reparameterization")),
            FloatParam("sigma", 1.0, 0.1, 2.0, step=0.05, help="Standard deviation of z.",
                       enabled_when=_when("reparameterization")),
            IntParam("samples", 4000, 200, 40000, step=200, help="Draws of z.", enabled_when=_when("reparameterization")),
            BoolParam("baseline", False, help="Subtract from f the mean of the other draws (leave-one-out): the score "
                      "function's variance falls, its mean stays.", enabled_when=_when("reparameterization")),
            SeedParam("seed", 0, help="Seed of the draws.", enabled_when=_when("reparameterization")),
            ChoiceParam("heatmap", "brightness", ("brightness", "edges"), help="Scores the soft argmax and the point "
                        "read: the luma, or the edge energy.", enabled_when=_when("soft argmax", "blurred delta")),
            FloatParam("temperature", 0.05, 0.002, 1.0, step=0.002, help="Softmax temperature: the scores (0..1) are "
                       "divided by it; towards 0 the soft argmax becomes the hard one.", enabled_when=_when("soft argmax")),
            IntParam("window", 96, 16, 512, step=8, help="Side of the window around the clicked pixel the argmax "
                     "runs over, px.", enabled_when=_when("soft argmax")),
            IntParam("box_width", 160, 8, 512, step=4, help="Width of the crop box around the clicked pixel, px.",
                     enabled_when=_when("soft crop")),
            IntParam("box_height", 112, 8, 512, step=4, help="Height of the crop box, px.", enabled_when=_when("soft crop")),
            FloatParam("sharpness", 0.5, 0.05, 10.0, step=0.05, help="Slope of the boxcar's sigmoids, 1/px: its edges "
                       "blur over about 4 / sharpness px.", enabled_when=_when("soft crop")),
            FloatParam("blur_sigma", 1.0, 0.3, 4.0, step=0.05, help="Standard deviation of the blur kernel, px.",
                       enabled_when=_when("blurred delta")),
            ChoiceParam("phases", "4", ("1", "2", "4", "8", "32"), help="Entries of the lookup table per pixel; 1 is a "
                        "bilinear splat followed by the kernel at whole pixels.", enabled_when=_when("blurred delta")),
            FloatParam("subpixel_x", 0.3, 0.0, 0.99, step=0.01, help="The point's sub-pixel offset right of the clicked "
                       "pixel's centre, px.", enabled_when=_when("blurred delta")),
            FloatParam("subpixel_y", 0.65, 0.0, 0.99, step=0.01, help="The point's sub-pixel offset below the clicked "
                       "pixel's centre, px.", enabled_when=_when("blurred delta")),
        ),
        primary="Gradient estimates",
    )
    memo_capacity = 12

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        q = query_point(query, w, h)
        trick = params["trick"]
        if trick == "reparameterization":
            return self._estimators(params, timer)
        if trick == "soft argmax":
            return self._soft_argmax(image, params, q, timer)
        if trick == "soft crop":
            with timer("soft crop"):
                rgb = self.memo.stage("rgb", params, (), lambda: image[0].cpu())  # the panels are small: CPU
                grey = self.memo.stage("luma", params, (), lambda: luminance(image)[0, 0].cpu())
                study = self.memo.stage("soft crop", params, CROP_INPUTS, lambda: soft_crop_study(rgb, grey, params, q),
                                        extra=q)
            with timer("sharpness sweep"):
                hard = self.memo.stage("hard crop", params, ("box_width", "box_height"),
                                       lambda: hard_crop_study(grey, params, q), extra=q)
            layers, rows = soft_crop_layers(study, hard, params)
        else:
            heat = self._heat(image, params)
            with timer("blurred delta"):
                study = self.memo.stage("delta", params, DELTA_INPUTS, lambda: delta_study(heat, params, q), extra=q)
            layers, rows = delta_layers(study, params)
        return Result(layers + (MetricsLayer("Metrics", {**rows, **timer.metrics()}),))

    def _estimators(self, params: Mapping[str, Any], timer: StageTimer) -> Result:
        """The estimators' panels; the variance against draws settles when not cached (its plot
        is the fourth of a drag's frame: 3-4 ms of drawing)."""
        with timer("estimators"):
            study = self.memo.stage("estimators", params, ESTIMATOR_INPUTS, lambda: estimator_study(params))

        def with_variance() -> Result:
            with timer("variance"):
                spread = self.memo.stage("variance", params, ESTIMATOR_INPUTS, lambda: variance_study(study))
            layers, rows = estimator_layers(study, spread, params)
            return Result(layers + (MetricsLayer("Metrics", {**rows, **timer.metrics()}),))

        if self.memo.stage_key("variance", params, ESTIMATOR_INPUTS) in self.memo:
            return with_variance()
        layers, rows = estimator_layers(study, None, params)
        return Result(layers + (MetricsLayer("Metrics", {**rows, **timer.metrics()}),), settle=with_variance,
                      pending=(VARIANCE_PANEL,))

    def _soft_argmax(self, image: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int], timer: StageTimer) -> Result:
        """The soft argmax's panels; the error-against-temperature sweep (31 softmaxes over the
        window: 60 ms for a 512 px window on one core) settles when it is not cached and the window
        is large."""
        heat = self._heat(image, params)
        with timer("soft argmax"):
            study = self.memo.stage("soft argmax", params, ARGMAX_INPUTS, lambda: soft_argmax_study(heat, params, q),
                                    extra=q)
        _, _, ww, wh = study["window"]
        with timer("border bias"):
            bias = self.memo.stage("bias", params, ("temperature",), lambda: border_bias(ww, wh, params["temperature"]),
                                   extra=(ww, wh))

        def with_sweep() -> Result:
            with timer("temperature sweep"):
                sweep = self.memo.stage("sweep", params, SWEEP_INPUTS, lambda: temperature_sweep(heat, study["window"]),
                                        extra=q)
            layers, rows = soft_argmax_layers(study, sweep, bias, heat, params)
            return Result(layers + (MetricsLayer("Metrics", {**rows, **timer.metrics()}),))

        if ww * wh <= SWEEP_AT_ONCE or self.memo.stage_key("sweep", params, SWEEP_INPUTS, q) in self.memo:
            return with_sweep()
        layers, rows = soft_argmax_layers(study, None, bias, heat, params)
        return Result(layers + (MetricsLayer("Metrics", {**rows, **timer.metrics()}),), settle=with_sweep,
                      pending=(SWEEP_PANEL,))

    def _heat(self, image: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
        """(H, W) scores in [0, 1] on the CPU: the luma, or the edge energy over its robust maximum."""
        def make() -> torch.Tensor:
            grey = luminance(image)
            if params["heatmap"] == "brightness":
                return grey[0, 0].cpu()
            e = edge_energy(grey, EDGE_BLUR)[0, 0]
            return (e / robust_max(e, 0.999)).clamp(0, 1).cpu()
        return self.memo.stage("heat", params, ("heatmap",), make)
