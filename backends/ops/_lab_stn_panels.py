"""The STN classifier's panels: the network's input placed where it was read, the sampling grid
of the learned affine on it, the rectified crop, class probabilities and the affine in numbers.

Geometry: theta maps the crop's normalized coordinates to the 48x48 input's (align_corners=False);
:func:`crop_to_view` turns that into 48x48 pixels, ``cluttered_glyphs.to_image_frame`` into the
image's pixels, so every drawn point lies in the input's frame (clicks and markers apply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from backends.data import cluttered_glyphs as cg
from backends.functional.coords import border_polyline, points_to_normalized, points_to_pixels
from backends.imaging import upscale_nearest
from backends.layers import BarsLayer, ImageLayer, MetricsLayer, SamplingGridLayer
from backends.models.glyph_stn import CROP

GRID_LINES = 9  # grid lines per side drawn on the input (the crop's first and last pixel included)


@dataclass
class Seen:
    """The network's input (1, 1, 48, 48) and, for a test sample, its label and parameters."""

    x: torch.Tensor
    label: Optional[int] = None
    item: Optional[dict] = None


def crop_to_view(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Crop pixels (..., 2) (32x32, centres on integers) -> the 48x48 input pixels they read."""
    normalized = points_to_normalized(points.double(), CROP, CROP, False)
    read = normalized @ theta[:, :2].double().T + theta[:, 2].double()
    return points_to_pixels(read, cg.SIZE, cg.SIZE, False)


def grid_points(theta: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling grid (GRID_LINES, GRID_LINES, 2) and the crop's outer edge (K, 2), both in
    the image's pixels: where the crop's pixels and border read."""
    ticks = torch.linspace(0, CROP - 1, GRID_LINES, dtype=torch.float64)
    lattice = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), -1)
    edge = border_polyline(CROP, CROP, 8, torch.float64)
    h, w = size
    return (cg.to_image_frame(crop_to_view(theta, lattice), h, w).float(),
            cg.to_image_frame(crop_to_view(theta, edge), h, w).float())


def layers(seen: Seen, out: dict[str, torch.Tensor], size: tuple[int, int], timings: dict[str, float]) -> tuple:
    h, w = size
    x0, y0, side = cg.view_box(h, w)
    theta, probs = out["theta"][0].cpu(), out["probs"][0].cpu()
    grid, edge = grid_points(theta, size)
    top = int(probs.argmax())
    where = "test sample" if seen.label is not None else "the image's centre square"
    return (
        SamplingGridLayer("Sampling grid", grid, background=cg.placed_view(seen.x, h, w), outline=edge,
                          caption=f"where the crop reads the network's input ({where}, 48x48 shown in place): "
                                  f"{GRID_LINES}x{GRID_LINES} of the crop's {CROP}x{CROP} pixels; yellow: the crop's border"),
        ImageLayer("Network input", seen.x[0, 0].cpu(), levels=(0.0, 1.0), extent=(float(x0), float(y0), float(side), float(side)),
                   caption=f"what the network reads: {where} as 48x48 grey, bright digits on dark"),
        ImageLayer("Rectified crop", upscale_nearest(out["crop"][0, 0].cpu(), 8), levels=(0.0, 1.0),
                   caption=f"the {CROP}x{CROP} crop the classifier reads through the predicted affine"),
        BarsLayer("Class probabilities", tuple(cg.CLASSES), {"probability": probs.numpy()}, y_range=(0.0, 1.0),
                  value_label="probability",
                  caption=f"softmax of the classifier: '{cg.CLASSES[top]}' at {float(probs[top]):.1%}"
                          + (f"; true class '{cg.CLASSES[seen.label]}'" if seen.label is not None else "")),
        MetricsLayer("Metrics", {**theta_metrics(theta), **truth_metrics(seen, theta, top), **timings}),
    )


def theta_metrics(theta: torch.Tensor) -> dict[str, str | float]:
    """The affine as numbers: theta, where the crop's centre reads, how much it zooms and turns."""
    centre = crop_to_view(theta, torch.tensor([(CROP - 1) / 2, (CROP - 1) / 2]))
    lin = theta[:, :2].double()
    det = float(torch.linalg.det(lin))
    return {
        "theta row 1": " ".join(f"{v:+.4f}" for v in theta[0].tolist()),
        "theta row 2": " ".join(f"{v:+.4f}" for v in theta[1].tolist()),
        "crop centre px (48x48)": f"({float(centre[0]):.2f}, {float(centre[1]):.2f})",
        "crop covers (fraction of input area)": round(abs(det), 4),
        "crop x axis turned deg (CCW)": round(math.degrees(math.atan2(-float(lin[1, 0]), float(lin[0, 0]))), 2),
    }


def truth_metrics(seen: Seen, theta: torch.Tensor, top: int) -> dict[str, str | float]:
    """For a test sample: the true class, and where the digit truly is and how it is turned."""
    if seen.label is None or seen.item is None:
        return {"predicted": cg.CLASSES[top]}
    centre = crop_to_view(theta, torch.tensor([(CROP - 1) / 2, (CROP - 1) / 2]))
    true_centre = np.asarray(seen.item["centre"], np.float64)
    return {
        "predicted": cg.CLASSES[top], "true class": cg.CLASSES[seen.label],
        "true digit centre px": f"({true_centre[0]:.2f}, {true_centre[1]:.2f})",
        "crop centre error px": round(float(np.hypot(*(centre.numpy() - true_centre))), 2),
        "true digit angle deg (CCW)": round(float(seen.item["angle"]), 2),
        "true digit scale": round(float(seen.item["scale"]), 3),
    }
