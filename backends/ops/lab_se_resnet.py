"""Model lab: a small SE-ResNet trained on cluttered, distorted glyphs. Shows each block's
squeeze-and-excitation weights for the input against the test-set mean and per class, the class
probabilities, and Grad-CAM on the last block.

The network is ``backends.models.glyph_se_resnet`` (trained by
``backends.training.glyph_se_resnet``); its input is the image's centre square read as a glyph,
or an item of the fixed test set. Panels are in ``_lab_se_resnet_panels``."""

from __future__ import annotations

from typing import Any, Mapping

from backends.data.cluttered_glyphs import CLASSES, TEST_SIZE
from backends.layers import ImageLayer, MetricsLayer, Result
from backends.models.glyph_inputs import SOURCES, cached_test_set, glyph_background, glyph_input
from backends.models.glyph_se_resnet import excitation_stats, explain, load_glyph_se_resnet
from backends.models.weights import read_entry
from backends.ops._lab_se_resnet_panels import (
    BY_CLASS,
    by_class_layer,
    cam_layer,
    excitation_layers,
    excitation_name,
    probability_layer,
)
from backends.params import ChoiceParam, IntParam
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

TARGETS = ("predicted",) + tuple(CLASSES)
BLOCKS = 3
STATS_ITEMS = 500  # test glyphs the means are taken over: a quarter of the set, a second on a CPU


@register
class LabSEResNet(Operator):
    spec = OperatorSpec(
        name="lab_se_resnet",
        title="SE-ResNet (trained glyphs)",
        family="Model lab",
        description=(
            "A small squeeze-and-excitation ResNet trained here on distorted, cluttered digits. Each block "
            "weighs its channels by a sigmoid of their means: the bars show those weights for this input "
            "beside their test-set mean, the table how they differ by class. Grad-CAM shows where the "
            "last block's evidence for a class lies. Reads the image's centre square (a sketch works) or a "
            "test-set glyph."
        ),
        params=(
            ChoiceParam("source", "image", SOURCES, help="The image's centre square as a glyph, or a test-set glyph."),
            IntParam("sample", 0, 0, TEST_SIZE - 1, help="Index into the fixed test set.",
                     enabled_when=(("source", ("test sample",)),)),
            ChoiceParam("target", "predicted", TARGETS, help="The class Grad-CAM explains."),
            IntParam("block", BLOCKS, 1, BLOCKS, help="The block whose excitations the by-class table shows."),
        ),
        primary="Grad-CAM",
        uses_query=False,  # every panel is of the whole glyph
        tabs=(("excitations", (BY_CLASS,) + tuple(excitation_name(k) for k in range(BLOCKS))),),
    )
    memo_capacity = 8

    def __init__(self) -> None:
        super().__init__()
        self._stats_ready = False  # excitation_stats caches the test-set pass per model


    def run(self, image, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        with timer("load"):
            model = load_glyph_se_resnet(image.device)
        with timer("input"):
            glyph = self.memo.stage("glyph", params, ("source", "sample"),
                                    lambda: glyph_input(image, params["source"], params["sample"]))
            background = self.memo.stage("background", params, ("source", "sample"),
                                         lambda: glyph_background(glyph.x, h, w))
        target = None if params["target"] == "predicted" else CLASSES.index(params["target"])
        with timer("forward + backward"):
            probs, excitations, maps, grads = self.memo.stage(
                "explain", params, ("source", "sample", "target"), lambda: explain(model, glyph.x, target))
        pred = int(probs[0].argmax())
        fast = (cam_layer(glyph, background, maps, grads, pred if target is None else target),
                probability_layer(probs[0], glyph.label))
        glyph_layer = ImageLayer("Glyph", glyph.x[0, 0], levels=(0.0, 1.0), colormap="CET-L1", extent=glyph.extent,
                                 caption=f"what the network reads: {glyph.caption}")
        entry = read_entry("glyph_se_resnet.safetensors")
        metrics = {"prediction": f"{CLASSES[pred]} ({float(probs[0, pred]):.1%})",
                   "true label": CLASSES[glyph.label] if glyph.label is not None else "-",
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "stated test accuracy": entry.get("test_accuracy", "?")}
        excite = [s[0] for s in excitations]

        block = min(int(params["block"]), len(excite)) - 1

        def with_stats() -> Result:
            t2 = StageTimer()
            with t2("test-set excitations"):
                xs, ys = cached_test_set()
                stats = excitation_stats(model, xs[:STATS_ITEMS], ys[:STATS_ITEMS])
            return Result(fast + (by_class_layer(excite[block], stats, block),) + excitation_layers(excite, stats) + (
                          glyph_layer, MetricsLayer("Metrics", {
                              **metrics, f"accuracy on test glyphs 0-{STATS_ITEMS - 1}": round(stats.accuracy, 4),
                              **timer.metrics(), **t2.metrics()})))

        if self._stats_ready:
            return with_stats()
        self._stats_ready = True  # the first frame: the input's panels now, the test-set ones when it settles
        return Result(fast + excitation_layers(excite, None) + (glyph_layer, MetricsLayer("Metrics", {
            **metrics, **timer.metrics()})), settle=with_stats, pending=(BY_CLASS,))
