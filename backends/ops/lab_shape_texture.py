"""Texture against shape: two small CNNs trained on images where a shape and a texture both name
the class, one plainly and one with texture shuffling; the user builds cue-conflict images (the
shape of one class, the texture of another, or either taken from an image) and sees which cue each
network follows, beside each network's shape-bias fraction measured on the fixed cue-conflict set.

The data is ``backends.data.shape_texture``; the networks and the shape-bias fraction are
``backends.models.shape_texture``; the shape-bias bars are read from the manifest entries the
training script wrote (``tests/test_lab_shape_texture.py`` measures them again).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import torch

from backends.data import shape_texture as data
from backends.data.patches import pyramid
from backends.imaging import image_grid
from backends.layers import BarsLayer, ImageLayer, MetricsLayer, Result
from backends.models.shape_texture import NETWORKS, TITLES, load_network, manifest_entry, probabilities
from backends.params import ChoiceParam, ParamError, SeedParam
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

SOURCES = ("built image", "input image as is")
SHAPE_FROM = ("class", "input image")
SAMPLES = ("brick", "coffee", "chelsea", "text", "zone_plate", "checkerboard")
TEXTURE_FROM = ("class", "flat colour", "input image", *(f"sample: {s}" for s in SAMPLES))
BUILT = (("source", ("built image",)),)


@lru_cache(maxsize=len(SAMPLES))
def sample_fill(name: str) -> np.ndarray:
    """(3, 48, 48) texture fill from a bundled sample (its centre square), read once."""
    pixels = pyramid(name)[0].astype(np.float32) / 255.0
    return data.image_texture(torch.from_numpy(pixels).permute(2, 0, 1)[None])


def network_input(image: torch.Tensor, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """What the networks see (3, 48, 48) and the builder's parts: the shape mask and the fill."""
    if params["source"] == "input image as is":
        x = data.image_texture(image)
        return {"input": x, "mask": np.ones((data.SIZE, data.SIZE), np.float32), "fill": x}
    seed = int(params["seed"])
    if params["shape_from"] == "class":
        shape: int | np.ndarray = data.SHAPES.index(params["shape_class"])
    else:
        shape = data.image_mask(image)
        if shape.sum() < 4:
            raise ParamError("shape_from = input image: the input has no bright region to cut a shape from "
                             "(its luma is flat); choose shape_from = class")
    source = params["texture_from"]
    if source == "class":
        texture: int | np.ndarray = data.TEXTURES.index(params["texture_class"])
    elif source == "flat colour":
        texture = data.K + data.FOREIGN.index("flat")
    elif source == "input image":
        texture = data.image_texture(image)
    else:
        texture = sample_fill(source.removeprefix("sample: "))
    return data.build(shape, texture, seed)

def verdict(pred: int, params: Mapping[str, Any]) -> str:
    """Which cue a prediction follows, where the built image's cues name classes."""
    if params["source"] != "built image":
        return data.CLASS_NAMES[pred]
    shape = data.SHAPES.index(params["shape_class"]) if params["shape_from"] == "class" else None
    texture = data.TEXTURES.index(params["texture_class"]) if params["texture_from"] == "class" else None
    said = data.CLASS_NAMES[pred]
    if pred == shape and pred == texture:
        return f"{said} (both cues)"
    if pred == shape:
        return f"{said}: the shape"
    if pred == texture:
        return f"{said}: the texture"
    if shape is not None and texture is not None:
        return f"{said}: neither cue"
    return f"{said}: not the shape" if shape is not None else f"{said}: not the texture" if texture is not None else said


