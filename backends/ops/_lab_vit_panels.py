"""What the ViT lab draws: one head's (or the head mean's) attention from the chosen token, every
layer's heads as a labelled grid, attention rollout, class-specific relevance, probabilities.

Token maps are the 6 x 6 patch grid in raster order (patch token ``1 + r * g + c``), placed on the
input frame over the centre square the glyph comes from; the class token (0) has no place on the
grid, so its share is given in the caption."""

from __future__ import annotations

from typing import Optional

import torch

from backends.data.cluttered_glyphs import CLASSES
from backends.functional.attention import attention_rollout
from backends.functional.relevance import relevance_rollout
from backends.imaging import grid_cell, image_grid
from backends.layers import BarsLayer, HeatmapLayer, ImageLayer
from backends.models.glyph_inputs import GlyphInput
from backends.models.glyph_vit import Explanation

ATTENTION, HEADS, ROLLOUT, RELEVANCE, PROBS = ("Attention", "Heads by layer", "Rollout", "Relevance",
                                               "Class probabilities")
TILE = 6  # display pixels per token in the heads grid


def token_name(index: int, grid: int) -> str:
    if index == 0:
        return "the class token"
    r, c = divmod(index - 1, grid)
    return f"patch (row {r}, col {c})"


def patch_box(index: int, grid: int, extent: tuple[float, float, float, float]) -> tuple[tuple[float, ...], ...]:
    """The clicked patch's square on the input frame (edge coordinates); none for the class token."""
    if index == 0:
        return ()
    r, c = divmod(index - 1, grid)
    x0, y0, side, _ = extent
    cell = side / grid
    return ((x0 + c * cell, y0 + r * cell, cell, cell),)


def head_row(ex: Explanation, layer: int, head: Optional[int], index: int) -> torch.Tensor:
    """Row ``index`` (N,) of one layer's attention: head ``head`` (0-based) or the head mean."""
    a = ex.attentions[layer][0]  # (H, N, N)
    return (a[head] if head is not None else a.mean(0))[index]


def _token_map(row: torch.Tensor, grid: int) -> torch.Tensor:
    return row[1:].reshape(grid, grid)


def attention_layer(ex: Explanation, glyph: GlyphInput, background: torch.Tensor, layer: int,
                    head: Optional[int], index: int, grid: int) -> HeatmapLayer:
    row = head_row(ex, layer, head, index)
    who = f"head {head + 1}" if head is not None else "the mean of the heads"
    return HeatmapLayer(ATTENTION, _token_map(row, grid), background=background, extent=glyph.extent,
                        levels=(0.0, float(row[1:].max().clamp_min(1e-6))), boxes=patch_box(index, grid, glyph.extent),
                        opacity=0.6, caption=f"layer {layer + 1}, {who}: softmax(q k^T / sqrt(d)) from "
                        f"{token_name(index, grid)} to each patch (to the class token: {float(row[0]):.2f}); "
                        f"{glyph.caption}")


def heads_layer(ex: Explanation, layer: int, head: Optional[int], index: int, grid: int) -> ImageLayer:
    """Rows: layers; columns: heads and their mean; each tile the row of ``index`` over the
    patches, scaled to its own maximum."""
    depth, heads = len(ex.attentions), ex.attentions[0].shape[1]
    tiles = []
    for a in ex.attentions:
        rows = torch.cat([a[0, :, index], a[0, :, index].mean(0, keepdim=True)], 0)[:, 1:]  # (H + 1, N - 1)
        rows = rows / rows.amax(1, keepdim=True).clamp_min(1e-12)
        tiles.append(rows.reshape(heads + 1, 1, grid, grid))
    picture = image_grid(torch.cat(tiles, 0), heads + 1, scale=TILE, fill=0.0)[0]
    col = heads if head is None else head
    box = tuple(float(v) for v in grid_cell(layer * (heads + 1) + col, heads + 1, (grid, grid), scale=TILE))
    return ImageLayer(HEADS, picture, levels=(0.0, 1.0), colormap="inferno",
                      row_labels=tuple(f"layer {i + 1}" for i in range(depth)),
                      column_labels=tuple(f"head {h + 1}" for h in range(heads)) + ("mean",),
                      boxes=(box,), caption=f"attention from {token_name(index, grid)} to the patches, every layer "
                      f"and head, each tile scaled to its own maximum; the box is the selected one")


def rollout_layer(ex: Explanation, glyph: GlyphInput, background: torch.Tensor, index: int,
                  grid: int) -> tuple[HeatmapLayer, torch.Tensor]:
    """Rollout (head means, 0.5 A + 0.5 I, rows renormalized) row of ``index``; also the full row."""
    row = attention_rollout([a[0].mean(0) for a in ex.attentions])[index]
    return HeatmapLayer(ROLLOUT, _token_map(row, grid), background=background, extent=glyph.extent,
                        levels=(0.0, float(row[1:].max().clamp_min(1e-6))), boxes=patch_box(index, grid, glyph.extent),
                        caption=f"attention rollout through all {len(ex.attentions)} layers from "
                        f"{token_name(index, grid)}: its row sums to 1 ({float(row[0]):.2f} stays on the class "
                        "token); class-agnostic"), row


def relevance_layer(ex: Explanation, glyph: GlyphInput, background: torch.Tensor, index: int, grid: int,
                    target: int) -> HeatmapLayer:
    """Row ``index`` of the gradient-weighted relevance, less the identity's 1 on the token itself."""
    r = relevance_rollout(ex.attentions, ex.gradients)[0]
    row = r[index] - (torch.arange(r.shape[0], device=r.device) == index).to(r.dtype)
    top = float(row[1:].max())
    return HeatmapLayer(RELEVANCE, _token_map(row, grid), background=background, extent=glyph.extent,
                        levels=(0.0, max(top, 1e-6)), boxes=patch_box(index, grid, glyph.extent),
                        caption=f"relevance for class {CLASSES[target]} (Chefer et al. 2021: R += mean_h (dA * A)^+ R, "
                        f"layer by layer) from {token_name(index, grid)}, less its own identity term; "
                        f"peak {top:.3g}")


def probability_layer(probs: torch.Tensor, label: Optional[int]) -> BarsLayer:
    pred = int(probs.argmax())
    truth = f", true {CLASSES[label]}" if label is not None else ""
    return BarsLayer(PROBS, tuple(CLASSES), {"p": probs}, y_range=(0.0, 1.0), value_label="probability",
                     horizontal=False, caption=f"softmax of the class token's logits: predicted {CLASSES[pred]} "
                     f"({float(probs[pred]):.1%}){truth}")


