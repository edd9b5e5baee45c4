"""Model lab: a small vision transformer with a class token, trained on cluttered, distorted
glyphs. Shows each layer's and head's attention from the class token or a clicked patch, every
head of every layer as a labelled grid, attention rollout, class-specific gradient-weighted
relevance (Chefer et al. 2021) and the class probabilities.

The network is ``backends.models.glyph_vit`` (trained by ``backends.training.glyph_vit``); one
forward and backward pass (``explain``) gives every attention matrix and its gradient, cached
until the input or the class changes, so a click or a layer/head change only redraws."""

from __future__ import annotations

from typing import Any, Mapping

from backends.data.cluttered_glyphs import CLASSES, TEST_SIZE
from backends.layers import ImageLayer, MetricsLayer, Result
from backends.models.glyph_inputs import SOURCES, glyph_background, glyph_input, glyph_pixel
from backends.models.glyph_vit import WEIGHTS_PATH, ViTConfig, explain, load_glyph_vit
from backends.models.weights import read_entry
from backends.ops._lab_vit_panels import (
    attention_layer,
    head_row,
    heads_layer,
    probability_layer,
    relevance_layer,
    rollout_layer,
    token_name,
)
from backends.params import ChoiceParam, IntParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

FROM = ("class token", "clicked patch")
HEAD_CHOICES = ("mean",) + tuple(str(h + 1) for h in range(ViTConfig.heads))
TARGETS = ("predicted",) + tuple(CLASSES)


@register
class LabViT(Operator):
    spec = OperatorSpec(
        name="lab_vit",
        title="ViT (trained glyphs)",
        family="Model lab",
        description=(
            "A small vision transformer trained here on distorted, cluttered digits: a 6x6 grid of 8x8 patches "
            "(each token made by a small convolutional stem) and a class token. See where each head of each "
            "layer looks from the class token or a clicked patch, how attention flows through the stack "
            "(rollout), and which patches carry the evidence for a class (gradient-weighted "
            "relevance). Reads the image's centre square (a sketch works) or a test glyph."
        ),
        params=(
            ChoiceParam("source", "image", SOURCES, help="The image's centre square as a glyph, or a test-set glyph."),
            IntParam("sample", 0, 0, TEST_SIZE - 1, help="Index into the fixed test set.",
                     enabled_when=(("source", ("test sample",)),)),
            ChoiceParam("attend_from", "class token", FROM, help="The query token whose attention rows are drawn."),
            IntParam("layer", 1, 1, ViTConfig.depth, help="The layer the Attention panel shows."),
            ChoiceParam("head", "mean", HEAD_CHOICES, help="One head, or the mean over heads."),
            ChoiceParam("target", "predicted", TARGETS, help="The class the relevance explains."),
        ),
        primary="Attention",
        tabs=(("attention", ("Attention", "Heads by layer", "Rollout", "Relevance")),),
    )
    memo_capacity = 8

    def run(self, image, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        with timer("load"):
            model = load_glyph_vit(image.device)
        grid = model.config.grid
        with timer("input"):
            glyph = self.memo.stage("glyph", params, ("source", "sample"),
                                    lambda: glyph_input(image, params["source"], params["sample"]))
            background = self.memo.stage("background", params, ("source", "sample"),
                                         lambda: glyph_background(glyph.x, h, w))
        target = None if params["target"] == "predicted" else CLASSES.index(params["target"])
        with timer("forward + backward"):
            ex = self.memo.stage("explain", params, ("source", "sample", "target"),
                                 lambda: explain(model, glyph.x, target))
        pred = int(ex.probabilities[0].argmax())
        index = 0
        if params["attend_from"] == "clicked patch":
            u, v = glyph_pixel(query_point(query, w, h), glyph.extent)
            index = 1 + (v // model.config.patch) * grid + u // model.config.patch
        layer = min(int(params["layer"]), len(ex.attentions)) - 1
        head = None if params["head"] == "mean" else min(int(params["head"]), model.config.heads) - 1
        with timer("panels"):
            rollout, rollout_row = rollout_layer(ex, glyph, background, index, grid)
            layers = (attention_layer(ex, glyph, background, layer, head, index, grid),
                      heads_layer(ex, layer, head, index, grid), rollout,
                      relevance_layer(ex, glyph, background, index, grid, pred if target is None else target),
                      probability_layer(ex.probabilities[0], glyph.label),
                      ImageLayer("Glyph", glyph.x[0, 0], levels=(0.0, 1.0), colormap="CET-L1", extent=glyph.extent,
                                 caption=f"what the network reads: {glyph.caption}; click to pick a patch"))
        entry = read_entry(WEIGHTS_PATH.name)
        c = model.config
        row = head_row(ex, layer, head, index)
        return Result(layers + (MetricsLayer("Metrics", {
            "prediction": f"{CLASSES[pred]} ({float(ex.probabilities[0, pred]):.1%})",
            "true label": CLASSES[glyph.label] if glyph.label is not None else "-",
            "query token": f"{index}: {token_name(index, grid)}",
            "attention to class token": round(float(row[0]), 4),
            "rollout on class token": round(float(rollout_row[0]), 4),
            "tokens": f"{grid} x {grid} patches of {c.patch} px + class token = {c.tokens}",
            "layers x heads x dim": f"{c.depth} x {c.heads} x {c.dim}",
            "parameters": sum(p.numel() for p in model.parameters()),
            "stated test accuracy": entry.get("test_accuracy", "?"),
            **timer.metrics(),
        }),))