@register
class ShapeTextureLab(Operator):
    spec = OperatorSpec(
        name="lab_shape_texture",
        title="Texture against shape",
        family="Model lab",
        description=(
            "Two small CNNs learned five classes where a shape (circle, triangle, square, cross, star) and a "
            "texture (stripes, dots, checks, waves, noise) both name the class. One was trained plainly, one with "
            "texture shuffling (half the training images carry a random texture or a plain fill). Build a cue-conflict "
            "image, the shape of one class filled with the texture of another or with a photo, and see which cue each "
            "network follows; the shape-bias bars say how often each followed the shape on a fixed set of "
            "1000 cue-conflict images."
        ),
        params=(
            ChoiceParam("source", "built image", SOURCES,
                        help="What the networks classify: the image built below, or the input image's centre "
                             "square as it is (resized to 48x48)."),
            ChoiceParam("shape_from", "class", SHAPE_FROM, enabled_when=BUILT,
                        help="The shape: a class's shape, or a mask cut from the input image (its brighter or "
                             "darker part by Otsu's threshold, whichever is smaller)."),
            ChoiceParam("shape_class", "circle", data.SHAPES, enabled_when=BUILT + (("shape_from", ("class",)),),
                        help="The class whose shape is drawn."),
            ChoiceParam("texture_from", "class", TEXTURE_FROM, enabled_when=BUILT,
                        help="What fills the shape: a class's texture, one flat colour (the shape alone), the "
                             "input image, or a bundled sample (their centre square at 48x48, cut by the shape)."),
            ChoiceParam("texture_class", "checks", data.TEXTURES,
                        enabled_when=BUILT + (("texture_from", ("class",)),),
                        help="The class whose texture fills the shape."),
            SeedParam("seed", 0, help="Placement, size, rotation and colours of the built image."),
        ),
        uses_query=False,
        primary="Network input",
    )
    memo_capacity = 8

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        names = ("source", "shape_from", "shape_class", "texture_from", "texture_class", "seed")
        with timer("build"):
            built = self.memo.stage("built", params, names, lambda: network_input(image, params))
        x = torch.from_numpy(built["input"])[None]
        with timer("classify"):
            probs = {n: probabilities(load_network(n, image.device), x.to(image.device))[0] for n in NETWORKS}
        entries = {n: manifest_entry(n) for n in NETWORKS}
        layers = [
            ImageLayer("Network input", built["input"].transpose(1, 2, 0),
                       caption="What both networks classify: 48x48 RGB, as in training."),
            self._builder(built),
            BarsLayer("Class probabilities", data.CLASS_NAMES,
                      {TITLES[n]: p.numpy() for n, p in probs.items()}, y_range=(0.0, 1.0),
                      value_label="softmax probability", caption="Each network's softmax over the five classes."),
            self._bias_bars(entries),
        ]
        metrics: dict[str, Any] = {}
        for n in NETWORKS:
            pred = int(probs[n].argmax())
            metrics[f"{TITLES[n]} says"] = verdict(pred, params)
            metrics[f"{TITLES[n]} confidence"] = round(float(probs[n][pred]), 4)
        for n in NETWORKS:
            e = entries[n]
            metrics[f"{TITLES[n]} test accuracy"] = e.get("test_accuracy", "not in manifest")
            metrics[f"{TITLES[n]} shape-only accuracy"] = e.get("shape_only_accuracy", "not in manifest")
            metrics[f"{TITLES[n]} texture-only accuracy"] = e.get("texture_only_accuracy", "not in manifest")
            metrics[f"{TITLES[n]} photo-filled shape accuracy"] = e.get("shape_with_photo_accuracy", "not in manifest")
        metrics.update(timer.metrics())
        layers.append(MetricsLayer("Metrics", metrics))
        return Result(tuple(layers))

    @staticmethod
    def _builder(built: dict[str, np.ndarray]) -> ImageLayer:
        mask = np.repeat(built["mask"][None], 3, 0)
        tiles = torch.from_numpy(np.stack([mask, built["fill"], built["input"]]))
        grid = image_grid(tiles, 3, gap=2)
        return ImageLayer("Cue-conflict builder", grid.permute(1, 2, 0).numpy(),
                          column_labels=("shape", "texture", "input"),
                          caption="The shape's mask, what fills it, and the image they make.")

    @staticmethod
    def _bias_bars(entries: dict[str, dict]) -> BarsLayer:
        shape = np.array([float(entries[n].get("shape_bias", np.nan)) for n in NETWORKS], np.float32)
        images = entries[NETWORKS[0]].get("images", "?")
        return BarsLayer(
            "Shape bias", tuple(TITLES[n] for n in NETWORKS), {"shape": shape, "texture": 1.0 - shape},
            y_range=(0.0, 1.0), value_label="share of cue-conflict decisions",
            caption=(f"Measured by the training script on the fixed cue-conflict set ({images} images, every "
                     "shape/texture pair) and read from the weights manifest: of the images a network assigns to "
                     "the shape's or the texture's class, the share assigned to the shape's."))
