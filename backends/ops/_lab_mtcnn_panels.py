"""The MTCNN lab's panels, each from one stage of ``backends.models.mtcnn_detect``: boxes and
landmarks over the input, P-Net's heatmaps placed on the input frame, filters and feature maps."""

from __future__ import annotations

import math

import torch

from backends.imaging import hwc, image_grid, long_side_size, resize
from backends.layers import INPUT, BarsLayer, FeatureMapsLayer, HeatmapLayer, ImageLayer, PointSet, PointsLayer
from backends.models.mtcnn_detect import LANDMARKS, STRIDE, WINDOW, Boxes, Detection, Level

# One colour per landmark, in LANDMARKS' order (boxes are drawn yellow)
COLOURS = ((255, 150, 40), (40, 110, 255), (110, 255, 110), (255, 60, 60), (220, 110, 255))
COLOUR_NAMES = ("orange", "blue", "green", "red", "violet")
OVERVIEW_SIDE = 160  # long side of each tile of the every-scale grid


def extents(boxes: torch.Tensor) -> tuple[tuple[float, float, float, float], ...]:
    """x1, y1, x2, y2 rows as the (x, y, w, h) extents the layers draw."""
    return tuple((x1, y1, x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes.tolist())


def landmark_sets(faces: Boxes) -> tuple[PointSet, ...]:
    """One point set per landmark kind; the layers place point i's centre at i, so edge coordinates
    move by half a pixel."""
    if faces.landmarks is None or not len(faces):
        return ()
    return tuple(PointSet(faces.landmarks[:, k] - 0.5, colour, 8.0, name)
                 for k, (name, colour) in enumerate(zip(LANDMARKS, COLOURS)))


def faces_layer(faces: Boxes, min_face: int, threshold: float) -> PointsLayer:
    if not len(faces):
        caption = (f"No face found: no box passed all three stages (O-Net threshold {threshold:.2f}, faces of "
                   f"{min_face} px and up). Lower a threshold or the smallest face size, or see the stages' panels.")
        return PointsLayer("Faces", (), INPUT, caption=caption)
    probs = ", ".join(f"{p:.4f}" for p in faces.scores.tolist()[:8]) + (" ..." if len(faces) > 8 else "")
    key = ", ".join(f"{n} {c}" for n, c in zip(LANDMARKS, COLOUR_NAMES))
    noun = "face" if len(faces) == 1 else "faces"
    return PointsLayer("Faces", landmark_sets(faces), INPUT, boxes=extents(faces.boxes),
                       caption=f"{len(faces)} {noun} found by O-Net, probability {probs} (best first). Landmarks: {key}.")


def heatmap_extent(level: Level, height: int, width: int) -> tuple[float, float, float, float]:
    """Where P-Net's map lies on the input: cell j's window spans [2j, 2j + 12] / s, so the cell
    drawn centred on the window's centre (2j + 6) / s with its stride 2 / s as width starts at 5 / s."""
    sx, sy = level.scale_xy(height, width)
    h, w = level.prob.shape
    return (5 / sx, 5 / sy, w * STRIDE / sx, h * STRIDE / sy)


def heatmap_layer(levels: tuple[Level, ...], index: int, height: int, width: int) -> HeatmapLayer:
    k = min(index, len(levels) - 1)
    lv = levels[k]
    face = WINDOW / lv.scale
    shown = "" if k == index else f" (scale {index} asked; this image has {len(levels)} scales, 0..{len(levels) - 1})"
    h, w = lv.prob.shape
    caption = (f"P-Net's face probability at pyramid scale {k}{shown}: the image resized by {lv.scale:.3f} to "
               f"{lv.size[1]} x {lv.size[0]}, where P-Net's 12-pixel window covers a {face:.0f}-pixel face. "
               f"{w} x {h} cells, each a window at stride 2 (2 / {lv.scale:.3f} = {STRIDE / lv.scale:.1f} px here), "
               f"drawn at its window's centre.")
    return HeatmapLayer("P-Net heatmap", lv.prob, background=INPUT, levels=(0.0, 1.0), colormap="inferno",
                        extent=heatmap_extent(lv, height, width), caption=caption)


def on_input_frame(level: Level, height: int, width: int, size: tuple[int, int]) -> torch.Tensor:
    """P-Net's map of ``level`` sampled onto a (gh, gw) grid over the input: each grid pixel takes the
    cell whose window centre is nearest its own centre; NaN where no window is centred nearby."""
    gh, gw = size
    sx, sy = level.scale_xy(height, width)
    h, w = level.prob.shape
    dev = level.prob.device
    x = (torch.arange(gw, device=dev) + 0.5) * width / gw
    y = (torch.arange(gh, device=dev) + 0.5) * height / gh
    j = torch.round((x * sx - WINDOW / 2) / STRIDE).long()
    i = torch.round((y * sy - WINDOW / 2) / STRIDE).long()
    out = level.prob[i.clamp(0, h - 1)][:, j.clamp(0, w - 1)].clone()
    out[(i < 0) | (i >= h)] = math.nan
    out[:, (j < 0) | (j >= w)] = math.nan
    return out


def every_scale_layer(levels: tuple[Level, ...], image: torch.Tensor) -> HeatmapLayer:
    height, width = image.shape[2:]
    size = long_side_size(height, width, OVERVIEW_SIDE)
    maps = torch.stack([on_input_frame(lv, height, width, size) for lv in levels])
    labels = tuple(f"{WINDOW / lv.scale:.0f} px" for lv in levels)
    return HeatmapLayer("P-Net at every scale", maps, labels, background=hwc(resize(image, size)[0]), levels=(0.0, 1.0),
                        colormap="inferno",
                        caption=f"P-Net's face probability at each of the {len(levels)} pyramid scales, placed on the "
                                "input (each tile the whole image, reduced), labelled with the face size the scale "
                                "finds (12 px / scale): small faces light up in the first tiles, big ones in the last. "
                                "Blank margins: no 12-pixel window is centred there.")


def boxes_layer(name: str, stage: Boxes, caption: str) -> PointsLayer:
    return PointsLayer(name, (), INPUT, boxes=extents(stage.boxes), caption=caption)


def stage_bars(d: Detection) -> BarsLayer:
    labels = ("P-Net cells over threshold", "after NMS (proposals)", "kept by R-Net", "kept by O-Net (faces)")
    counts = torch.tensor([len(d.candidates), len(d.proposals), len(d.refined), len(d.faces)], dtype=torch.float32)
    return BarsLayer("Boxes per stage", labels, {"boxes": counts}, value_label="boxes", horizontal=True,
                     caption="How many boxes each stage of the cascade passes on: each network is larger and "
                             "slower than the last and sees fewer boxes.")


def filters_layer(weight: torch.Tensor) -> ImageLayer:
    """P-Net's first-layer filters (C, 3, 3, 3) as RGB tiles, each about grey = 0 and stretched to
    its own largest magnitude."""
    c = weight.shape[0]
    tiles = 0.5 + weight / (2 * weight.abs().amax((1, 2, 3), keepdim=True).clamp(min=1e-12))
    columns = -(-c // 2)
    grid = image_grid(tiles, columns=columns, scale=16, gap=1, fill=0.0)
    rows = tuple(f"filters {r * columns + 1}-{min(c, (r + 1) * columns)}" for r in range(-(-c // columns)))
    return ImageLayer("P-Net conv1 filters", hwc(grid), row_labels=rows,
                      column_labels=tuple(str(i + 1) for i in range(columns)),
                      caption=f"P-Net's {c} first-layer filters (3 x 3 x RGB), each shown about grey = 0 and "
                              "stretched to its own largest weight: colour and edge detectors.")


def features_layer(maps: torch.Tensor, layer: str, level: Level) -> FeatureMapsLayer:
    return FeatureMapsLayer("P-Net feature maps", maps, tuple(str(i + 1) for i in range(len(maps))),
                            caption=f"P-Net's {layer} output ({len(maps)} channels after PReLU, numbered) on the image resized "
                                    f"by {level.scale:.3f} ({level.size[1]} x {level.size[0]}), one shared colour "
                                    "scale.")
