"""What the self-attention operator draws: the clicked query's rows, and the full-matrix panels.

Maps are token grids in raster order (token ``r * cols + c`` at row r, column c), drawn either as
blocks on a scaled copy of the image (multi-map panels, whose maps must share the background's
size) or as (rows, cols) arrays placed on the input frame by their extent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from backends.features import Tokens, opponent_to_rgb
from backends.imaging import hwc, resize_long_side
from backends.layers import INPUT, HeatmapLayer, ImageLayer

DISPLAY_SIDE = 256
STACK_LAYERS = ("Rollout", "Attention entropy", "Stack output")  # from the full matrices: they settle
HEAD_TITLES = ("colour", "edges", "texture", "position")  # the heads, as their panels name them


def token_extent(t: Tokens) -> tuple[float, float, float, float]:
    """Where a (rows, cols) token map lies on the input: the patches it covers, from (0, 0)."""
    return (0.0, 0.0, float(t.cols * t.patch), float(t.rows * t.patch))


@dataclass(frozen=True)
class Backgrounds:
    """The image scaled by ``f`` to at most DISPLAY_SIDE, (h, w, 3) float32, for multi-map panels,
    as is and at 60% brightness (so sparse attention stands out), made once per image so no
    frame converts it again."""

    small: np.ndarray
    dimmed: np.ndarray
    f: float

    @staticmethod
    def of(image: torch.Tensor) -> Backgrounds:
        _, _, H, W = image.shape
        small = resize_long_side(image, DISPLAY_SIDE)
        f = min(1.0, DISPLAY_SIDE / max(H, W))  # the scale the sides were rounded from
        rgb = np.ascontiguousarray(hwc(small[0]).cpu().numpy(), dtype=np.float32)
        return Backgrounds(rgb, (0.6 * rgb).astype(np.float32), f)


def on_display_grid(maps: torch.Tensor, t: Tokens, bg: Backgrounds) -> torch.Tensor:
    """Token maps (K, N) as blocks on the scaled image: (K, h, w), 0 (drawn transparent) where no
    patch covers: the right and bottom remainder the patchify leaves out."""
    dh, dw, f = bg.small.shape[0], bg.small.shape[1], bg.f
    ys = ((torch.arange(dh, device=maps.device) + 0.5) / f / t.patch).long()
    xs = ((torch.arange(dw, device=maps.device) + 0.5) / f / t.patch).long()
    grid = maps.reshape(-1, t.rows, t.cols)
    out = grid.index_select(1, ys.clamp(max=t.rows - 1)).index_select(2, xs.clamp(max=t.cols - 1))
    out[:, ys >= t.rows] = 0.0
    out[:, :, xs >= t.cols] = 0.0
    return out


def position_term(pe: Optional[torch.Tensor], rot: Optional[torch.Tensor], qi: int, strength: float,
                  n: int, device: Any) -> tuple[torch.Tensor, str]:
    """What the position embedding adds to the query's logits (N,), and a caption."""
    if pe is not None:
        return strength * (pe @ pe[qi]), ("strength x PE_query . PE_key, added to every head's logit; sinusoidal "
                                          "tables have 8 frequencies (4 per axis in 2-D), base 10000, so they ripple")
    if rot is not None:
        kernel = torch.cos(rot - rot[qi]).mean(1)
        return kernel, "mean over rotated pairs of cos(angle_key - angle_query), the factor on each pair's content score"
    return torch.zeros(n, device=device), "no position embedding (the position head still uses patch centres)"


def others_max(v: torch.Tensor, index: int) -> torch.Tensor:
    """The max of ``v`` (..., N) over every entry but ``index``: a colour scale that the query's
    own token, always the largest, would otherwise flatten."""
    if v.shape[-1] < 2:
        return v.amax(-1).clamp_min(1e-12)
    rest = torch.cat([v[..., :index], v[..., index + 1 :]], -1)
    return rest.amax(-1).clamp_min(1e-12)


