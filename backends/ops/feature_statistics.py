"""Feature statistics: the channel covariance of colour or filter-bank features, and CORAL
alignment as an image edit. The input's colours are whitened with its own colour covariance and
re-coloured to a target's covariance and mean (a re-toned copy of the input, or a bundled
sample); the covariances before and after and the CORAL distance show how close the second-order
statistics came. The cores are in :mod:`backends.functional.statistics`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from backends.features import (
    COLOUR_NAMES,
    GABOR_ORIENTATIONS,
    GABOR_SCALES,
    colour_opponents,
    gabor_energy,
    texture_energy,
)
from backends.full_resolution import tiled
from backends.functional.statistics import apply_affine, coral_distance, coral_transform, covariance, feature_mean
from backends.imageio import load_image
from backends.imaging import hwc, luminance, resize_long_side
from backends.layers import ImageLayer, MetricsLayer, Result
from backends.params import ChoiceParam, FloatParam
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "images"
STATS_SIDE = 128  # statistics are taken with the longer side scaled to at most this (area-averaged)
TARGET_SIDE = 256  # the target panel's longer side
# Re-toned copies of the input: a 3 x 3 colour matrix (rows: output R, G, B) and an offset.
_SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))
_SWAP = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
_GREY = ((0.299, 0.587, 0.114),) * 3
_NIGHT = ((0.15, 0.1, 0.05), (0.1, 0.3, 0.1), (0.1, 0.3, 0.6))
COPIES = {"copy: sepia": (_SEPIA, 0.0), "copy: red and blue swapped": (_SWAP, 0.0), "copy: grey": (_GREY, 0.0),
          "copy: night blue": (_NIGHT, 0.05)}
SAMPLES = ("coffee", "chelsea", "rocket", "astronaut", "brick")
TARGETS = tuple(COPIES) + tuple(f"sample: {s}" for s in SAMPLES)
FEATURES = ("colour", "filter bank")
RGB_NAMES = ("red", "green", "blue")
SATURATED = 0.02  # the share of filter-bank covariance entries drawn at the ends of the scale
COV_COLORMAP = "CET-D1"  # diverging: blue below zero, white at zero, red above


def filter_bank(image: torch.Tensor) -> torch.Tensor:
    """(1, 24, h, w) filter-bank features of a (1, 3, h, w) image, in absolute units: the Gabor
    energies (4 orientations x 4 octaves), the 6 colour opponents and the 2 texture contrasts of
    ``backends.features``, without the per-image normalization of ``feature_bank`` (which would
    scale two images' covariances differently)."""
    grey = luminance(image)
    return torch.cat([gabor_energy(grey), colour_opponents(image), texture_energy(grey)], 1)


BANK_NAMES = tuple(f"{o}° s{s + 1}" for s in range(GABOR_SCALES) for o in GABOR_ORIENTATIONS) + COLOUR_NAMES + (
    "fine", "coarse")


@lru_cache(maxsize=len(SAMPLES))
def load_sample(name: str) -> torch.Tensor:
    """A bundled sample as (1, 3, H, W) float32 on the CPU, read once."""
    pixels = load_image(SAMPLES_DIR / f"{name}.png").pixels
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def target_image(image: torch.Tensor, choice: str) -> torch.Tensor:
    """The target (1, 3, h, w) at most TARGET_SIDE on its longer side: a re-toned copy of the
    input, or a bundled sample."""
    if choice in COPIES:
        matrix, offset = COPIES[choice]
        small = resize_long_side(image, TARGET_SIDE)
        m = torch.tensor(matrix, dtype=small.dtype, device=small.device)
        return (torch.einsum("ij,njhw->nihw", m, small) + offset).clamp(0, 1)
    return resize_long_side(load_sample(choice.removeprefix("sample: ")), TARGET_SIDE).to(image)


@dataclass(frozen=True)
class Stats:
    """One image's statistics at STATS_SIDE: its colours (1, 3, h, w), colour mean and covariance,
    and the covariance of the chosen features."""

    small: torch.Tensor
    colour_mean: torch.Tensor
    colour_cov: torch.Tensor
    cov: torch.Tensor

    @staticmethod
    def of(image: torch.Tensor, features: str) -> Stats:
        small = resize_long_side(image, STATS_SIDE)
        colour_cov = covariance(small)[0]
        cov = colour_cov if features == "colour" else covariance(filter_bank(small))[0]
        return Stats(small, feature_mean(small)[0], colour_cov, cov)


@register
class FeatureStatistics(Operator):
    spec = OperatorSpec(
        name="feature_statistics",
        title="Feature statistics (CORAL)",
        family="Statistics",
        description=(
            "How the features of an image vary together: the channel covariance of its colours or of a filter "
            "bank. CORAL alignment whitens the input's colours with their own covariance and re-colours them with "
            "a target's covariance and mean, so the input takes on the target's colour statistics; the CORAL "
            "distance ||C_s - C_t||²_F / (4d²) says how far apart the two covariances are before and after."
        ),
        params=(
            ChoiceParam("target", "copy: sepia", TARGETS, help="The image whose statistics the input takes: a re-toned "
                        "copy of the input or a bundled sample."),
            ChoiceParam("features", "colour", FEATURES, help="Features whose covariance is drawn and measured: RGB "
                        "colour (3), or the filter bank (16 Gabor energies, 6 colour opponents, 2 texture contrasts). "
                        "The alignment always re-colours RGB."),
            FloatParam("strength", 1.0, 0.0, 1.0, help="0 keeps the input, 1 is the full alignment; between, the "
                       "colour transform blended with the identity."),
            FloatParam("regularization", 0.001, 0.0, 0.1, step=0.001, help="Added to the input's covariance diagonal "
                       "before whitening, as a share of its mean variance: keeps a nearly flat colour direction from "
                       "being amplified (the paper adds the identity)."),
        ),
        uses_query=False,
        primary="Aligned",
    )
    memo_capacity = 10
    edit = "pointwise"

    def full_resolution(self, live: torch.Tensor, full: torch.Tensor, params: Mapping[str, Any], query: Query) -> torch.Tensor:
        """The colour map fitted on the live view (statistics barely change with the scale), applied
        to every pixel of ``full`` in bands."""
        source = Stats.of(live, params["features"])
        target = Stats.of(target_image(live, params["target"]), params["features"])
        matrix, mean_to = self._transform(source, target, params)
        mean_from = source.colour_mean[None]
        return tiled(full, lambda band: apply_affine(band, matrix.to(band), mean_from.to(band), mean_to.to(band)).clamp(0, 1))

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        features = params["features"]
        with timer("statistics"):
            source = self.memo.stage("source", params, ("features",), lambda: Stats.of(image, features))
            target_rgb = self.memo.stage("target image", params, ("target",), lambda: target_image(image, params["target"]))
            target = self.memo.stage("target", params, ("target", "features"), lambda: Stats.of(target_rgb, features))
        with timer("transform"):
            matrix, mean_to = self.memo.stage("transform", params, ("target", "regularization", "strength"),
                                              lambda: self._transform(source, target, params))
        with timer("align"):
            aligned = self.memo.stage("aligned", params, ("target", "regularization", "strength"),
                                      lambda: hwc(apply_affine(image, matrix, source.colour_mean[None], mean_to)[0].clamp(0, 1)))
        with timer("aligned statistics"):
            aligned_cov = self.memo.stage("aligned cov", params, ("target", "regularization", "strength", "features"),
                                          lambda: self._aligned_cov(source, matrix, mean_to, features))
        before, after = float(coral_distance(source.cov, target.cov)), float(coral_distance(aligned_cov, target.cov))
        names = RGB_NAMES if features == "colour" else BANK_NAMES
        hi, saturate = cov_levels(torch.stack([source.cov, target.cov, aligned_cov]), features)
        d = len(names)
        what = "RGB colour" if features == "colour" else f"{d} filter-bank features"
        share = int(round(100 * float(params["strength"])))
        layers = (
            ImageLayer("Aligned", aligned, levels=(0.0, 1.0),
                       caption=f"the input re-coloured by CORAL to the target's colour covariance and mean ({share}% of "
                               "the way); colours outside 0..1 are clipped for display"),
            ImageLayer("Target", hwc(target_rgb[0]), levels=(0.0, 1.0),
                       caption=f"the target whose statistics the input takes: {params['target']}"),
            cov_layer("Input covariance", source.cov, names, hi, f"{what} of the input, before alignment{saturate}"),
            cov_layer("Target covariance", target.cov, names, hi, f"{what} of the target{saturate}"),
            cov_layer("Aligned covariance", aligned_cov, names, hi,
                      f"{what} of the aligned image, after alignment (unclipped colours){saturate}"),
            MetricsLayer("Metrics", {
                "CORAL distance before": f"{before:.3g}",
                "CORAL distance after": f"{after:.3g}",
                "features": f"{what} (d = {d})",
                "statistics taken at": "{} x {} px".format(*reversed(source.small.shape[-2:])),
                **timer.metrics(),
            }, caption="CORAL distance ||C_s - C_t||²_F / (4d²) to the target's covariance, before and after"),
        )
        return Result(layers)

    @staticmethod
    def _transform(source: Stats, target: Stats, params: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The colour map x -> M (x - mu_s) + m as (M (1, 3, 3), m (1, 3)): CORAL's transform and
        the target mean, blended with the identity and the input's mean by ``strength``. The 3 x 3
        roots are taken in float64 on the CPU (MPS has no float64)."""
        c_s, c_t = source.colour_cov.cpu().double(), target.colour_cov.cpu().double()
        eps = float(params["regularization"]) * float(c_s.diagonal().mean())
        a = coral_transform(c_s, c_t, eps)
        t = float(params["strength"])
        matrix = (1 - t) * torch.eye(3, dtype=a.dtype, device=a.device) + t * a
        mean_to = (1 - t) * source.colour_mean + t * target.colour_mean
        return matrix.to(source.small)[None], mean_to[None]

    @staticmethod
    def _aligned_cov(source: Stats, matrix: torch.Tensor, mean_to: torch.Tensor, features: str) -> torch.Tensor:
        """The chosen features' covariance of the aligned image, from the aligned small copy (an
        affine colour map commutes with area averaging, so this is the full image's, reduced)."""
        small = apply_affine(source.small, matrix, source.colour_mean[None], mean_to)
        return covariance(small if features == "colour" else filter_bank(small))[0]


def cov_levels(covs: torch.Tensor, features: str) -> tuple[float, str]:
    """One symmetric colour scale for the covariance panels and what it leaves out: the largest
    entry for colour; for the filter bank the 98th percentile of the entries' sizes, since the
    light and dark channels' variance would otherwise wash out the Gabor energies'."""
    sizes = covs.abs().flatten()
    if features == "colour":
        return float(sizes.max().clamp_min(1e-12)), ""
    hi = float(torch.quantile(sizes.double(), 1 - SATURATED).clamp_min(1e-12))
    return hi, f"; the largest {SATURATED:.0%} of entries (beyond ±{hi:.2g}) saturate"


def cov_layer(name: str, cov: torch.Tensor, names: tuple[str, ...], hi: float, what: str) -> ImageLayer:
    return ImageLayer(name, cov, levels=(-hi, hi), colormap=COV_COLORMAP, row_labels=names, column_labels=names,
                      caption=f"covariance of the {what}. Red: the two vary together; blue: in opposite ways; "
                              "one scale for all three panels")
