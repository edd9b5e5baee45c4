"""What the squeeze-and-excitation operator draws, and the per-image stage and box energies it
draws from (training reads the same energies).

Boxes are (x0, y0, x1, y1) in edge coordinates (pixel i spans [i, i + 1]), x right and y down.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from backends.features import FeatureBank, feature_bank, robust_max
from backends.functional.squeeze_excitation import se_hidden_size, se_parameter_count, squeeze
from backends.imaging import resize_long_side
from backends.layers import BarsLayer, FeatureMapsLayer, MetricsLayer, PointSet, PointsLayer

MANUAL_LOGIT = 5.0  # strength 1 gives weights sigmoid(+-5) = 0.993 / 0.007
DISPLAY_SIDE = 128  # mosaic tiles are at most this size, to keep the UI thread's tiling cheap


def manual_weights(channels: int, emphasised: tuple[int, ...], strength: float) -> torch.Tensor:
    """(C,) weights sigmoid(+-5 * strength): up for the emphasised channels, down for the rest."""
    logits = torch.full((channels,), -MANUAL_LOGIT * strength)
    logits[list(emphasised)] = MANUAL_LOGIT * strength
    return torch.sigmoid(logits)


def box_in(query: tuple[int, int], side: int, width: int, height: int, scale: float = 1.0) -> tuple[int, int, int, int]:
    """The side x side box centred on ``query`` (input px), clipped to the image, in a frame
    ``scale`` times the input: (x0, y0, x1, y1), never empty."""
    half = side / 2.0
    qx, qy = (query[0] + 0.5) * scale, (query[1] + 0.5) * scale
    x0 = int(np.clip(np.floor(qx - half * scale), 0, width - 1))
    y0 = int(np.clip(np.floor(qy - half * scale), 0, height - 1))
    x1 = int(np.clip(np.ceil(qx + half * scale), x0 + 1, width))
    y1 = int(np.clip(np.ceil(qy + half * scale), y0 + 1, height))
    return x0, y0, x1, y1


def channel_energies(maps: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel of ``maps`` (1, C, h, w), the squared response summed inside ``box`` and over
    the whole map: (C,), (C,). With E = sum_c (s_c F_c)^2 the box's share of the recalibrated
    energy is (s^2 . inside) / (s^2 . total), so training never has to touch the maps again."""
    sq = maps[0] ** 2
    x0, y0, x1, y1 = box
    return sq[:, y0:y1, x0:x1].sum((1, 2)), sq.sum((1, 2))