def query_layers(bg: Backgrounds, tokens: Tokens, row: torch.Tensor, pe: Optional[torch.Tensor],
                 rot: Optional[torch.Tensor], qi: int, params: Mapping[str, Any]) -> tuple:
    """What the clicked query's rows (heads, N) show: each head and their mean, and the position
    term."""
    n = tokens.rows * tokens.cols
    per_head = torch.cat([row, row.mean(0)[None]])
    tiles = on_display_grid((per_head / others_max(per_head, qi)[:, None]).clamp(max=1.0), tokens, bg)
    pos, pos_caption = position_term(pe, rot, qi, float(params["pe_strength"]), n, row.device)
    pos_hi = float(pos.abs().max().clamp_min(1e-6)) if params["position"] != "none" else 1.0
    return (
        HeatmapLayer("Head attention", tiles, labels=HEAD_TITLES + ("mean",),
                     background=bg.dimmed, levels=(0.0, 1.0), opacity=0.9,
                     caption=f"where the clicked patch (token {qi} of {n}) looks: each head's softmax row and their "
                             "mean, each scaled to its largest weight off the clicked patch itself (its own weights "
                             "are in the metrics)"),
        HeatmapLayer("Position term", pos.view(tokens.rows, tokens.cols), levels=(-pos_hi, pos_hi),
                     colormap="CET-D4", extent=token_extent(tokens), caption=f"{params['position']}: {pos_caption}"),
    )


def coarser_note(a_tokens: Tokens, patch: int, tokens: int) -> str:
    """Says plainly when the full-matrix panels use a coarser grid than the chosen patch."""
    if a_tokens.patch == patch:
        return ""
    return (f"at patch {a_tokens.patch} ({a_tokens.rows * a_tokens.cols} tokens), not the chosen {patch}: "
            f"its {tokens} x {tokens} matrices would take seconds. ")


def stack_layers(bg: Backgrounds, a_tokens: Tokens, entropy: torch.Tensor, mixed: torch.Tensor, depth: int,
                 rollout: torch.Tensor, qa: int, note: str) -> tuple:
    """What the full N x N matrices show: rollout (N,) from the query, every query's ``entropy``
    (heads + 2, N) (layer 1's heads, then the head mean of layers 1 and ``depth``), and the
    stack's output features ``mixed`` (N, 13). ``note`` leads each caption (a coarser grid)."""
    entropy_maps = on_display_grid(entropy, a_tokens, bg)
    lo, hi = float(entropy.min()), max(float(entropy.max()), float(entropy.min()) + 1e-3)
    mixed = opponent_to_rgb(mixed[:, :3] * a_tokens.spread[:3] + a_tokens.mean[:3]).clamp(0, 1)
    layers = "1 layer" if depth == 1 else f"{depth} layers"
    return (
        HeatmapLayer("Rollout", rollout.view(a_tokens.rows, a_tokens.cols), background=INPUT, opacity=0.9,
                     levels=(0.0, float(others_max(rollout, qa))), extent=token_extent(a_tokens),
                     caption=f"{note}How much each patch feeds the clicked one through {layers} with skip connections "
                             f"(rollout of (A + I) / 2, heads averaged); the clicked patch's own share "
                             f"({float(rollout[qa]):.2f}) is off the scale"),
        HeatmapLayer("Attention entropy", entropy_maps, labels=HEAD_TITLES + ("layer 1", f"layer {depth}"),
                     background=bg.small, levels=(lo, hi), colormap="viridis", opacity=0.8,
                     caption=f"{note}How spread each patch's attention is: entropy / log N, 0 looks at one patch, "
                             f"1 everywhere; the four heads of layer 1, then the mean of the heads of layer 1 and of layer {depth}"),
        ImageLayer("Stack output", mixed.view(a_tokens.rows, a_tokens.cols, 3), levels=(0.0, 1.0),
                   extent=token_extent(a_tokens),
                   caption=f"{note}Each patch's mean colour after {layers} of f <- (f + A f) / 2: the attention "
                           "output, heads averaged"),
    )
