"""Model lab, spatial transformer classifier: a network trained on the cluttered, distorted digits
(``backends.data.cluttered_glyphs``) predicts an affine map, reads a 24x24 crop through it and
classifies the crop. Shows what it sees, where it looks (the sampling grid on its input), the
rectified crop and its class probabilities, on the image (its centre square), a sketch or a
test-set sample. The network is ``backends.models.glyph_stn``; the panels are built in
``_lab_stn_panels``."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from backends.data import cluttered_glyphs as cg
from backends.layers import Result
from backends.models.glyph_stn import WEIGHTS_PATH, load_stn
from backends.ops._lab_stn_panels import Seen, layers
from backends.params import ChoiceParam, IntParam, ParamError
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

SOURCES = ("image", "test sample")
SAMPLE = (("source", ("test sample",)),)


@register
class LabSTN(Operator):
    spec = OperatorSpec(
        name="lab_stn",
        title="Spatial transformer classifier",
        family="Model lab",
        description=(
            "A trained spatial transformer network: a localisation net finds the digit (a score per cell of a 12x12 "
            "map, the crop centred on their softmax-weighted mean) and predicts an affine map, the 48x48 input is read "
            "through it into a 24x24 crop, and a small CNN classifies the crop; trained from the class labels alone, "
            "from a centred crop of 0.36 of the input. The shipped one learned to find and zoom on the digit (on the "
            "test set its crop centre lies a median 4.3 px from the digit's, against 10.6 for a centred crop, and "
            "covers 0.48 of the input) but not to straighten it: its classifier copes with the turn itself. Draw a digit on the sketchpad, open a picture "
            "of one (its centre square is read), or pick a test-set sample."
        ),
        params=(
            ChoiceParam("source", "image", SOURCES, help="The image's centre square (bright or dark digits), or a sample "
                        "of the fixed test set the network was scored on."),
            IntParam("sample", 0, 0, cg.TEST_SIZE - 1, help="Index into the fixed test set.", enabled_when=SAMPLE),
        ),
        uses_query=False,
        primary="Sampling grid",
        tabs=(("network", ("Sampling grid", "Rectified crop", "Class probabilities", "Network input")),),
    )
    memo_capacity = 8

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        if not WEIGHTS_PATH.is_file():
            raise ParamError(f"the shipped network {WEIGHTS_PATH.name} is missing from assets/weights/; "
                             "run python -m backends.training.glyph_stn")
        timer = StageTimer()
        with timer("network"):
            model = load_stn(device=str(image.device))
            seen = self.memo.stage("seen", params, ("source", "sample"), lambda: Seen(*cg.network_input(image, params["source"], params["sample"])))
            out = self.memo.stage("explain", params, ("source", "sample"), lambda: model.explain(seen.x))
        _, _, h, w = image.shape
        return Result(layers(seen, out, (h, w), timer.metrics()))
