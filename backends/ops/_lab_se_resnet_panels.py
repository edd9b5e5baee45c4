"""What the SE-ResNet lab draws: Grad-CAM over the glyph, class probabilities, each block's SE
excitations against the test-set mean, and one block's excitations by class."""

from __future__ import annotations

from typing import Optional

import torch

from backends.data.cluttered_glyphs import CLASSES, SIZE
from backends.functional.grad_cam import grad_cam, upsample_cam
from backends.layers import BarsLayer, HeatmapLayer, ImageLayer
from backends.models.glyph_inputs import GlyphInput
from backends.models.glyph_se_resnet import ExcitationStats

CAM = "Grad-CAM"
PROBS = "Class probabilities"
BY_CLASS = "Excitations by class"


def excitation_name(k: int) -> str:
    return f"SE block {k + 1}"


def cam_layer(glyph: GlyphInput, background: torch.Tensor, maps: torch.Tensor, grads: torch.Tensor,
              target: int) -> HeatmapLayer:
    """Grad-CAM of the last block (6 x 6) for ``target``, bilinear to 48 x 48 over the glyph."""
    cam = upsample_cam(grad_cam(maps, grads), (SIZE, SIZE))[0]
    top = float(cam.max())
    return HeatmapLayer(CAM, cam, background=background, levels=(0.0, max(top, 1e-6)), extent=glyph.extent,
                        opacity=0.55, caption=f"Grad-CAM for class {CLASSES[target]} on the last block's "
                        f"{maps.shape[2]}x{maps.shape[3]} maps (peak {top:.3g}; 0 where the evidence is negative); "
                        f"{glyph.caption}")


def probability_layer(probs: torch.Tensor, label: Optional[int]) -> BarsLayer:
    pred = int(probs.argmax())
    truth = f", true {CLASSES[label]}" if label is not None else ""
    return BarsLayer(PROBS, tuple(CLASSES), {"p": probs}, y_range=(0.0, 1.0), value_label="probability",
                     horizontal=False, caption=f"softmax of the logits: predicted {CLASSES[pred]} "
                     f"({float(probs[pred]):.1%}){truth}")


def excitation_layers(excitations: list[torch.Tensor], stats: Optional[ExcitationStats]) -> tuple[BarsLayer, ...]:
    """One panel per block: this input's SE weights, beside the test-set mean once it is known."""
    out = []
    for k, s in enumerate(excitations):
        series = {"this input": s}
        note = "the test-set mean comes when the panels settle"
        if stats is not None:
            series["test-set mean"] = stats.mean[k]
            moved = int((s - stats.mean[k]).abs().argmax())
            note = (f"largest change from the test-set mean: channel {moved} "
                    f"({float(stats.mean[k][moved]):.2f} -> {float(s[moved]):.2f})")
        out.append(BarsLayer(excitation_name(k), tuple(str(c) for c in range(len(s))), series, y_range=(0.0, 1.0),
                             value_label="SE weight", horizontal=False,
                             caption=f"block {k + 1}: sigmoid(fc2(relu(fc1(mean of each channel)))), "
                                     f"{len(s)} channels; {note}"))
    return tuple(out)


def row_height(rows: int, columns: int) -> int:
    """Picture pixels per table row that make a rows x columns table about square."""
    return max(1, round(columns / rows))


def by_class_layer(excitation: torch.Tensor, stats: ExcitationStats, block: int) -> ImageLayer:
    """((classes + 1) * r, C): the block's mean excitation over the test glyphs of each class, and
    this input's, each row drawn r pixels tall so the table is about square: 11 rows of 96
    channels at four pixels a row were a strip too thin to name every row."""
    rows = torch.cat([stats.by_class[block], excitation[None]], 0)
    table = rows.repeat_interleave(row_height(*rows.shape), 0)
    spread = stats.by_class[block].std(0)
    top = ", ".join(str(int(c)) for c in spread.argsort(descending=True)[:3])
    return ImageLayer(BY_CLASS, table, levels=(0.0, 1.0), colormap="viridis",
                      row_labels=tuple(CLASSES) + ("this",), axis_titles=(f"channel 0..{len(excitation) - 1}", "class"),
                      caption=f"block {block + 1}: mean SE weight over each class's test glyphs (last row: this "
                              f"input); channels that vary most across classes: {top}")
