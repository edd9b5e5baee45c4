"""Aliasing and texture sticking (StyleGAN3's point): translate the input by a fraction of a pixel,
run a small convolution stack, translate the output back, and compare with the output of the
untranslated input. A stack whose nonlinearities run at the pixel rate aliases, so the residual
is not zero; the same stack with StyleGAN3's filtered nonlinearities (upsample, leaky ReLU,
low-pass, downsample) nearly commutes with the translation. The cores are
:mod:`backends.functional.aliasing`."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from backends.features import robust_max
from backends.functional.aliasing import (
    FILTERS,
    conv_stack,
    equivariance_residual,
    psnr,
    random_stack,
    taper_to_mean,
)
from backends.imaging import luminance, resize
from backends.layers import CurveLayer, FeatureMapsLayer, HeatmapLayer, ImageLayer, MetricsLayer, Result
from backends.params import ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

CHANNELS = 8  # hidden channels of the stack
SWEEP = np.round(np.linspace(0.0, 1.0, 11), 2)  # shifts along x of the error curve, px
STACK_INPUTS = ("layers", "filter", "oversampling", "cutoff", "seed", "resolution")
FILTER_TITLES = {"ideal": "ideal", "sinc": "windowed sinc", "gaussian": "Gaussian"}
NAMES = ("Residual", "Shifted back", "Equivariance error")


@register
class Aliasing(Operator):
    spec = OperatorSpec(
        name="aliasing",
        title="Aliasing and texture sticking",
        family="Convolution",
        description=(
            "Shift the input by a fraction of a pixel, run a small convolution stack, shift the output back and "
            "compare with the output of the unshifted input. Leaky ReLUs at the pixel rate make harmonics that "
            "alias, so the stack does not commute with the shift (its details stick to the pixel grid); "
            "StyleGAN3's filtered nonlinearity (upsample, leaky ReLU, low-pass, downsample) nearly does."
        ),
        params=(
            FloatParam("shift_x", 0.3, 0.0, 1.0, step=0.01, help="Translation of the input to the right, in pixels "
                       "of the working grid (a Fourier shift: exact for a periodic, band-limited image)."),
            FloatParam("shift_y", 0.0, 0.0, 1.0, step=0.01, help="Translation of the input downwards, in pixels."),
            ChoiceParam("filter", "ideal", FILTERS, help="Low-pass around the filtered stack's nonlinearities: "
                        "ideal (a box in frequency), a Kaiser-windowed sinc of 6 taps per factor (StyleGAN3's) or a "
                        "Gaussian (response 1/2 at the cutoff)."),
            ChoiceParam("oversampling", "2", ("2", "4"), help="How much finer the grid the filtered nonlinearity "
                        "runs on; shifts by a multiple of 1 / oversampling px are whole pixels there."),
            FloatParam("cutoff", 1.0, 0.3, 1.0, step=0.05, help="Cutoff of the low-pass as a share of the pixel "
                       "Nyquist frequency; below 1 leaves room for what the nonlinearity adds."),
            IntParam("layers", 2, 1, 4, help="Nonlinear layers (3x3 convolution, leaky ReLU) before a last linear "
                     "convolution."),
            SeedParam("seed", 0, help="Seed of the stack's weights (the same for both stacks)."),
            ChoiceParam("resolution", "81", ("63", "81", "105", "135"), help="Long side of the working grid, "
                        "odd so the Fourier shift has no Nyquist term and shifting back undoes it exactly."),
        ),
        uses_query=False,
        primary="Residual",
    )
    memo_capacity = 16

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        stage = self.memo.stage
        dx, dy = float(params["shift_x"]), float(params["shift_y"])
        with timer("input"):
            x = stage("input", params, ("resolution",), lambda: working_input(image, int(params["resolution"])))
        stacks = stage("stacks", params, STACK_INPUTS, lambda: Stacks(params, x))
        with timer("unshifted"):
            refs = stage("references", params, STACK_INPUTS, lambda: (stacks.plain(x), stacks.filtered(x)))
        with timer("shifted"):
            shifted = stage("shifted", params, STACK_INPUTS + ("shift_x", "shift_y"),
                            lambda: tuple(equivariance_residual(f, x, dx, dy, r) for f, r in zip(stacks.both, refs)))
        fast = (_residual_layer(shifted, params, x), _back_layer(shifted, refs, params),
                ImageLayer("Working input", x[0, 0], levels=_range(x), colormap="CET-L1",
                           caption=f"the stacks' input: the image's luma at {x.shape[-1]}x{x.shape[-2]}, standardized, "
                                   "faded to its mean at the border so it tiles without a seam"))
        values = {**_metrics(shifted, refs, params, x), **timer.metrics()}

        def with_curve() -> Result:
            with timer("error curve"):
                curve = stage("curve", params, STACK_INPUTS + ("shift_y",), lambda: error_curve(stacks, x, refs, dy))
            return Result(fast[:2] + (_curve_layer(curve, params),) + fast[2:] +
                          (MetricsLayer("Metrics", {**values, **timer.metrics()}),))

        if self.memo.stage_key("curve", params, STACK_INPUTS + ("shift_y",)) in self.memo:
            return with_curve()
        # The curve runs both stacks at eleven shifts: it comes when the slider rests.
        return Result(fast + (MetricsLayer("Metrics", values),), settle=with_curve, pending=("Equivariance error",))


def smooth_odd(n: float) -> int:
    """The odd number nearest ``n`` (at least 3) whose prime factors are 3, 5 and 7 only: FFTs of
    such sizes (and of twice them) are fast; a factor like 19 made the filtered stack 3x slower."""
    best = 3
    for m in range(3, 2 * max(3, int(n)) + 2, 2):
        r = m
        for p in (3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1 and abs(m - n) < abs(best - n):
            best = m
    return best


def working_grid(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w): the longer side ``long_side``, the other in proportion, both :func:`smooth_odd`."""
    s = long_side / max(height, width)
    return smooth_odd(height * s), smooth_odd(width * s)


