"""Train the deformable-v2 CNN: ``python -m backends.training.glyph_deformable``.

Offset and mask predictors learn at a tenth of the rate of the rest, as in the deformable
networks' papers (fast offsets scatter the taps before the features settle). Writes
assets/weights/glyph_deformable.safetensors and its manifest entry.
"""

from __future__ import annotations

from backends.models.glyph_deformable import WEIGHTS_PATH, GlyphDeformable
from backends.training.glyph_lab import main


def _groups(model: GlyphDeformable) -> list:
    predictors = [p for b in model.deform for p in b.predictor.parameters()]
    ids = {id(p) for p in predictors}
    return [([p for p in model.parameters() if id(p) not in ids], 1.0), (predictors, 0.1)]


if __name__ == "__main__":
    main("glyph_deformable", GlyphDeformable, _groups, WEIGHTS_PATH, "backends.training.glyph_deformable",
         __doc__, steps=450, lr=3e-3)
