"""The spatial transformer operator's sampling maps: an affine theta or a thin-plate spline
through a control lattice, both in ``grid_sample``'s normalized coordinates; the thetas its
'compose' and 'target' controls describe; what a fit leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from backends.functional.affine import (
    affine_points,
    affine_sampling_grid,
    compose_affine,
    invert_theta,
    theta_from_sampling_map,
)
from backends.functional.coords import frame_centre, grid_jacobian_determinant, points_to_pixels
from backends.functional.tps import tps_apply, tps_fit, tps_grid
from backends.layers import INPUT, Background

TPS_STEP = 4  # shown TPS grids: the spline every 4 px, linear between (see tps_grid)
FOLD_RGB = (1.0, 0.15, 0.1)  # the tint of the folded sheet's footprint on the input
FOLD_ALPHA = 0.8
MAX_FOLD_BOXES = 4
FOLD_SIDE = 128  # folds are found on a grid of about this many samples along the short side
SINGULAR_DET = 1e-9  # |det theta| below this: the affine map collapses the plane


def content_theta(params: Mapping[str, Any], w: int, h: int) -> torch.Tensor:
    """(2, 3) float64 theta of the 'compose' controls, which move the *content* (turn it by
    ``rotate`` degrees about the centre, scale, shear, shift by fractions of the frame): the
    sampling map is that map's inverse, composed in pixels so it stays rigid on any aspect."""
    content = compose_affine(params["rotate"], params["scale"], params["shear"], params["translate_x"] * w,
                             params["translate_y"] * h, frame_centre(w, h))
    return theta_from_sampling_map(torch.linalg.inv(content), (w, h), (w, h), params["align_corners"])


def target_theta(params: Mapping[str, Any], w: int, h: int) -> torch.Tensor:
    """(2, 3) theta of the registration target, built like :func:`content_theta` from target_*."""
    content = compose_affine(params["target_rotate"], params["target_scale"], 0.0, params["target_tx"] * w,
                             params["target_ty"] * h, frame_centre(w, h))
    return theta_from_sampling_map(torch.linalg.inv(content), (w, h), (w, h), params["align_corners"])


@dataclass
class Warp:
    """A sampling map in normalized coordinates: affine (theta) or TPS (controls -> targets)."""

    theta: Optional[torch.Tensor] = None  # (2, 3) float64
    controls: Optional[torch.Tensor] = None  # (K, 2)
    targets: Optional[torch.Tensor] = None  # (K, 2)

    @property
    def singular(self) -> bool:
        """An affine map that collapses the plane (det 0): no inverse, no content decomposition."""
        return self.theta is not None and abs(float(torch.linalg.det(self.theta[:, :2]))) < SINGULAR_DET

    @property
    def key(self) -> tuple:
        if self.theta is not None:
            return ("affine", tuple(round(v, 9) for v in self.theta.flatten().tolist()))
        return ("tps", tuple(round(v, 9) for v in self.targets.flatten().tolist()))

    def grid(self, h: int, w: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
        """(1, H, W, 2) where each output pixel samples the input, normalized."""
        if self.theta is not None:
            return affine_sampling_grid(self.theta, h, w, align_corners, like)
        return tps_grid(self.controls.to(like), self.targets.to(like), (h, w), align_corners, TPS_STEP)

    def inverse_grid(self, h: int, w: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
        """(1, H, W, 2): where each input pixel's content went in the output (the reverse map)."""
        if self.theta is not None:
            return affine_sampling_grid(invert_theta(self.theta), h, w, align_corners, like)
        return tps_grid(self.targets.to(like), self.controls.to(like), (h, w), align_corners, TPS_STEP)

    def map_normalized(self, points: torch.Tensor) -> torch.Tensor:
        """Normalized output points (..., 2) to the normalized input points they sample."""
        if self.theta is not None:
            return affine_points(self.theta, points)
        coeffs = tps_fit(self.controls.double(), self.targets.double())
        return tps_apply(coeffs, self.controls.double(), points.double()).to(points.dtype)


@dataclass
class Sampled:
    """The warped output of one warp and options, and, once it settled, the output sampled back
    through the inverse map: kept together, so both leave the memo together."""

    shown: torch.Tensor  # (H, W, 3)
    back: Optional[torch.Tensor] = None  # (H, W, 3)


@dataclass
class Registration:
    """A fit's outcome: the affine theta, or the TPS targets (then kept as the clicked targets)."""

    key: tuple
    theta: Optional[torch.Tensor]
    losses: list[float] = field(default_factory=list)
    step_ms: float = 0.0


@dataclass(frozen=True)
class Folds:
    """Where a sampling map folds over: ``fraction`` of the output pixels whose Jacobian
    determinant is 0 or has the sign opposite to the map's orientation (most pixels' sign); ``boxes``
    (x, y, w, h) around the largest folded regions of the output; and the grid panel's
    ``background``: the input, with the input pixels those folded outputs read tinted red."""

    fraction: float
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    background: Background = INPUT


def fold_map(warp: Warp, grid: torch.Tensor, image: torch.Tensor, align_corners: bool) -> Folds:
    """The folds of ``warp`` whose normalized (1, H, W, 2) ``grid`` samples ``image`` (1, 3, H, W),
    found every ``stride`` output pixels (a TPS grid is linear between its samples every TPS_STEP
    px anyway). An affine map never folds: it is invertible unless its determinant is 0 (then it
    all collapses)."""
    _, _, h, w = image.shape
    if warp.theta is not None:
        return Folds(1.0 if warp.singular else 0.0)
    stride = max(1, min(h, w, FOLD_SIDE * TPS_STEP) // FOLD_SIDE)
    if h < 2 * stride or w < 2 * stride:
        return Folds(0.0)
    reads = points_to_pixels(grid[0, ::stride, ::stride], w, h, align_corners)
    det = grid_jacobian_determinant(reads[None])[0]
    orientation = 1.0 if float((det > 0).float().mean()) >= 0.5 else -1.0  # the sign most of the map has
    folded = det * orientation <= 0
    fraction = float(folded.float().mean())
    if fraction == 0.0:
        return Folds(0.0)
    at = reads[folded].round().long()
    inside = (at[:, 0] >= 0) & (at[:, 0] < w) & (at[:, 1] >= 0) & (at[:, 1] < h)
    mask = image.new_zeros(1, 1, h, w)
    mask[0, 0, at[inside, 1], at[inside, 0]] = 1.0
    reach = 2 * stride + 1  # closes the gaps between the reads
    mask = F.max_pool2d(mask, 2 * reach + 1, 1, reach)[0, 0, ..., None] * FOLD_ALPHA
    rgb = image[0].permute(1, 2, 0)
    boxes = tuple((x * stride, y * stride, min(bw * stride, w - x * stride), min(bh * stride, h - y * stride))
                  for x, y, bw, bh in fold_boxes(folded))
    return Folds(fraction, boxes, rgb * (1 - mask) + mask * rgb.new_tensor(FOLD_RGB))


def fold_boxes(folded: torch.Tensor, most: int = MAX_FOLD_BOXES) -> tuple[tuple[float, float, float, float], ...]:
    """(x, y, w, h) edge-coordinate boxes around the ``most`` largest 8-connected regions of a
    boolean (H, W) map, largest first; regions under 0.1% of the frame are left out."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(folded.cpu().numpy().astype(np.uint8), connectivity=8)
    regions = sorted(stats[1:count].tolist(), key=lambda s: -s[4])
    least = max(1, folded.numel() // 1000)
    return tuple((float(x), float(y), float(bw), float(bh)) for x, y, bw, bh, area in regions[:most] if area >= least)
