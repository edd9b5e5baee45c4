"""Deformable kernels (Gao et al., ICLR 2020) beside deformable convolution: both deform a K x K
kernel by the same zoom, turn or shear; deformable convolution moves where the taps read the
input, a deformable kernel keeps the reads on the regular grid and resamples its weights from a
larger kernel space. The effective receptive field of the clicked pixel, by autograd through a
stack of such layers, shows the difference: one reaches beyond the regular box, the other
reshapes what is inside it. The cores are :mod:`backends.functional.deformable_kernels` and
:func:`backends.functional.deformable.deform_conv2d`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from backends.features import robust_max
from backends.functional.affine import compose_affine
from backends.functional.deformable_kernels import (
    SPACE_PATTERNS,
    affine_tap_offsets,
    depthwise_same,
    pattern_space,
    sample_kernel,
    splat_taps,
    tap_grid,
)
from backends.imaging import resize_long_side
from backends.layers import INPUT, HeatmapLayer, ImageLayer, MetricsLayer, Result
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

NONNEGATIVE = ("gaussian",)
DEFORMS = ("zoom", "rotate", "shear")
WORK_SIDE = 256  # the output panels are computed with the longer side at most this
KERNEL_INPUTS = ("kernel_space", "kernel_size", "space_size", "deform", "strength")
ERF_INPUTS = KERNEL_INPUTS + ("layers",)
SAMPLE_BOX = 0.36  # side of the squares marking where taps sample the kernel space, in cells


def deform_matrix(kind: str, strength: float) -> torch.Tensor:
    """The (2, 2) map M that deforms the kernel: zoom magnifies it by 2**strength, rotate turns it
    by 45 deg * strength (counter-clockwise on screen), shear slides x by strength / 2 * y."""
    maps = {"zoom": dict(scale=2.0 ** strength), "rotate": dict(angle_deg=45.0 * strength), "shear": dict(shear=0.5 * strength)}
    if kind not in maps:
        raise ValueError(f"unknown deformation {kind!r}; one of {', '.join(DEFORMS)}")
    return compose_affine(**maps[kind])[:2, :2]


@register
class DeformableKernels(Operator):
    spec = OperatorSpec(
        name="deformable_kernels",
        title="Deformable kernels",
        family="Convolution",
        description=(
            "A deformable kernel reads the input on the regular K x K grid and resamples its weights, bilinearly, from "
            "a larger kernel space at moved positions; deformable convolution keeps the weights and moves the reads. "
            "Both deform the kernel by the same zoom, turn or shear here. Click a pixel: its effective receptive "
            "field through a stack of layers stays inside the regular box for the deformable kernel and leaves it "
            "for deformable convolution."
        ),
        params=(
            ChoiceParam("deform", "zoom", DEFORMS, help="How the kernel is deformed: magnified (zoom), turned about its "
                        "centre (rotate) or sheared."),
            FloatParam("strength", 1.0, -2.0, 2.0, step=0.05, help="zoom: magnify by 2^strength (below 0 shrinks); "
                       "rotate: 45° x strength; shear: x moves by strength / 2 per row."),
            ChoiceParam("kernel_space", "gabor", SPACE_PATTERNS, help="The pattern of the kernel space the weights are "
                        "sampled from: Gabor stripes at 30°, a Gaussian, its x derivative (edge) or its Laplacian (log); "
                        "the deformable convolution uses its central K x K."),
            ChoiceParam("kernel_size", "5", ("3", "5", "7"), help="K: taps per side."),
            ChoiceParam("space_size", "11", ("5", "7", "9", "11", "13", "15"), help="S: side of the kernel space "
                        "(at least K); shrinking the kernel reaches its outer part."),
            IntParam("layers", 3, 1, 4, help="Depth of the stack whose effective receptive field is shown."),
        ),
        primary="Deformable kernels",
    )
    memo_capacity = 12

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        q = query_point(query, w, h)
        k, s = int(params["kernel_size"]), int(params["space_size"])
        if s < k:
            raise ParamError(f"the kernel space ({s}x{s}) must be at least the kernel ({k}x{k}): raise space_size")
        stage = self.memo.stage
        with timer("kernels"):
            kern = stage("kernels", params, KERNEL_INPUTS, lambda: Kernels.of(params, image))
        small = stage("work image", params, (), lambda: resize_long_side(image, WORK_SIDE))
        with timer("outputs"):
            outputs = stage("outputs", params, KERNEL_INPUTS, lambda: _outputs(small, kern, params))
        with timer("receptive fields"):
            fields = stage("erf", params, ERF_INPUTS, lambda: _receptive_fields(image, kern, int(params["layers"]), q), extra=q)
        layers = (
            *_output_layers(outputs, kern, params, (w, h), small.shape[-1] != w),
            _space_layer(kern, params),
            _kernel_layer(kern, params),
            *_erf_layers(fields, kern, params, q),
            MetricsLayer("Metrics", {**_metrics(fields, kern, params, q), **timer.metrics()}),
        )
        return Result(layers)


class Kernels:
    """The kernel space (S, S), the map M, the deformable kernel's offsets (in cells) and sampled
    K x K kernel, the central crop, and the deformable convolution's offsets (in pixels) and the
    equivalent splatted kernel, all float32 on the image's device."""

    def __init__(self, space: torch.Tensor, matrix: torch.Tensor, k: int) -> None:
        s = space.shape[-1]
        self.space, self.k = space, k
        self.matrix = matrix
        inverse = torch.linalg.inv(matrix)
        # The same deformation of the pattern both ways: the convolution reads at M t with the crop's
        # weights; the kernel reads at t with the space's weights at M^-1 t (both show W(M^-1 v) at v).
        self.dk_offsets = affine_tap_offsets(inverse, k).to(space)
        self.dc_offsets = affine_tap_offsets(matrix, k).to(space)
        self.sampled = sample_kernel(space[None, None], self.dk_offsets.view(1, -1, 1, 1), k).reshape(k, k)
        m = (s - k) // 2
        self.crop = space[m: m + k, m: m + k]
        self.dc_positions = tap_grid(k, dtype=torch.float64) @ matrix.T  # (K*K, 2) of (x, y) in pixels
        self.splat = splat_taps(self.crop.reshape(-1).double().cpu(), self.dc_positions).to(space)

    @classmethod
    def of(cls, params: Mapping[str, Any], image: torch.Tensor) -> Kernels:
        k, s = int(params["kernel_size"]), int(params["space_size"])
        space = pattern_space(params["kernel_space"], s)
        if params["kernel_space"] in NONNEGATIVE:  # the crop sums to 1: the plain convolution keeps brightness
            m = (s - k) // 2
            space = space / space[m: m + k, m: m + k].sum()
        return cls(space.to(image.device, torch.float32), deform_matrix(params["deform"], float(params["strength"])), k)

    @property
    def dc_reach(self) -> int:
        """How far from the pixel, along x or y, the deformable convolution reads (bilinear corners
        included): the splatted kernel's half-width."""
        return self.splat.shape[-1] // 2


