"""Train the spatial transformer classifier: ``python -m backends.training.glyph_stn``.

The localisation network learns at a tenth of the classifier's rate (a fast one swings theta
about before the classifier can use the crop). Writes assets/weights/glyph_stn.safetensors and
its manifest entry, with the test accuracy and how far the learned crop centre lies from the
true glyph centre.
"""

from __future__ import annotations

import torch

from backends.data import cluttered_glyphs as cg
from backends.models.glyph_stn import WEIGHTS_PATH, GlyphSTN
from backends.training.glyph_lab import main


@torch.no_grad()
def centre_error(model: GlyphSTN, n: int = 500) -> dict:
    """Median distance (48x48 pixels) from the crop's centre (theta @ (0, 0, 1)) to the drawn glyph's
    centre, over the first ``n`` test items: how well the network learned where to look."""
    x, _, params = cg.test_set()
    theta = model.localise(x[:n])
    centre = (theta[:, :, 2] + 1.0) * cg.SIZE / 2 - 0.5  # normalized -> pixels (align_corners=False)
    err = (centre - torch.from_numpy(params["centre"][:n])).norm(dim=1)
    scale = theta[:, :, :2].det().abs().sqrt()
    return {"crop_centre_error_px_median": round(float(err.median()), 2),
            "crop_scale_median": round(float(scale.median()), 3)}


if __name__ == "__main__":
    main("glyph_stn", GlyphSTN,
         lambda m: [(m.classifier.parameters(), 1.0), (m.localisation.parameters(), 0.1)],
         WEIGHTS_PATH, "backends.training.glyph_stn", __doc__, steps=1500, lr=3e-3, extra=centre_error)
