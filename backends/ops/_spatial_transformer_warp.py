"""The spatial transformer operator's sampling maps: an affine theta or a thin-plate spline
through a control lattice, both in ``grid_sample``'s normalized coordinates; the thetas its
'compose' and 'target' controls describe; what a fit leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from backends.functional.affine import (
    affine_points,
    affine_sampling_grid,
    compose_affine,
    invert_theta,
    theta_from_sampling_map,
)
from backends.functional.coords import frame_centre
from backends.functional.tps import tps_apply, tps_fit, tps_grid

TPS_STEP = 4  # shown TPS grids: the spline every 4 px, linear between (see tps_grid)


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
