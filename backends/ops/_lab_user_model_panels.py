"""The Model lab's panels from one capture: layer list, feature maps, Grad-CAM, top-5 classes,
attention and rollout, deformable sampling points, and the model's metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from backends.functional.attention import attention_rollout
from backends.functional.grad_cam import upsample_cam
from backends.lab.capture import CamResult, Capture, as_spatial, token_grid
from backends.lab.deform_capture import sampling_points, to_frame
from backends.lab.loading import LoadedModel
from backends.layers import INPUT, BarsLayer, FeatureMapsLayer, HeatmapLayer, MetricsLayer, PointSet, PointsLayer
from backends.registry import Query, query_point
from backends.timing import StageTimer

MAX_ROWS = 400  # layer rows listed; a larger model says how many are left out


@dataclass(frozen=True)
class View:
    loaded: LoadedModel
    cap: Capture
    cam: CamResult
    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    query: Query
    example: bool

    def class_name(self, k: int) -> str:
        names = self.loaded.classes
        return names[k] if k < len(names) else f"class {k}"

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return (0.0, 0.0, float(self.image_hw[1]), float(self.image_hw[0]))

    def clicked(self) -> tuple[int, int]:
        return query_point(self.query, self.image_hw[1], self.image_hw[0])


def build(view: View, params: Mapping[str, Any]) -> list:
    layers = [grad_cam_panel(view), top5_panel(view), layer_list(view), feature_maps(view, params)]
    if view.cap.attention:
        layers += attention_panels(view, params)
    if view.cap.deform:
        layers.append(deform_panel(view, params))
    return layers


def grad_cam_panel(view: View) -> HeatmapLayer:
    cam = view.cam.cam
    up = upsample_cam(cam[None], view.input_hw)[0]
    top = float(up.max())
    h, w = cam.shape
    return HeatmapLayer("Grad-CAM", up, background=INPUT, levels=(0.0, max(top, 1e-12)), extent=view.extent,
                        caption=f"Where layer {view.cam.layer} ({h}x{w} cells) finds evidence for "
                                f"'{view.class_name(view.cam.class_index)}' (Grad-CAM, bright = more); the whole "
                                f"image was resized to {view.input_hw[1]}x{view.input_hw[0]} for the model"
                                + ("" if top > 0 else "; all zero: no positive evidence at this layer"))


def top5_panel(view: View) -> BarsLayer:
    probs = torch.softmax(view.cap.scores[0].double(), 0)
    k = min(5, probs.numel())
    p, idx = probs.topk(k)
    labels = tuple(n if n == str(int(i)) else f"{n} ({int(i)})" for n, i in ((view.class_name(int(i)), i) for i in idx))
    return BarsLayer("Top-5 classes", labels, {"probability": p.float()}, y_range=(0.0, 1.0), value_label="probability",
                     horizontal=True, caption=f"The model's {k} most probable of {probs.numel()} classes (softmax "
                                              f"of its scores)")


def layer_list(view: View) -> MetricsLayer:
    prop = view.cap.proposals()
    rows: dict[str, str] = {}
    listed = [li for li in view.cap.layers if li.shape is not None]
    for n, li in enumerate(listed[:MAX_ROWS], start=1):
        marks = [m for m, hit in (("proposed for Grad-CAM", li.path == prop["grad_cam"]),
                                  ("attention", li.path in prop["attention"]),
                                  ("deformable", li.path in prop["deformable"])) if hit]
        shape = "x".join(str(s) for s in li.shape)
        rows[f"{n}. {li.path or '(model)'} ({li.type_name})"] = shape + (f"  * {', '.join(marks)}" if marks else "")
    if len(listed) > MAX_ROWS:
        rows["…"] = f"{len(listed) - MAX_ROWS} more layers not listed"
    return MetricsLayer("Layers", rows, caption="Every layer that ran, in the order it finished, with its output "
                                                 "shape; set 'layer' or 'cam_layer' to a number to look at it")


def feature_maps(view: View, params: Mapping[str, Any]) -> FeatureMapsLayer:
    info = view.cap.layer(params["layer"])
    out = view.cap.outputs[info.path]
    try:
        maps = as_spatial(out)[0]
    except ValueError:
        maps = out.reshape(1, 1, -1)[0] if out.dim() < 3 else out[0].reshape(out.shape[1], 1, -1)
    energy = maps.abs().mean(dim=(1, 2))
    order = energy.argsort(descending=True)[: params["channels"]]
    return FeatureMapsLayer("Feature maps", maps[order], labels=tuple(f"ch {int(i)}" for i in order),
                            caption=f"Layer {info.path} ({info.type_name}, {'x'.join(map(str, info.shape))}): its "
                                    f"{len(order)} strongest channels by mean |activation|, one shared colour scale")


def _token_map(view: View, row: torch.Tensor, n: int) -> Optional[torch.Tensor]:
    grid = token_grid(n)
    if grid is None:
        return None
    prefix, side = grid
    return row[prefix:].reshape(side, side)


def _query_row(view: View, w: torch.Tensor, params: Mapping[str, Any]) -> tuple[torch.Tensor, str]:
    """The attention row drawn: the class token's (mean over queries without one) or the clicked patch's."""
    n = w.shape[-1]
    prefix, side = token_grid(n) or (0, 0)
    if params["attention_from"] == "clicked patch" and side:
        qx, qy = view.clicked()
        cell = (qy * side // view.image_hw[0]) * side + qx * side // view.image_hw[1]
        return w[prefix + cell], f"from the clicked patch (row {cell // side}, column {cell % side})"
    if prefix:
        return w[0], "from the class token"
    return w.mean(0), "averaged over all queries (the model has no class token)"


def attention_panels(view: View, params: Mapping[str, Any]) -> list:
    blocks = list(view.cap.attention)
    b = params["attention_block"]
    path = blocks[-1] if b == 0 or b > len(blocks) else blocks[b - 1]
    weights = view.cap.attention[path][0]  # (H, L, S)
    heads = weights.shape[0]
    h = params["head"]
    w = weights.mean(0) if h == 0 or h > heads else weights[h - 1]
    which = "mean of heads" if h == 0 or h > heads else f"head {h} of {heads}"
    layers = []
    row, whose = _query_row(view, w, params)
    grid = _token_map(view, row, w.shape[-1]) if w.shape[-1] == w.shape[-2] else None
    if grid is not None:
        layers.append(HeatmapLayer("Attention", grid, background=INPUT, extent=view.extent,
                                   levels=(0.0, max(float(grid.max()), 1e-12)),
                                   caption=f"Attention of {path} ({which}), {whose}: how much each patch is read; "
                                           f"captured by {view.cap.attention_how.get(path, '?')}"))
    square = [view.cap.attention[p][0].mean(0) for p in blocks]
    if grid is not None and all(a.shape == square[0].shape for a in square):
        roll = attention_rollout([a.double() for a in square])
        rrow, rwhose = _query_row(view, roll, params)
        rgrid = _token_map(view, rrow, roll.shape[-1])
        layers.append(HeatmapLayer("Attention rollout", rgrid.float(), background=INPUT, extent=view.extent,
                                   levels=(0.0, max(float(rgrid.max()), 1e-12)),
                                   caption=f"Attention rollout through all {len(blocks)} blocks (heads averaged, "
                                           f"half identity for the skip path), {rwhose}"))
    return layers


def deform_panel(view: View, params: Mapping[str, Any]) -> PointsLayer:
    paths = list(view.cap.deform)
    d = params["deform_layer"]
    path = paths[0] if d == 0 or d > len(paths) else paths[d - 1]
    sample = view.cap.deform[path]
    (ho, wo), (H, W) = sample.out_hw, view.image_hw
    qx, qy = view.clicked()
    oy, ox = min(ho - 1, int((qy + 0.5) * ho / H)), min(wo - 1, int((qx + 0.5) * wo / W))
    regular, deformed, mask = sampling_points(sample, oy, ox)
    reg, dfm = to_frame(regular, sample.in_hw, (H, W)), to_frame(deformed, sample.in_hw, (H, W))
    centre = to_frame(torch.tensor([[float(ox), float(oy)]], dtype=torch.float64), (ho, wo), (H, W))[0]
    return PointsLayer("Deformable sampling", (
        PointSet(reg.float(), color=(170, 170, 170), size=6.0, label="regular grid"),
        PointSet(dfm.float(), color=(255, 80, 80), size=9.0, label="where it reads (brightness = mask)",
                 join_to=(float(centre[0]), float(centre[1])), values=mask.float())),
        background=INPUT, caption=f"{path}: the {len(mask)} taps of output cell ({ox}, {oy}) of {wo}x{ho} (the clicked "
                                  f"pixel) at their regular places (grey) and where the offsets move them (red), "
                                  f"in image pixels; offsets read as (dy, dx) per tap, as deform_conv2d does")


def model_metrics(view: View, timer: StageTimer) -> MetricsLayer:
    loaded = view.loaded
    values: dict[str, Any] = {
        "model": (f"bundled example ({loaded.source.label}): open your own with File > Open Model…" if view.example
                  else f"{loaded.source.label} ({loaded.source.kind})"),
        "parameters": loaded.parameter_count(),
        "input": "x".join(map(str, (loaded.channels, *view.input_hw))),
        "classes": int(view.cap.scores.shape[1]),
        "attention blocks": len(view.cap.attention),
        "deformable layers": len(view.cap.deform),
    }
    for i, note in enumerate([*loaded.notes, *view.cap.warnings], start=1):
        values[f"note {i}"] = note
    values.update(timer.metrics(2))
    return MetricsLayer("Model", values, caption="What was loaded and how long each stage took")
