"""Model lab, deformable CNN: a network trained on the cluttered, distorted digits whose two later
layers are deformable convolutions v2. Click the input: each deformable layer's nine sampling
points for that cell (from its learned offsets, in torchvision's channel order), the receptive
field the two make together, the modulation mask of each tap, Grad-CAM and class probabilities.
The network is ``backends.models.glyph_deformable``; points are computed in
``_lab_deformable_points``, panels built in ``_lab_deformable_panels``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from backends.data import cluttered_glyphs as cg
from backends.functional.grad_cam import grad_cam
from backends.layers import Result
from backends.models.glyph_deformable import WEIGHTS_PATH, GlyphDeformable, load_deformable
from backends.ops._lab_deformable_panels import layers
from backends.ops._lab_deformable_points import clicked_cell
from backends.params import ChoiceParam, IntParam, ParamError
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

SOURCES = ("image", "test sample")
SAMPLE = (("source", ("test sample",)),)


@dataclass
class Traced:
    """One pass of the network over its input, with what the panels draw."""

    x: torch.Tensor
    label: Optional[int]
    offsets: list[torch.Tensor]
    masks: list[torch.Tensor]
    probs: torch.Tensor
    cam: torch.Tensor  # (12, 12) Grad-CAM of the predicted class at the last deformable layer


def trace(model: GlyphDeformable, x: torch.Tensor, label: Optional[int]) -> Traced:
    """Forward with autograd (the worker runs without), then Grad-CAM of the top class."""
    with torch.enable_grad():
        out = model.trace(x)
        last, logits = out["outputs"][-1], out["logits"]
        top = int(logits.argmax(1))
        grads = torch.autograd.grad(logits[0, top], last)[0]
    return Traced(x, label, [o.detach() for o in out["offsets"]], [m.detach() for m in out["masks"]],
                  torch.softmax(logits.detach(), 1)[0], grad_cam(last.detach(), grads)[0])


@register
class LabDeformable(Operator):
    spec = OperatorSpec(
        name="lab_deformable",
        title="Deformable CNN",
        family="Model lab",
        description=(
            "A trained CNN whose two later layers are deformable convolutions v2: each tap reads the input at its "
            "place on the 3x3 grid plus a learned offset, scaled by a learned mask. Click a point of the input to "
            "see where each layer reads for it and the receptive field they make together. Draw a digit on the "
            "sketchpad, open a picture of one (its centre square is read), or pick a test-set sample."
        ),
        params=(
            ChoiceParam("source", "image", SOURCES, help="The image's centre square (bright or dark digits), or a sample "
                        "of the fixed test set the network was scored on."),
            IntParam("sample", 0, 0, cg.TEST_SIZE - 1, help="Index into the fixed test set.", enabled_when=SAMPLE),
        ),
        primary="Sampling points",
        tabs=(("reads", ("Sampling points", "Receptive field", "Modulation masks", "Offset lengths")),
              ("network", ("Grad-CAM", "Class probabilities", "Network input"))),
    )
    memo_capacity = 8

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        if not WEIGHTS_PATH.is_file():
            raise ParamError(f"the shipped network {WEIGHTS_PATH.name} is missing from assets/weights/; "
                             "run python -m backends.training.glyph_deformable")
        timer = StageTimer()
        _, _, h, w = image.shape
        with timer("network"):
            model = load_deformable(device=str(image.device))

            def run_network() -> Traced:
                x, label, _ = cg.network_input(image, params["source"], params["sample"])
                return trace(model, x, label)

            traced = self.memo.stage("trace", params, ("source", "sample"), run_network)
        cell = clicked_cell(query, (h, w))
        return Result(layers(traced, cell, (h, w), timer.metrics()))
