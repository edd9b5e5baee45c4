"""The deformable CNN's panels: sampling points of each deformable layer for the clicked cell, their
composed receptive field, modulation masks, offset lengths, Grad-CAM, class probabilities.
Everything is drawn in the image's frame over the network's 48x48 view placed where it was read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from backends.data import cluttered_glyphs as cg
from backends.functional.deformable import offset_magnitude
from backends.functional.grad_cam import upsample_cam
from backends.layers import BarsLayer, HeatmapLayer, ImageLayer, MetricsLayer, PointSet, PointsLayer
from backends.ops._lab_deformable_points import composed, grid_to_view, layer_taps, to_image

if TYPE_CHECKING:
    from backends.ops.lab_deformable import Traced

TAP_NAMES = tuple(f"({dx:+d},{dy:+d})" for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # row-major taps (dx, dy)
COLORS = ((90, 200, 255), (255, 120, 60))  # layer 1, layer 2


def _focus(points: torch.Tensor, pad: float) -> tuple[float, float, float, float]:
    lo, hi = points.min(0).values - pad, points.max(0).values + pad
    return float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])


def layers(t: Traced, cell: tuple[int, int], size: tuple[int, int], timings: dict[str, float]) -> tuple:
    h, w = size
    x0, y0, side = cg.view_box(h, w)
    scale = side / cg.SIZE  # image pixels per view pixel
    back = cg.placed_view(t.x, h, w)
    centre = to_image(torch.tensor([float(cell[0]), float(cell[1])]), size)
    first = layer_taps(t.offsets[0], t.masks[0], cell)
    second = layer_taps(t.offsets[1], t.masks[1], cell)
    pts1, pts2 = to_image(first.points, size), to_image(second.points, size)
    joint, weights = composed(t.offsets, t.masks, cell)
    joint_img = to_image(joint, size)
    c = (float(centre[0]), float(centre[1]))
    everything = torch.cat([pts1, pts2, joint_img, centre[None]]) if len(joint) else torch.cat([pts1, pts2, centre[None]])
    focus = _focus(everything, 6 * scale)
    half = 2.5 * 4 * scale  # a regular pair of 3x3 layers reads 5 cells of 4 view pixels around the cell
    box = (c[0] + 0.5 - half, c[1] + 0.5 - half, 2 * half, 2 * half)  # edges: pixel i spans [i, i + 1]
    top = int(t.probs.argmax())
    return (
        PointsLayer("Sampling points", (
            PointSet(pts1, color=COLORS[0], size=8.0, label="layer 1 reads (for this cell)", join_to=c,
                     values=first.mask.numpy()),
            PointSet(pts2, color=COLORS[1], size=11.0, label="layer 2 reads", join_to=c, values=second.mask.numpy()),
            PointSet(centre[None], color=(255, 255, 255), size=6.0, label="clicked cell"),
        ), background=back, focus=focus,
            caption=f"cell ({cell[0]}, {cell[1]}) of the 12x12 grid (one cell = {4 * scale:.0f} image px): where each "
                    "deformable layer's 3x3 taps read, offsets (dy, dx) per row-major tap as torchvision; brightness: "
                    "the tap's modulation mask"),
        PointsLayer("Receptive field", (
            PointSet(joint_img, color=(255, 220, 80), size=6.0, label="layer 1 reads behind layer 2's taps",
                     values=(weights / weights.max()).numpy() if len(weights) else None),
            PointSet(pts2, color=COLORS[1], size=10.0, label="layer 2 reads"),
            PointSet(centre[None], color=(255, 255, 255), size=6.0, label="clicked cell"),
        ), background=back, boxes=(box,), focus=focus,
            caption=f"both deformable layers together: {len(joint)} reads of the stem's grid, brightness = layer-2 mask x "
                    "bilinear weight x layer-1 mask; box: the 5x5 cells a regular pair of 3x3 layers would read"),
        BarsLayer("Modulation masks", TAP_NAMES, {"layer 1": first.mask.numpy(), "layer 2": second.mask.numpy()},
                  y_range=(0.0, 1.0), value_label="mask",
                  caption="each tap's modulation (sigmoid) at the clicked cell, taps named by (dx, dy) on the regular grid"),
        HeatmapLayer("Offset lengths", torch.stack([offset_magnitude(o).mean(0) for o in t.offsets]).numpy(),
                     labels=("layer 1", "layer 2"), levels=(0.0, float(max(offset_magnitude(o).max() for o in t.offsets)) + 1e-6),
                     colormap="viridis", caption="mean length of the nine offsets at each cell of the 12x12 grid, grid pixels"),
        HeatmapLayer("Grad-CAM", upsample_cam(t.cam[None].float().cpu(), (cg.SIZE, cg.SIZE))[0], background=back,
                     extent=(float(x0), float(y0), float(side), float(side)),
                     caption=f"Grad-CAM of '{cg.CLASSES[top]}' at the last deformable layer (12x12), bilinear to the view"),
        ImageLayer("Network input", t.x[0, 0].cpu(), levels=(0.0, 1.0), extent=(float(x0), float(y0), float(side), float(side)),
                   caption="what the network reads, 48x48 grey; click to pick a cell"),
        BarsLayer("Class probabilities", tuple(cg.CLASSES), {"probability": t.probs.numpy()}, y_range=(0.0, 1.0),
                  value_label="probability",
                  caption=f"softmax: '{cg.CLASSES[top]}' at {float(t.probs[top]):.1%}"
                          + (f"; true class '{cg.CLASSES[t.label]}'" if t.label is not None else "")),
        MetricsLayer("Metrics", {
            "cell (x, y)": f"({cell[0]}, {cell[1]})",
            "cell centre, view px": f"({float(grid_to_view(torch.tensor(float(cell[0])))):.1f}, "
                                    f"{float(grid_to_view(torch.tensor(float(cell[1])))):.1f})",
            "layer 1 mean offset px (grid)": round(float(offset_magnitude(t.offsets[0]).mean()), 3),
            "layer 2 mean offset px (grid)": round(float(offset_magnitude(t.offsets[1]).mean()), 3),
            "layer 1 mean mask": round(float(t.masks[0].mean()), 3),
            "layer 2 mean mask": round(float(t.masks[1].mean()), 3),
            "predicted": cg.CLASSES[top],
            **({"true class": cg.CLASSES[t.label]} if t.label is not None else {}),
            **timings,
        }),
    )
