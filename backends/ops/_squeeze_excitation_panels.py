"""What the squeeze-and-excitation operator draws, and the per-image stage and box energies it
draws from (training reads the same energies).

Boxes are (x0, y0, x1, y1) in edge coordinates (pixel i spans [i, i + 1]), x right and y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backends.features import FeatureBank, feature_bank, robust_max
from backends.functional.squeeze_excitation import se_hidden_size, se_parameter_count, squeeze
from backends.imaging import resize_long_side
from backends.layers import INPUT, BarsLayer, FeatureMapsLayer, HeatmapLayer, MetricsLayer

MANUAL_LOGIT = 5.0  # strength 1 gives weights sigmoid(+-5) = 0.993 / 0.007
DISPLAY_SIDE = 128  # mosaic tiles are at most this size, to keep the UI thread's tiling cheap
SQUEEZE, WEIGHT = "squeeze: channel mean", "excitation weight"  # the bars' two series
TILE_KEY = "Tiles: N° sK = Gabor stripes at N° (0° horizontal), octave K; fine, coarse = texture (local contrast)"


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
    """Per-image stage: the bank, its squeeze ``z`` (1, C), and mosaic-sized maps ``small``
    (C, h', w') with their colour ceiling ``hi``."""

    bank: FeatureBank
    z: torch.Tensor
    squared: torch.Tensor  # (C, h * w): F_c^2, so an energy map is one matrix-vector product
    totals: torch.Tensor  # (C,): each row of ``squared`` summed, the whole map's energies
    small: torch.Tensor
    hi: float

    @staticmethod
    def of(image: torch.Tensor) -> Bank:
        bank = feature_bank(image)
        small = resize_long_side(bank.maps, DISPLAY_SIDE)[0]
        squared = (bank.maps[0] ** 2).reshape(bank.channels, -1)
        return Bank(bank, squeeze(bank.maps), squared, squared.sum(1), small, float(robust_max(small)))

    def energies(self, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`channel_energies` of the bank's maps from the squares made once per image (a
        frame that moves only the box or the weights squares nothing)."""
        x0, y0, x1, y1 = box
        h, w = self.bank.maps.shape[-2:]
        return self.squared.view(-1, h, w)[:, y0:y1, x0:x1].sum((1, 2)), self.totals


def se_layers(stage: Bank, weights: torch.Tensor, how: str, query: tuple[int, int], side: int,
              reduction: int, frame: tuple[int, int]) -> tuple:
    """The mosaics before and after recalibration, the squeeze and weight bars, the energy map
    with the box around ``query`` on the (W, H) input ``frame``, and the metrics."""
    bank, z, small, hi = stage.bank, stage.z, stage.small, stage.hi
    W, H = frame
    c, r = bank.channels, reduction
    h, w = bank.maps.shape[-2:]
    inside, total = stage.energies(box_in(query, side, w, h, bank.scale))
    share_before = float(region_share(torch.ones_like(weights), inside, total))
    share_after = float(region_share(weights, inside, total))
    x0, y0, x1, y1 = box_in(query, side, W, H)
    box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    recal = small * weights[:, None, None]
    energy = (weights * weights @ stage.squared).view(h, w)  # sum_c (s_c F_c)^2
    top = float(robust_max(energy, samples=4096))
    return (
        FeatureMapsLayer("Features", small, labels=bank.short_labels, levels=(0.0, hi), colormap="inferno",
                         caption=f"{c} channels at {w}x{h} (the bank runs at reduced resolution). {TILE_KEY}"),
        FeatureMapsLayer("Recalibrated features", recal, labels=bank.short_labels, levels=(0.0, hi), colormap="inferno",
                         caption=f"each channel times its excitation weight, on the colour scale of Features. {TILE_KEY}"),
        BarsLayer("Squeeze and excitation", bank.labels, {SQUEEZE: z[0], WEIGHT: weights}, y_range=(0.0, 1.0),
                  value_label="channel mean; weight (0 to 1)",
                  caption=f"{how}; {weight_summary(weights, bank.labels)}"),
        HeatmapLayer("Recalibrated energy", energy, background=INPUT, levels=(0.0, top), colormap="inferno", opacity=0.75,
                     extent=(0.0, 0.0, float(W), float(H)), boxes=(box,),
                     caption=f"sum over channels of (weight x feature)²: the box holds {share_before:.1%} of it "
                             f"before recalibration, {share_after:.1%} after"),
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


def weight_summary(weights: torch.Tensor, labels: tuple[str, ...], count: int = 2) -> str:
    """The channels kept most and least, in words: 'kept most: red (0.91) and vertical, octave 1
    (0.88); damped most: ...'."""
    order = torch.argsort(weights, descending=True).tolist()
    top = " and ".join(f"{labels[i]} ({float(weights[i]):.2f})" for i in order[:count])
    low = " and ".join(f"{labels[i]} ({float(weights[i]):.2f})" for i in order[::-1][:count])
    return f"kept most: {top}; damped most: {low}"
