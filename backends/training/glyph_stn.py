"""Train the spatial transformer classifier: ``python -m backends.training.glyph_stn``.

The localisation network learns at a third of the classifier's rate (a fast one swings theta
about before the classifier can use the crop). Writes assets/weights/glyph_stn.safetensors and
its manifest entry, with the test accuracy and what the learned map does on the fixed test set
(:func:`localisation_metrics`).
"""

from __future__ import annotations

import numpy as np
import torch

from backends.data import cluttered_glyphs as cg
from backends.models.glyph_stn import WEIGHTS_PATH, GlyphSTN
from backends.training.glyph_lab import main

LOCALISATION_LR = 0.3  # the localisation net's learning rate, as a fraction of the classifier's


@torch.no_grad()
def localisation_metrics(model: GlyphSTN, n: int | None = None) -> dict:
    """What the learned map does on the fixed test set (its first ``n`` items when given), as medians:
    the distance (48x48 pixels) from the crop's centre (theta @ (0, 0, 1)) to the drawn digit's
    centre, the fraction of the input's area the crop covers (|det| of theta's linear part), and
    how far the crop's x axis is turned from the digit's own (degrees, against the true rotation)."""
    x, _, params = cg.test_set()
    n = len(x) if n is None else n
    theta = torch.cat([model.localise(x[i: i + 500]) for i in range(0, n, 500)])[:n].double()
    centre = (theta[:, :, 2] + 1.0) * cg.SIZE / 2 - 0.5  # normalized -> pixels (align_corners=False)
    err = (centre - torch.from_numpy(params["centre"][:n]).double()).norm(dim=1)
    area = theta[:, :, :2].det().abs()
    turned = torch.rad2deg(torch.atan2(-theta[:, 1, 0], theta[:, 0, 0])).numpy()
    angle_err = np.abs((turned - params["angle"][:n] + 180.0) % 360.0 - 180.0)
    return {"crop_centre_error_px_median": round(float(err.median()), 2),
            "crop_area_fraction_median": round(float(area.median()), 3),
            "crop_angle_error_deg_median": round(float(np.median(angle_err)), 1),
            "crop_angle_error_deg_if_upright": round(float(np.median(np.abs(params["angle"][:n]))), 1)}


def _groups(model: GlyphSTN) -> list:
    return [(model.classifier.parameters(), 1.0), (model.localisation.parameters(), LOCALISATION_LR)]


if __name__ == "__main__":
    main("glyph_stn", GlyphSTN, _groups, WEIGHTS_PATH, "backends.training.glyph_stn", __doc__,
         steps=3000, lr=3e-3, extra=localisation_metrics)