def working_input(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """(1, 1, h, w) float32: the luma at an odd working size, standardized, tapered to its mean."""
    h, w = working_grid(image.shape[-2], image.shape[-1], long_side)
    grey = luminance(resize(image, (h, w), antialias=True)).float()
    grey = (grey - grey.mean()) / grey.std().clamp_min(1e-6)
    return taper_to_mean(grey)


class Stacks:
    """The two stacks with the same seeded weights: ``plain`` runs the leaky ReLUs at the pixel
    rate (resampling without low-pass, which changes nothing), ``filtered`` wraps them in the
    chosen low-pass. float32: its rounding (about 1e-7) is far below the residuals shown."""

    def __init__(self, params: Mapping[str, Any], like: torch.Tensor) -> None:
        self.weights, self.biases = random_stack(int(params["layers"]), CHANNELS, params["seed"], 1, like.dtype, like.device)
        self.factor, self.filter, self.cutoff = int(params["oversampling"]), params["filter"], float(params["cutoff"])

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return conv_stack(x, self.weights, self.biases, self.factor, None)

    def filtered(self, x: torch.Tensor) -> torch.Tensor:
        return conv_stack(x, self.weights, self.biases, self.factor, self.filter, self.cutoff)

    @property
    def both(self):
        return (self.plain, self.filtered)


def relative_rms(residual: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS of the residual as a share of the reference's RMS."""
    return float(residual.square().mean().sqrt() / reference.square().mean().sqrt().clamp_min(1e-12))


def error_curve(stacks: Stacks, x: torch.Tensor, refs, dy: float) -> dict[str, np.ndarray]:
    """Relative RMS residual (%) of each stack at the shifts SWEEP along x, y held at ``dy``."""
    out = {"plain": [], "filtered": []}
    for dx in SWEEP:
        for key, fn, ref in zip(out, stacks.both, refs):
            out[key].append(100.0 * relative_rms(equivariance_residual(fn, x, float(dx), dy, ref)[1], ref))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _range(x: torch.Tensor) -> tuple[float, float]:
    hi = float(robust_max(x.abs(), samples=65536))
    return (-hi, hi)


def _titles(params: Mapping[str, Any]) -> tuple[str, str]:
    return ("unfiltered", f"filtered ({FILTER_TITLES[params['filter']]})")


def _residual_layer(shifted, params: Mapping[str, Any], x: torch.Tensor) -> HeatmapLayer:
    maps = torch.stack([r[1][0, 0].abs() for r in shifted]).float()
    top = float(robust_max(maps[0], samples=65536)) if float(maps[0].max()) > 0 else 1.0
    h, w = x.shape[-2:]
    most = [float(m.max()) for m in maps]
    return HeatmapLayer(
        "Residual", maps, labels=_titles(params), levels=(0.0, top), colormap="inferno",
        caption=f"|output of the input shifted by ({params['shift_x']:.2f}, {params['shift_y']:.2f}) px, shifted back, "
                f"− output of the input| on the {w}x{h} working grid, one colour scale (the unfiltered residual's 99.5% "
                f"saturates); largest {most[0]:.2g} unfiltered, {most[1]:.2g} filtered")


def _back_layer(shifted, refs, params: Mapping[str, Any]) -> FeatureMapsLayer:
    maps = torch.stack([r[0][0, 0] for r in shifted]).float()
    lo, hi = min(float(r.min()) for r in refs), max(float(r.max()) for r in refs)
    return FeatureMapsLayer("Shifted back", maps, labels=_titles(params), levels=(lo, hi), colormap="CET-L1",
                            caption="each stack's output for the shifted input, shifted back by the same amount "
                                    "(Fourier shift): what the residual compares with its unshifted output")


def _curve_layer(curve: dict[str, np.ndarray], params: Mapping[str, Any]) -> CurveLayer:
    plain, filtered = _titles(params)
    top = float(max(curve["plain"].max(), curve["filtered"].max(), 1e-6))
    sx = float(params["shift_x"])
    return CurveLayer(
        "Equivariance error",
        {plain: (SWEEP.astype(np.float32), curve["plain"]), filtered: (SWEEP.astype(np.float32), curve["filtered"]),
         "this shift": (np.array([sx, sx], np.float32), np.array([0.0, top], np.float32))},
        x_label="shift along x (px)", y_label="RMS residual (% of output RMS)",
        caption=f"how far each stack is from commuting with a shift along x of 0 to 1 px (y held at "
                f"{params['shift_y']:.2f} px); whole pixels are exact for both")


def _metrics(shifted, refs, params: Mapping[str, Any], x: torch.Tensor) -> dict[str, Any]:
    values: dict[str, Any] = {"working grid": f"{x.shape[-1]} x {x.shape[-2]}",
                              "stack": f"{params['layers']} layers x {CHANNELS} channels"}
    rms = []
    for title, (_, residual), ref in zip(("unfiltered", "filtered"), shifted, refs):
        p = psnr(residual, ref)
        values[f"equivariance PSNR {title} (dB)"] = round(p, 1) if math.isfinite(p) else "exact"
        rms.append(relative_rms(residual, ref))
        values[f"RMS residual {title}"] = f"{100 * rms[-1]:.3g}%"
    values["error ratio (unfiltered / filtered)"] = f"{rms[0] / rms[1]:.3g}x" if rms[1] > 0 else "—"
    return values