def region_share(weights: torch.Tensor, inside: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """The box's share of sum_c (w_c F_c)^2, from :func:`channel_energies`."""
    w2 = weights * weights
    return (w2 * inside).sum(-1) / (w2 * total).sum(-1).clamp_min(1e-12)


@dataclass(frozen=True)
class Bank:
    """Per-image stage: the bank, its squeeze ``z`` (1, C), mosaic-sized maps ``small``
    (C, h', w') with their colour ceiling ``hi``, and the image at 30% as (H, W, 3) uint8 under the overlay."""

    bank: FeatureBank
    z: torch.Tensor
    squared: torch.Tensor  # (C, h * w): F_c^2, so an energy map is one matrix-vector product
    small: torch.Tensor
    hi: float
    dimmed: np.ndarray

    @staticmethod
    def of(image: torch.Tensor) -> Bank:
        bank = feature_bank(image)
        small = resize_long_side(bank.maps, DISPLAY_SIDE)[0]
        dimmed = (image[0].permute(1, 2, 0) * (0.3 * 255)).round().to(torch.uint8).cpu().numpy()
        squared = (bank.maps[0] ** 2).reshape(bank.channels, -1)
        return Bank(bank, squeeze(bank.maps), squared, small, float(robust_max(small)), np.ascontiguousarray(dimmed))


def se_layers(stage: Bank, weights: torch.Tensor, how: str, query: tuple[int, int], side: int,
              reduction: int) -> tuple:
    """The mosaics before and after recalibration, the squeeze and weight bars, the energy
    overlay with the box around ``query`` (input px), and the metrics."""
    bank, z, small, hi = stage.bank, stage.z, stage.small, stage.hi
    H, W = stage.dimmed.shape[:2]
    c, r = bank.channels, reduction
    h, w = bank.maps.shape[-2:]
    inside, total = channel_energies(bank.maps, box_in(query, side, w, h, bank.scale))
    share_before = float(region_share(torch.ones_like(weights), inside, total))
    share_after = float(region_share(weights, inside, total))
    x0, y0, x1, y1 = box_in(query, side, W, H)
    box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    recal = small * weights[:, None, None]
    energy = (weights * weights @ stage.squared).view(h, w)  # sum_c (s_c F_c)^2
    return (
        FeatureMapsLayer("Features", small, labels=bank.short_labels, levels=(0.0, hi), colormap="inferno",
                         caption=f"{c} channels at {w}x{h} (the bank runs at reduced resolution; mosaic at "
                                 f"{small.shape[-1]}x{small.shape[-2]})"),
        FeatureMapsLayer("Recalibrated features", recal, levels=(0.0, hi), colormap="inferno",
                         caption="each channel times its excitation weight, in the layout and colour scale of "
                                 "Features"),
        BarsLayer("Squeeze and excitation", bank.glyphs, {"squeeze z (channel mean)": z[0], "weight": weights},
                  y_range=(0.0, 1.0),
                  caption=f"{how}. —/|\\ + octave: Gabor stripes at 0/45/90/135°; R G B Y: colour opponents; "
                          "L D: light, dark; T1 T2: texture fine, coarse"),
        PointsLayer(
            "Recalibrated energy",
            sets=(PointSet(np.array([query], np.float32), color=(60, 220, 255), size=11.0, label="query"),),
            background=energy_overlay(stage.dimmed, energy),
            boxes=(box,),
            caption=f"sum over channels of (weight x feature)^2; box share {share_before:.1%} before, "
                    f"{share_after:.1%} after recalibration",
        ),
        MetricsLayer("Metrics", {
            "channels C": c,
            "reduction r": r,
            "hidden C/r": se_hidden_size(c, r),
            "MLP parameters (2C²/r + C/r + C)": se_parameter_count(c, r),
            "MLP multiply-adds": 2 * c * se_hidden_size(c, r),
            "rescale multiplies": c * h * w,
            "box share before": f"{share_before:.2%}",
            "box share after": f"{share_after:.2%}",
            "mean weight": round(float(weights.mean()), 4),
        }),
    )


def energy_overlay(dimmed: np.ndarray, energy: torch.Tensor) -> np.ndarray:
    """The dimmed image (H, W, 3) uint8 plus ``energy`` (h, w) through a 70% inferno, as floats
    in [0, 1], so the box can be drawn on top (a PointsLayer has boxes; a HeatmapLayer has none).
    Blended in uint8 with cv2's table lookup: a third of the cost of float colour mapping."""
    H, W = dimmed.shape[:2]
    e = (energy / robust_max(energy, samples=4096)).clamp(0, 1).mul(255).to(torch.uint8).cpu().numpy()
    e = cv2.resize(e, (W, H), interpolation=cv2.INTER_LINEAR)
    heat = cv2.LUT(cv2.merge([e, e, e]), _inferno_table())
    return cv2.add(dimmed, heat).astype(np.float32) * np.float32(1 / 255)


@lru_cache(maxsize=1)
def _inferno_table() -> np.ndarray:
    """(1, 256, 3) uint8 inferno colours (RGB) times 0.7, the overlay's opacity."""
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    rgb = cv2.applyColorMap(ramp, cv2.COLORMAP_INFERNO)[:, 0, ::-1]
    return np.ascontiguousarray((0.7 * rgb).round().astype(np.uint8)[None])
