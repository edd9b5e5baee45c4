"""Deformable convolution (v1 and v2): every tap of every output pixel reads the input at its
regular position plus an offset, bilinearly; v2 also scales each tap by a modulation mask.
The core is :func:`backends.functional.deformable.deform_conv2d`; analytic warps take the
one-resampled-image path of :mod:`backends.functional.global_warp`."""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from backends.functional.deformable import deform_conv2d, modulated_depthwise, sample_taps, sampling_grid
from backends.functional.filters import gaussian_blur, structure_tensor
from backends.functional.global_warp import (
    DisplacementOffsets,
    depthwise_conv,
    depthwise_window_sum,
    global_warp_taps,
    resample_widened,
)
from backends.functional.kernels import NONNEGATIVE, make_kernel
from backends.functional.optim import Adam  # torch.optim's first use costs ~1 s: see its docstring
from backends.imaging import luminance, resize_long_side
from backends.jobs import FrameThrottle
from backends.layers import CurveLayer, MetricsLayer, Result
from backends.ops._deformable_offsets import (
    FIT_INPUTS,
    GLOBAL_WARPS,
    OFFSET_SOURCES,
    LearnedOffsets,
    bilateral_mask,
    edge_offsets,
    fit_key,
    fit_target,
    random_offsets,
    swirl_falloff,
    warp_field,
)
from backends.ops._deformable_panels import (
    Pieces,
    display,
    image_layer,
    metrics,
    modulation,
    offset_field,
    sampling_points,
    symmetric_levels,
)
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

KERNELS = ("gaussian", "box", "identity", "sobel_x", "sobel_y", "laplacian")
REGULAR_INPUTS = ("kernel", "kernel_size", "dilation")
DEFORM_INPUTS = ("kernel", "version", "mask_sigma")
FIT_CELL = 8  # fit pixels per cell of the coarse offset lattice: smooth fields, pooled gradients
FIT_BLUR = 3.0  # starting blur (fit pixels) of the coarse-to-fine schedule

ANALYTIC = tuple(s for s in OFFSET_SOURCES if s != "learned")  # offsets made from the parameters, not fitted
LEARNED = (("offsets", ("learned",)),)  # the fit's parameters do something only then
Field = tuple[torch.Tensor, torch.Tensor]  # a global warp's (dx, dy) on the widened grid


