"""What the upsampling lab draws: the outputs, the tap-count map behind checkerboards, each
output's spectrum with its energy at the stride's alias frequencies, and where one input pixel
goes. Points are in the output's pixel coordinates (x right, y down, pixel i's centre at i)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from backends.layers import BarsLayer, FeatureMapsLayer, HeatmapLayer, ImageLayer, PointSet, PointsLayer
from backends.ops._upsampling_methods import METHODS, OverlapWindow

CELL = 12  # overlap map: one output pixel as a CELL x CELL square, a 1 px black line between
RAMP = np.array([(0.15, 0.18, 0.45), (0.2, 0.55, 0.75), (0.35, 0.8, 0.45), (0.95, 0.85, 0.25), (0.95, 0.4, 0.2)],
                np.float32)  # few taps (dark blue) to many (orange)
CAPTIONS = {
    "transposed": "transposed convolution: each input pixel stamps the kernel onto the output, s pixels apart",
    "max unpool": "max unpooling: each block's maximum put back where the max pool found it, zeros elsewhere",
    "nearest": "nearest: each input pixel copied into an s x s block",
    "bilinear": "bilinear interpolation between input pixel centres",
    "resize + conv": "nearest resize, then a 'same' convolution with the kernel (Odena et al.)",
    "pixel shuffle": "sub-pixel convolution: s² phase kernels on the input, their channels shuffled into pixels",
}


def output_layer(method: str, shown: torch.Tensor, extent: tuple[float, float, float, float], detail: str,
                 saturated: float) -> ImageLayer:
    """The chosen output, (H, W, C) clipped to [0, 1]; ``saturated``: the share of pixels that were above 1."""
    clip = f"; {saturated:.0%} of its pixels exceed 1 and saturate" if saturated >= 0.005 else ""
    return ImageLayer("Output", shown, levels=(0.0, 1.0), extent=extent,
                      caption=f"{CAPTIONS[method]} ({detail}), {shown.shape[1]}x{shown.shape[0]} px{clip}")


def common_size(out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, C, H, W) cut or padded with NaN (drawn transparent) to ``size`` from the top left."""
    h, w = size
    cut = out[..., :h, :w]
    if cut.shape[-2:] == (h, w):
        return cut
    padded = cut.new_full(cut.shape[:2] + (h, w), float("nan"))
    padded[..., : cut.shape[-2], : cut.shape[-1]] = cut
    return padded


def all_outputs_layer(lumas: dict[str, torch.Tensor], size: tuple[int, int]) -> FeatureMapsLayer:
    """Every method's luma (1, 1, H, W) in [0, 1], cut or padded to the reference ``size``."""
    maps = torch.cat([common_size(lumas[m], size) for m in METHODS], 1)[0]
    return FeatureMapsLayer("All outputs", maps, labels=METHODS, levels=(0.0, 1.0), colormap="CET-L1",
                            caption="every method on the same input, as grey levels (luma); max unpooling reads the "
                                    "blocks' maxima, the others their means")


def category_palette(count: int) -> np.ndarray:
    """(count, 3) colours along RAMP, dark (few taps) to bright (many)."""
    if count == 1:
        return RAMP[2:3].copy()
    t = np.linspace(0.0, len(RAMP) - 1, count)
    lo = np.floor(t).astype(int).clip(0, len(RAMP) - 2)
    f = (t - lo)[:, None]
    return (RAMP[lo] * (1 - f) + RAMP[lo + 1] * f).astype(np.float32)


def overlap_layer(window: OverlapWindow, k: int, s: int, d: int, sums: torch.Tensor) -> ImageLayer:
    counts = window.counts.round().long().cpu().numpy()
    values = np.unique(counts)
    index = np.searchsorted(values, counts)
    n = counts.shape[0]
    picture = np.full((n * (CELL + 1) - 1,) * 2, -1, np.int64)
    for y in range(n):
        for x in range(n):
            picture[y * (CELL + 1): y * (CELL + 1) + CELL, x * (CELL + 1): x * (CELL + 1) + CELL] = index[y, x]
    fx, fy, fw, fh = window.footprint
    box = (fx * (CELL + 1), fy * (CELL + 1), fw * (CELL + 1) - 1, fh * (CELL + 1) - 1)
    uniform = len(values) == 1
    lo, hi = float(sums.min()), float(sums.max())
    if uniform:
        verdict = f"uniform: every output pixel gets {int(values[0])} taps"
    else:
        verdict = (f"{' / '.join(str(int(v)) for v in values)} taps alternate every {s} pixels: the checkerboard"
                   + (f" (s = {s} does not divide k = {k})" if d == 1 else f" (dilation {d})"))
    flat = (f"; a flat input comes out between {lo:.2f} and {hi:.2f}" if hi - lo > 1e-6 * max(abs(hi), 1.0)
            else f"; a flat input comes out flat ({lo:.2f})")
    return ImageLayer(
        "Kernel overlap", picture, categories=tuple(f"{int(v)} tap{'s' if v != 1 else ''}" for v in values),
        palette=category_palette(len(values)), boxes=(box,),
        row_labels=tuple(str(window.start + i) for i in range(n)), column_labels=tuple(str(window.start + i) for i in range(n)),
        axis_titles=("output column", "output row"),
        caption=f"transposed convolution, k = {k}, stride {s}: how many kernel taps land on each output pixel, away "
                f"from the border; {verdict}{flat} (kernel's "
                f"taps per phase). Box: one input pixel's footprint")


