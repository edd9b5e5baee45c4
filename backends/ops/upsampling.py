"""The upsampling lab: transposed convolution (kernel, stride, padding, output padding,
dilation), max unpooling with a max pool's indices, nearest and bilinear resize, resize then
convolve, and pixel shuffle (sub-pixel convolution), all on the same image reduced by the stride.

Panels: the chosen method's output, every output side by side, the tap-count map that explains
checkerboard artifacts, each output's spectrum with its energy at the stride's alias
frequencies, and where one clicked input pixel goes. Cores: :mod:`backends.functional.upsampling`;
methods: ``_upsampling_methods``; panels: ``_upsampling_panels``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from backends.functional.upsampling import phase_sums, spectrum_summary, transposed_output_size
from backends.imaging import long_side_size, luminance, resize
from backends.layers import MetricsLayer, Result
from backends.ops._upsampling_methods import (
    KERNEL_METHODS,
    KERNELS,
    METHOD_INPUTS,
    METHODS,
    Inputs,
    impulse_response,
    make_inputs,
    make_kernel2d,
    overlap_window,
    run_method,
)
from backends.ops._upsampling_panels import (
    all_outputs_layer,
    energy_layer,
    output_layer,
    overlap_layer,
    scatter_layer,
    spectra_layer,
    spectrum_picture,
)
from backends.params import ChoiceParam, IntParam, ParamError, SeedParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

__all__ = ["Upsampling", "METHODS", "REFERENCE_SIDE"]

REFERENCE_SIDE = 256  # outputs have the longer side at most this; the input is that reduced by the stride
TRANSPOSED = (("method", ("transposed",)),)
OVERLAP_INPUTS = ("kernel_size", "stride", "padding", "output_padding", "dilation")
ALL_INPUTS = tuple(sorted({name for names in METHOD_INPUTS.values() for name in names}))


@register
class Upsampling(Operator):
    spec = OperatorSpec(
        name="upsampling",
        title="Upsampling lab",
        family="Convolution",
        description=(
            "Six ways to make an image s times larger: transposed convolution, max unpooling, nearest, bilinear, "
            "resize then convolve, and pixel shuffle. See where checkerboard artifacts come from: how many kernel "
            "taps land on each output pixel, and the energy each output puts at the stride's alias frequencies. "
            "Click to see where one input pixel goes."
        ),
        params=(
            ChoiceParam("method", "transposed", METHODS, help="The method shown large and traced in the scatter panel."),
            IntParam("stride", 2, 1, 4, help="s: the upsampling factor (the transposed convolution's stride); the "
                     "input is the image reduced s times."),
            IntParam("kernel_size", 3, 1, 7, help="k: taps per side of the transposed, resize-convolve and pixel "
                     "shuffle kernels. With k = 3 and s = 2 the taps overlap unevenly: a checkerboard."),
            ChoiceParam("kernel", "box", KERNELS, help="The kernel's weights: box (all equal), bilinear (FCN's tent) "
                        "or random (seeded, positive).", enabled_when=(("method", KERNEL_METHODS),)),
            IntParam("padding", 1, 0, 3, help="p: rows and columns the transposed convolution crops from each side.",
                     enabled_when=TRANSPOSED),
            IntParam("output_padding", 1, 0, 3, help="q: rows and columns added at the bottom and right, to hit an "
                     "exact size (less than the stride or the dilation).", enabled_when=TRANSPOSED),
            IntParam("dilation", 1, 1, 3, help="d: spacing of the kernel's taps.",
                     enabled_when=(("method", ("transposed", "pixel shuffle")),)),
            SeedParam("seed", 0, help="Seed of the random kernel.", enabled_when=(("kernel", ("random",)),)),
        ),
        primary="Output",
        tabs=(("outputs", ("All outputs", "Scatter of one input pixel")),
              ("checkerboard", ("Kernel overlap", "Spectra", "Checkerboard energy")),
              ("numbers", ("Metrics",))),
    )
    memo_capacity = 72  # every kernel size 1..7 with its methods and spectra (8 entries each), plus the rest

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, H, W = image.shape
        s, k, d = int(params["stride"]), int(params["kernel_size"]), int(params["dilation"])
        p, q, method = int(params["padding"]), int(params["output_padding"]), params["method"]
        if not q < max(s, d):
            raise ParamError(f"output_padding: {q} must be smaller than the stride {s} or the dilation {d}")
        with timer("inputs"):
            inputs = self.memo.stage("inputs", params, ("stride",), lambda: _inputs(image, s))
        h, w = inputs.low.shape[-2:]
        for n in (h, w):
            if transposed_output_size(n, k, s, p, q, d) < 1:
                raise ParamError(f"padding: {p} leaves the transposed convolution of a {w}x{h} input no output")
        size = tuple(inputs.reference.shape[-2:])
        stage = self.memo.stage

        def method_result(m: str) -> MethodResult:
            return stage(f"method {m}", params, METHOD_INPUTS[m], lambda: _method(m, inputs, params))

        def spectrum_of(m: str) -> Spectrum:  # only the settled panels read it: not in a fast frame
            return stage(f"spectrum {m}", params, METHOD_INPUTS[m],
                         lambda: _spectrum(method_result(m), int(params["stride"]), size))

        with timer("chosen method"):
            chosen = method_result(method)
        qx, qy = query_point(query, W, H)
        pixel = (min(w - 1, int((qx + 0.5) * w / W)), min(h - 1, int((qy + 0.5) * h / H)))
        with timer("scatter"):
            response = impulse_response(method, inputs, params, pixel)
        window = stage("overlap", params, OVERLAP_INPUTS, lambda: overlap_window(k, s, p, q, d))
        sums = phase_sums(make_kernel2d(params["kernel"], k, float(s * s), params["seed"]), s, d)
        out = chosen.output
        extent = (0.0, 0.0, W * out.shape[-1] / size[1], H * out.shape[-2] / size[0])
        output = output_layer(method, chosen.shown, extent, _detail(method, params), chosen.saturated)
        overlap = overlap_layer(window, k, s, d, sums)
        scatter = scatter_layer(method, response, chosen.shown, pixel, s)
        rows = {
            "input (reduced image)": f"{w} x {h}",
            "reference (full resolution)": f"{size[1]} x {size[0]}",
            f"{method} output": f"{out.shape[-1]} x {out.shape[-2]}",
            "transposed output rows (n-1)s - 2p + d(k-1) + q + 1": transposed_output_size(h, k, s, p, q, d),
            "transposed taps per output pixel": " / ".join(str(int(v)) for v in window.counts.unique()),
        }

        def complete() -> Result:
            with timer("other methods + spectra"):
                results = {m: method_result(m) for m in METHODS}
                spectra = {m: spectrum_of(m) for m in METHODS}
                fractions = {m: r.fraction for m, r in spectra.items()}
                # The panels of every method change only with a parameter some method reads (not the method shown).
                shared = stage("all methods", params, ALL_INPUTS, lambda: (
                    all_outputs_layer({m: r.luma.clamp(0, 1) for m, r in results.items()}, size),
                    spectra_layer({m: r.picture for m, r in spectra.items()}, fractions, s),
                    energy_layer(fractions, s)))
            return Result((output, shared[0], overlap, shared[1], shared[2], scatter, MetricsLayer("Metrics", {
                **rows, **{f"alias energy, {m}": f"{fractions[m]:.2%}" for m in METHODS},
                "clicked input pixel": f"({pixel[0]}, {pixel[1]})", **timer.metrics()})))

        if all(self.memo.stage_key(f"{part} {m}", params, METHOD_INPUTS[m]) in self.memo
               for m in METHODS for part in ("method", "spectrum")):
            return complete()
        # Six methods and their spectra at once cost 20-50 ms the first time a value is seen: the
        # chosen method's output comes at once (its spectrum too, 1.5-2 ms, waits), every method's
        # panels and alias energies when the slider rests.
        return Result((output, overlap, scatter, MetricsLayer("Metrics", {
            **rows, "clicked input pixel": f"({pixel[0]}, {pixel[1]})", **timer.metrics()})),
            settle=complete, pending=("All outputs", "Spectra", "Checkerboard energy"))


def _inputs(image: torch.Tensor, s: int) -> Inputs:
    size = long_side_size(image.shape[-2], image.shape[-1], REFERENCE_SIDE, multiple=s)
    return make_inputs(resize(image, size), s)


@dataclass(frozen=True)
class MethodResult:
    """One method's output (1, C, H, W), as shown ((H, W, C) in [0, 1]), its luma (1, 1, H, W),
    unclipped, and the share of pixels above 1."""

    output: torch.Tensor
    shown: torch.Tensor
    luma: torch.Tensor
    saturated: float


@dataclass(frozen=True)
class Spectrum:
    """A method's luma spectrum as the spectra panel draws it, and its alias energy share."""

    picture: torch.Tensor
    fraction: float


def _method(method: str, inputs: Inputs, params: Mapping[str, Any]) -> MethodResult:
    try:
        out = run_method(method, inputs, params)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    grey = luminance(out)
    return MethodResult(out, out[0].clamp(0, 1).permute(1, 2, 0), grey, float((out > 1.0).any(1).float().mean()))


def _spectrum(result: MethodResult, stride: int, size: tuple[int, int]) -> Spectrum:
    spectrum, fraction = spectrum_summary(result.luma[0, 0], stride)
    return Spectrum(spectrum_picture(spectrum.float(), size), fraction)


def _detail(method: str, params: Mapping[str, Any]) -> str:
    s = params["stride"]
    if method == "transposed":
        return (f"{params['kernel']} kernel k = {params['kernel_size']}, stride {s}, padding {params['padding']}, "
                f"output padding {params['output_padding']}, dilation {params['dilation']}")
    if method == "pixel shuffle":
        return f"phases of the {params['kernel']} kernel k = {params['kernel_size']}, dilation {params['dilation']}, x{s}"
    if method == "resize + conv":
        return f"{params['kernel']} kernel k = {params['kernel_size']}, x{s}"
    return f"x{s}"