def _outputs(small: torch.Tensor, kern: Kernels, params: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(deformable kernel, deformable convolution) of the working image (1, 3, h, w). The first is
    the sampled K x K kernel on each channel; the second the splatted kernel, which equals
    ``deform_conv2d`` with the same offsets at every pixel (tested) at a fraction of the reads."""
    return depthwise_same(small, kern.sampled), depthwise_same(small, kern.splat)


@dataclass(frozen=True)
class Fields:
    """Both stacks' effective receptive fields on the crop that holds everything out(q) reads:
    (hc, wc) maps scaled to a maximum of 1, the crop's corner (x0, y0) on the frame, and the query
    inside the crop."""

    kernels: torch.Tensor
    convolution: torch.Tensor
    corner: tuple[int, int]
    local: tuple[int, int]

    @property
    def extent(self) -> tuple[float, float, float, float]:
        hc, wc = self.kernels.shape
        return (float(self.corner[0]), float(self.corner[1]), float(wc), float(hc))


def _receptive_fields(image: torch.Tensor, kern: Kernels, layers: int, q: tuple[int, int]) -> Fields:
    """|d out(q) / d luma| through ``layers`` deformable-kernel layers and ``layers`` deformable
    convolutions, on the crop that holds everything out(q) can read (exact with zero padding: the
    image's own border is the crop's where they meet). Each stack is linear and reads the same
    pattern at every pixel, so it is ``layers`` correlations with its sampled or splatted kernel
    (tested equal to the layers themselves), and the gradient is the adjoint pass: correlations
    with the flipped kernel from an impulse at q. 0.2 ms a frame against 1.9 by autograd."""
    _, _, h, w = image.shape
    k = kern.k
    reach = layers * max(kern.dc_reach, k // 2)
    x0, y0, x1, y1 = max(0, q[0] - reach), max(0, q[1] - reach), min(w, q[0] + reach + 1), min(h, q[1] + reach + 1)
    local = (q[0] - x0, q[1] - y0)
    impulse = image.new_zeros(1, 1, y1 - y0, x1 - x0)
    impulse[0, 0, local[1], local[0]] = 1.0
    maps = []
    for kernel in (kern.sampled, kern.splat):
        field = impulse
        for _ in range(layers):
            field = depthwise_same(field, kernel.flip(-2, -1))
        maps.append(field[0, 0].abs())
    maps = [m / m.max().clamp_min(1e-12) for m in maps]
    return Fields(maps[0], maps[1], (x0, y0), local)


def _levels(a: torch.Tensor) -> tuple[float, float]:
    hi = float(robust_max(a.abs(), samples=65536))
    return (-hi, hi)


def _output_layers(outputs: tuple[torch.Tensor, torch.Tensor], kern: Kernels, params: Mapping[str, Any],
                   frame: tuple[int, int], reduced: bool) -> tuple[ImageLayer, ImageLayer]:
    dk, dc = outputs
    extent = (0.0, 0.0, float(frame[0]), float(frame[1])) if reduced else None
    at = f"; at {dk.shape[-1]}x{dk.shape[-2]} px" if reduced else ""
    k, s = kern.k, kern.space.shape[-1]
    captions = (f"{k}x{k} weights resampled from the {s}x{s} kernel space, read on the regular {k}x{k} grid{at}",
                f"the central {k}x{k} weights, read at the moved positions (up to {kern.dc_reach} px away){at}")
    names = ("Deformable kernels", "Deformable convolution")
    if params["kernel_space"] in NONNEGATIVE:
        return tuple(ImageLayer(n, o[0].permute(1, 2, 0), levels=(0.0, 1.0), extent=extent, caption=c)
                     for n, o, c in zip(names, outputs, captions))
    return tuple(ImageLayer(n, m, levels=_levels(m), colormap="CET-D1", extent=extent,
                            caption=c + "; mean of the colour channels, the strongest 0.5% saturate")
                 for n, m, c in zip(names, (dk[0].mean(0), dc[0].mean(0)), captions))


def _kernel_levels(kern: Kernels) -> tuple[float, float]:
    hi = float(kern.space.abs().max()) or 1.0
    return (0.0, hi) if float(kern.space.min()) >= 0 else (-hi, hi)


def _space_layer(kern: Kernels, params: Mapping[str, Any]) -> ImageLayer:
    """The kernel space with the central crop boxed and a small square where each tap samples it."""
    k, s = kern.k, kern.space.shape[-1]
    c = (s - 1) / 2.0
    m = (s - k) // 2
    where = tap_grid(k, dtype=torch.float64) @ torch.linalg.inv(kern.matrix).T + c  # (x, y) cells
    half = SAMPLE_BOX / 2
    boxes = ((float(m), float(m), float(k), float(k)),) + tuple(
        (float(x) + 0.5 - half, float(y) + 0.5 - half, SAMPLE_BOX, SAMPLE_BOX) for x, y in where.tolist())
    lo, hi = _kernel_levels(kern)
    return ImageLayer("Kernel space", kern.space, levels=(lo, hi), colormap="viridis" if lo == 0 else "CET-D1", boxes=boxes,
                      caption=f"the {s}x{s} kernel space ({params['kernel_space']}); large square: the central {k}x{k} "
                              f"that zero offsets read; small squares: where the {k * k} taps sample it now")


def _kernel_layer(kern: Kernels, params: Mapping[str, Any]) -> ImageLayer:
    k = kern.k
    gap = torch.full((k, 1), float("nan"), dtype=kern.space.dtype, device=kern.space.device)
    picture = torch.cat([kern.crop, gap, kern.sampled], 1)
    lo, hi = _kernel_levels(kern)
    return ImageLayer("Resampled kernel", picture, levels=(lo, hi), colormap="viridis" if lo == 0 else "CET-D1",
                      column_labels=("central crop", "resampled"),
                      caption=f"left: the {k}x{k} weights the deformable convolution keeps; right: the weights the "
                              f"deformable kernel samples bilinearly at the moved positions ({params['deform']})")


def _erf_layers(fields: Fields, kern: Kernels, params: Mapping[str, Any],
                q: tuple[int, int]) -> tuple[HeatmapLayer, HeatmapLayer]:
    layers, k = int(params["layers"]), kern.k
    regular = layers * (k - 1) + 1
    widest = layers * 2 * kern.dc_reach + 1
    box, focus = _box(q, regular), _box(q, max(regular, widest) + 8)
    what = f"|d out / d input| of the clicked pixel through {layers} layer{'s' if layers > 1 else ''}, scaled to its maximum"
    outside = _outside(fields.convolution, fields.local, regular)
    common = dict(background=INPUT, levels=(0.0, 1.0), opacity=0.85, extent=fields.extent, focus=focus, boxes=(box,))
    return (
        HeatmapLayer("Receptive field: deformable kernels", fields.kernels, **common,
                     caption=f"{what}; the box: the regular {regular}x{regular} receptive field, which it never leaves"),
        HeatmapLayer("Receptive field: deformable convolution", fields.convolution, **common,
                     caption=f"{what}; the box: the regular {regular}x{regular} receptive field; "
                             f"{outside:.0%} of the gradient lies outside it"),
    )


def _box(q: tuple[int, int], size: int) -> tuple[float, float, float, float]:
    half = size / 2.0
    return (q[0] + 0.5 - half, q[1] + 0.5 - half, float(size), float(size))


def _outside(erf: torch.Tensor, q: tuple[int, int], size: int) -> float:
    """The share of the ERF's mass outside the ``size`` x ``size`` box about ``q``."""
    half = size // 2
    inside = erf[max(0, q[1] - half): q[1] + half + 1, max(0, q[0] - half): q[0] + half + 1].sum()
    return float(1.0 - inside / erf.sum().clamp_min(1e-12))


def rms_radius(erf: torch.Tensor, q: tuple[int, int]) -> float:
    """sqrt(sum erf * |p - q|^2 / sum erf): how far from the pixel its gradient lies, in pixels."""
    h, w = erf.shape
    ys = torch.arange(h, device=erf.device, dtype=erf.dtype).view(-1, 1) - q[1]
    xs = torch.arange(w, device=erf.device, dtype=erf.dtype).view(1, -1) - q[0]
    return float(((erf * (xs * xs + ys * ys)).sum() / erf.sum().clamp_min(1e-12)).sqrt())


def _metrics(fields: Fields, kern: Kernels, params: Mapping[str, Any], q: tuple[int, int]) -> dict[str, Any]:
    layers, k, s = int(params["layers"]), kern.k, kern.space.shape[-1]
    regular = layers * (k - 1) + 1
    widest = layers * 2 * kern.dc_reach + 1
    return {
        "kernel, kernel space": f"{k}x{k} from {s}x{s}",
        "largest kernel offset (cells)": round(float(kern.dk_offsets.abs().max()), 2),
        "largest read offset (px)": round(float(kern.dc_offsets.abs().max()), 2),
        "receptive field, deformable kernels": f"{regular} x {regular}",
        "receptive field, deformable conv": f"{widest} x {widest}",
        "ERF rms radius, deformable kernels (px)": round(rms_radius(fields.kernels, fields.local), 2),
        "ERF rms radius, deformable conv (px)": round(rms_radius(fields.convolution, fields.local), 2),
        "ERF outside the regular box, deformable conv": f"{_outside(fields.convolution, fields.local, regular):.1%}",
        "query": f"({q[0]}, {q[1]})",
    }