def spectrum_picture(spectrum: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A log spectrum (h, w) as the spectra panel draws it: half of ``size`` (the reference's), each
    pixel the largest of the bins it covers, so a peak one bin wide survives the smaller picture."""
    return F.adaptive_max_pool2d(spectrum[None, None], (max(1, size[0] // 2), max(1, size[1] // 2)))[0, 0]


def spectra_layer(spectra: dict[str, torch.Tensor], fractions: dict[str, float], s: int) -> HeatmapLayer:
    """Every method's :func:`spectrum_picture`, labelled with its alias energy share."""
    maps = torch.stack([spectra[m] for m in METHODS])
    hi = float(maps.max()) or 1.0
    return HeatmapLayer(
        "Spectra", maps, labels=tuple(f"{m} {100 * fractions[m]:.0f}%" for m in METHODS), levels=(0.0, hi),
        colormap="magma",
        caption=f"log-magnitude spectrum of each output's luma, zero frequency in the centre, edges at half the "
                f"sampling rate; a pattern that repeats every {s} pixels shows as bright dots at multiples of 1/{s} "
                f"of the sampling rate (the alias frequencies{'; for s = 2 on the edges and corners' if s == 2 else ''}). "
                f"Labels: the share of energy there. Drawn at half size, each pixel the largest of its bins")


def energy_layer(fractions: dict[str, float], s: int) -> BarsLayer:
    shares = np.array([100.0 * fractions[m] for m in METHODS], np.float32)
    top = max(1.0, 1.1 * float(shares.max()))  # at least 1%: tiny shares stay tiny, the axis in plain %
    return BarsLayer("Checkerboard energy", METHODS, {"energy at alias frequencies": shares}, y_range=(0.0, top),
        value_label="% of spectral energy", horizontal=True,
        caption=f"the share of each output's spectral energy (zero frequency left out) at the stride's alias "
                f"frequencies, multiples of 1/{s} of the sampling rate: where a checkerboard puts its energy")


def scatter_layer(method: str, response: torch.Tensor, shown: torch.Tensor, pixel: tuple[int, int], s: int) -> PointsLayer:
    """Where low-resolution pixel (x, y) goes: the output pixels its impulse response reaches,
    brightness by weight, each joined to the pixel's centre on the output grid."""
    ys, xs = torch.nonzero(response.abs() > 1e-7, as_tuple=True)
    weights = response[ys, xs]
    points = torch.stack([xs, ys], 1).float()
    centre = ((pixel[0] + 0.5) * s - 0.5, (pixel[1] + 0.5) * s - 0.5)
    block = (float(pixel[0] * s), float(pixel[1] * s), float(s), float(s))
    if len(points):
        lo, hi = points.min(0).values, points.max(0).values
        side = float(max(hi[0] - lo[0], hi[1] - lo[1], s)) + 1
    else:
        side = float(s)
    mid = (block[0] + s / 2, block[1] + s / 2)
    focus = (mid[0] - 2 * side, mid[1] - 2 * side, 4 * side, 4 * side)
    peak = float(weights.abs().max()) if len(weights) else 1.0
    total = float(weights.sum()) if len(weights) else 0.0
    return PointsLayer(
        "Scatter of one input pixel",
        sets=(PointSet(points, color=(255, 90, 60), size=8.0, label="output pixels it reaches", join_to=centre,
                       values=weights.abs() / max(peak, 1e-12)),
              PointSet(np.array([centre], np.float32), color=(60, 220, 255), size=11.0, label="input pixel")),
        background=shown, boxes=(block,), focus=focus,
        caption=f"{method}: where input pixel ({pixel[0]}, {pixel[1]}) of the low-resolution image goes: {len(points)} "
                f"output pixels, brightness by weight (largest {peak:.3g}, sum {total:.3g}); box: the s x s block it "
                f"covers at the output's scale. Click to choose the pixel")