@register
class DeformableConvolution(Operator):
    spec = OperatorSpec(
        name="deformable",
        title="Deformable convolution",
        family="Convolution",
        description=(
            "Each tap of each output pixel reads the input at its regular place plus an offset, bilinearly "
            "(v2 also weighs each tap by a modulation mask). Offsets come from a global warp about the clicked "
            "pixel, from the image's edges, or from a live fit that learns them with Adam."
        ),
        params=(
            ChoiceParam("offsets", "swirl", OFFSET_SOURCES, help="Where offsets come from: a warp (swirl, zoom, rotate about the query; shear), smooth random fields, edge orientation, or the fit."),
            FloatParam("strength", 0.6, -1.0, 1.0, step=0.05, help="Amount of the warp or random field; for edges, how much taps stretch along the edge.",
                       enabled_when=(("offsets", ANALYTIC),)),
            SeedParam("seed", 0, help="Seed of the random offsets.", enabled_when=(("offsets", ("random",)),)),
            ChoiceParam("version", "v1", ("v1", "v2"), help="v2 weighs each tap by a modulation mask: colour similarity to the centre for the analytic offsets, learned by the fit."),
            FloatParam("mask_sigma", 0.15, 0.02, 1.0, step=0.01, help="v2: colour distance at which a tap's weight falls to 0.6.",
                       enabled_when=(("version", ("v2",)), ("offsets", ANALYTIC))),
            ChoiceParam("kernel", "gaussian", KERNELS, help="The depthwise kernel applied to each RGB channel."),
            ChoiceParam("kernel_size", "3", ("3", "5"), help="Taps per side."),
            IntParam("dilation", 2, 1, 8, help="Spacing of the regular taps, before offsets."),
            ChoiceParam("arrows", "auto", ("auto", "mean offset", "centre tap", "tap pattern"), help="Offset field view: mean or centre-tap offset per pixel, or each pixel's taps enlarged with an arrow to where each reads; auto picks tap pattern for edges."),
            FloatParam("arrow_scale", 1.0, 0.1, 5.0, step=0.1, help="Arrow length factor; 1 shortens arrows only when they would overlap."),
            FloatParam("fit_rotate", 15.0, -45.0, 45.0, step=1.0, help="Fit target: the image turned by this many degrees about its centre...",
                       enabled_when=LEARNED),
            FloatParam("fit_scale", 1.15, 0.5, 2.0, step=0.01, help="...scaled by this factor...", enabled_when=LEARNED),
            FloatParam("fit_shear", 0.0, -0.5, 0.5, step=0.01, help="...and sheared by this amount, then convolved with the kernel.",
                       enabled_when=LEARNED),
            IntParam("fit_steps", 200, 10, 2000, step=10, help="Adam steps of the fit.", enabled_when=LEARNED),
            FloatParam("fit_lr", 1.0, 0.01, 5.0, step=0.05, help="Adam learning rate, in pixels of offset per step.", enabled_when=LEARNED),
            ChoiceParam("fit_size", "128", ("64", "96", "128", "192", "256"), help="Long side, in pixels, at which the fit runs.",
                        enabled_when=LEARNED),
        ),
        actions=(
            Action("fit", "fit", help="Learn offsets (and the v2 mask) with Adam so the deformable output matches the kernel "
                   "applied to the rotated, scaled, sheared image. Set offsets to 'learned' first."),
        ),
        primary="Deformable output",
        # Tabs (above six docks: learned offsets with v2) name the panels every mode has; the
        # modulation and the fit's panels join them by theme.
        tabs=(("offsets", ("Offset field", "Sampling points")), ("comparison", ("Regular convolution",)),
              ("numbers", ("Metrics",))),
    )
    memo_capacity = 24
    edit = "resized"

    def __init__(self) -> None:
        super().__init__()
        self._fit: Optional[LearnedOffsets] = None

    def reset_state(self) -> None:
        super().reset_state()
        self._fit = None

    # -- run ---------------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        q = query_point(query, w, h)
        kernel = _kernel(params, image)
        fit = self._valid_fit(params)
        inputs, extra = _offset_inputs(params, q, fit)
        stage = self.memo.stage
        with timer("offsets"):
            field = stage("warp", params, inputs, lambda: self._field(image, params, q), extra) \
                if params["offsets"] in GLOBAL_WARPS else None
            offsets = stage("offsets", params, inputs, lambda: self._offsets(image, params, fit, field), extra)
        deform_inputs = inputs + DEFORM_INPUTS
        with timer("deformable"):
            deformed, mask = stage("deformed", params, deform_inputs,
                                   lambda: _deform(image, offsets, kernel, params, fit, field), extra)
        with timer("regular"):
            regular = stage("regular", params, REGULAR_INPUTS, lambda: depthwise_conv(image, kernel, int(params["dilation"])))
        levels = None if params["kernel"] in NONNEGATIVE else stage("levels", params, REGULAR_INPUTS, lambda: symmetric_levels(regular))
        # Display tensors are stages too: a kept one converts to the same array, so no redraw.
        pieces = Pieces(offsets, mask, stage("deformed shown", params, deform_inputs, lambda: display(deformed, levels), extra),
                        stage("regular shown", params, REGULAR_INPUTS, lambda: display(regular, levels)), levels)
        return Result(self._layers(image, pieces, params, q, fit, timer.metrics()))

    def _valid_fit(self, params: Mapping[str, Any]) -> Optional[LearnedOffsets]:
        fit = self._fit
        return fit if fit is not None and fit.image_key == self.image_key and fit.key == fit_key(params) else None

    def _field(self, image: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int]) -> Field:
        """A global warp's displacement on the widened grid, which every tap of every pixel reads."""
        _, _, h, w = image.shape
        k, d, src = int(params["kernel_size"]), int(params["dilation"]), params["offsets"]
        reach = d * (k // 2)
        envelope = None
        if src == "swirl":  # the fall-off depends on the query, not the strength: keep it
            envelope = self.memo.stage("swirl envelope", params, ("kernel_size", "dilation"),
                                       lambda: swirl_falloff(q, h, w, reach, image.device), extra=q)
        return warp_field(src, float(params["strength"]), q, h, w, reach, image.device, envelope)

    def _offsets(self, image: torch.Tensor, params: Mapping[str, Any], fit: Optional[LearnedOffsets],
                 field: Optional[Field]) -> torch.Tensor:
        _, _, h, w = image.shape
        k, d, src = int(params["kernel_size"]), int(params["dilation"]), params["offsets"]
        if field is not None:  # the views read a strided subset: made only there
            return DisplacementOffsets(*field, k, d)
        if src == "learned":
            return fit.offsets_at(h, w) if fit else image.new_zeros(1, 2 * k * k, h, w)
        if src == "random":  # linear in strength: upsample the unit field once per seed
            unit = self.memo.stage("random unit", params, ("seed", "kernel_size", "dilation"),
                                   lambda: random_offsets(params["seed"], h, w, k, d, image.device))
            return unit * float(params["strength"])
        if src == "edges":
            angle, coherence = self.memo.stage("structure", params, (), lambda: structure_tensor(luminance(image)))
            return edge_offsets(angle, coherence, float(params["strength"]), k, d)
        raise ValueError(f"unknown offsets {src!r}; one of {', '.join(OFFSET_SOURCES)}")

    # -- the live fit ------------------------------------------------------------------------------
    def _problem(self, image: torch.Tensor, params: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(small image, target) at the fit resolution: target = kernel * (small warped by the fit_* map)."""
        def build() -> tuple[torch.Tensor, torch.Tensor]:
            small = resize_long_side(image, int(params["fit_size"]), minimum=8, antialias=True)
            return small, fit_target(small, params, _kernel(params, image))

        return self.memo.stage("problem", params, FIT_INPUTS, build)

    def job_fit(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Adam on a coarse lattice of offsets (and v2 mask logits) at ``fit_size``; the blur of
        input and target shrinks to zero over the first 60% so far misfits still see a gradient."""
        if params["offsets"] != "learned":
            raise ParamError("the fit learns the offsets: set offsets to 'learned' first")
        return self._fit_steps(image, params, query)

    def _fit_steps(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        small, target = self._problem(image, params)
        h, w = small.shape[2:]
        k, d = int(params["kernel_size"]), int(params["dilation"])
        weight = _kernel(params, image).view(1, 1, k, k).expand(3, 1, k, k)
        lattice = (max(2, -(-h // FIT_CELL) + 1), max(2, -(-w // FIT_CELL) + 1))
        offsets = image.new_zeros(1, 2 * k * k, *lattice).requires_grad_(True)
        logits = image.new_zeros(1, k * k, *lattice).requires_grad_(True) if params["version"] == "v2" else None
        state = LearnedOffsets(fit_key(params), self.image_key, (h, w), offsets, logits)
        self._fit = state
        opt = Adam([t for t in (offsets, logits) if t is not None], lr=float(params["fit_lr"]))
        steps, throttle = int(params["fit_steps"]), FrameThrottle()
        pad = d * (k - 1) // 2
        q = query_point(query, image.shape[3], image.shape[2])
        for i in range(steps):
            sigma = FIT_BLUR * max(0.0, 1.0 - i / (0.6 * steps))  # coarse to fine: reach far, then sharpen
            timer = StageTimer()
            with timer("fit step"), torch.enable_grad():  # the worker thread runs with autograd off
                off, mask = state.offsets_at(h, w, differentiable=True), state.mask_at(h, w, differentiable=True)
                out = deform_conv2d(gaussian_blur(small, sigma), off, weight, padding=pad, dilation=d, mask=mask)
                loss = F.mse_loss(out, gaussian_blur(target, sigma))
                opt.zero_grad()
                loss.backward()
                opt.step()
            state.losses.append(float(loss))
            frame = partial(self._fit_frame, image, small, params, q, state, weight, timer.metrics())
            result = throttle.frame(frame, last_step=i == steps - 1)
            yield JobUpdate((i + 1) / steps, f"step {i + 1}/{steps} · loss {float(loss):.3g}", result)

    def _fit_frame(self, image: torch.Tensor, small: torch.Tensor, params: Mapping[str, Any], q: tuple[int, int],
                   state: LearnedOffsets, weight: torch.Tensor, timings: dict[str, float]) -> Result:
        """The panels at the fit resolution, from the fit's current offsets (not memoized)."""
        h, w = small.shape[2:]
        k, d = int(params["kernel_size"]), int(params["dilation"])
        off, mask = state.offsets_at(h, w), state.mask_at(h, w)
        out = deform_conv2d(small, off, weight, padding=d * (k - 1) // 2, dilation=d, mask=mask)
        regular = depthwise_conv(small, weight[0, 0].reshape(-1), d)
        levels = None if params["kernel"] in NONNEGATIVE else symmetric_levels(regular)
        pieces = Pieces(off, mask, display(out, levels), display(regular, levels), levels)
        return Result(self._layers(image, pieces, params, q, state, timings))

    # -- panels ------------------------------------------------------------------------------------
    def _layers(self, image: torch.Tensor, pieces: Pieces, params: Mapping[str, Any], q: tuple[int, int],
                fit: Optional[LearnedOffsets], timings: dict[str, float]) -> tuple:
        """Panels from ``pieces`` computed at a working size, placed on the input frame (W, H)."""
        frame, work = (image.shape[3], image.shape[2]), pieces.work
        extent = None if work == frame else (0.0, 0.0, float(frame[0]), float(frame[1]))
        name, k, d = params["kernel"], int(params["kernel_size"]), int(params["dilation"])
        where = f" (fit preview at {work[0]}x{work[1]})" if extent else ""
        version = "v1 (no modulation: every tap weighs 1)" if params["version"] == "v1" else "v2 (taps weighed by the mask)"
        layers = [
            image_layer("Deformable output", pieces.deformed, pieces.levels, extent,
                        f"{name} {k}x{k}, dilation {d}, {params['offsets']} offsets, {version}{where}"),
            image_layer("Regular convolution", pieces.regular, pieces.levels, extent, f"the same kernel on the regular grid{where}"),
            offset_field(pieces.offsets, params, frame, work),
            sampling_points(pieces.offsets, pieces.mask, params, q, frame, work),
        ]
        top = 2.0 if params["offsets"] == "learned" else 1.0  # a learned mask is 2 sigmoid: 1 at the start
        mask_layer = modulation(pieces.mask, q, frame, work, top, extent)
        layers += [mask_layer] if mask_layer is not None else []
        if params["offsets"] == "learned":
            layers += self._fit_panels(image, params, pieces.levels, fit)
        values = metrics(pieces, params, q, frame, params["offsets"] in GLOBAL_WARPS)
        if fit is not None and fit.losses:
            values.update({"fit steps": len(fit.losses), "fit loss": f"{fit.losses[-1]:.3g}", "fit size": f"{fit.fit_hw[1]}x{fit.fit_hw[0]}"})
        layers.append(MetricsLayer("Metrics", {**values, **timings}))
        return tuple(layers)

    def _fit_panels(self, image: torch.Tensor, params: Mapping[str, Any], levels, fit: Optional[LearnedOffsets]) -> list:
        th, tw = self._problem(image, params)[0].shape[2:]
        shown = self.memo.stage("target shown", params, FIT_INPUTS,
                                lambda: display(fit_target(image, params, _kernel(params, image)), levels), extra=levels)
        losses = fit.losses if fit else []
        steps = np.arange(1, len(losses) + 1, dtype=np.float32)
        return [
            image_layer("Fit target", shown, levels, None,
                        f"kernel on the image turned {params['fit_rotate']:g} deg, scaled {params['fit_scale']:g}, "
                        f"sheared {params['fit_shear']:g}; the fit runs at {tw}x{th}"),
            CurveLayer("Fit loss", {"MSE": (steps, np.asarray(losses, np.float32))}, "step", "loss", log_y=bool(losses),
                       caption=f"{len(losses)} Adam steps, blur {FIT_BLUR:g} px to 0 over 60%" if losses else "press Start fit"),
        ]


def _kernel(params: Mapping[str, Any], image: torch.Tensor) -> torch.Tensor:
    """The chosen kernel as (K,) on the image's device, row-major taps."""
    return torch.from_numpy(make_kernel(params["kernel"], int(params["kernel_size"]))).to(image.device, image.dtype).reshape(-1)


def _offset_inputs(params: Mapping[str, Any], q: tuple[int, int], fit: Optional[LearnedOffsets]) -> tuple[tuple[str, ...], tuple]:
    """The parameters and other values the offsets of the chosen source depend on."""
    src = params["offsets"]
    inputs = ("offsets", "kernel_size", "dilation")
    if src == "learned":
        return inputs, ((fit.serial, len(fit.losses)) if fit else None,)
    inputs += ("strength",)
    if src == "random":
        return inputs + ("seed",), ()
    return inputs, (q,) if src in GLOBAL_WARPS else ()


def _deform(image: torch.Tensor, offsets: torch.Tensor, kernel: torch.Tensor, params: Mapping[str, Any],
            fit: Optional[LearnedOffsets], field: Optional[Field]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(deformed output, v2 mask or None). A global warp reads every tap from one resampled image
    (equal to deform_conv2d, tested); v2 of the analytic sources weighs taps by colour similarity."""
    k, d = int(params["kernel_size"]), int(params["dilation"])
    pad = d * (k - 1) // 2
    weight = kernel.view(1, 1, k, k).expand(image.shape[1], 1, k, k)
    if field is not None:
        if params["version"] == "v1":
            return depthwise_window_sum(resample_widened(image, *field), kernel, d), None
        taps = global_warp_taps(image, *field, k, d)
        mask = bilateral_mask(taps, image, float(params["mask_sigma"]))
        return modulated_depthwise(taps, kernel, mask), mask
    if params["version"] == "v1":
        return deform_conv2d(image, offsets, weight, padding=pad, dilation=d), None
    if params["offsets"] == "learned":
        mask = fit.mask_at(*image.shape[2:]) if fit else torch.ones_like(offsets[:, : k * k])
        return deform_conv2d(image, offsets, weight, padding=pad, dilation=d, mask=mask), mask
    taps = sample_taps(image, sampling_grid(offsets, image.shape[2:], (k, k), (1, 1), (pad, pad), (d, d)), k * k)
    mask = bilateral_mask(taps, image, float(params["mask_sigma"]))
    return modulated_depthwise(taps, kernel, mask), mask
