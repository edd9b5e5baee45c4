"""Sprites in the manner of dSprites, at 32x32 RGB, with the true generative factors.

One shape (square, ellipse or heart) on black, at a scale, rotation, position and hue, each
factor drawn independently and uniformly. Rendering is vectorized in torch: every pixel is
tested against the shape in the shape's own frame at 4x4 sub-samples and averaged, so edges are
anti-aliased and a batch of 256 takes about 0.1 s on one core.

Factors (one entry per image in the returned dict, floats unless said):

- ``shape``        int: 0 square, 1 ellipse, 2 heart
- ``scale``        in [0.5, 1.0]: the shape's half-size is ``scale * 10`` pixels
- ``orientation``  radians in [-pi/4, pi/4): counter-clockwise rotation. A quarter turn covers
                   every pose of the square and keeps hearts upright-ish: with full turns, our
                   4000-step VAEs drew every shape as a blob
- ``pos_x``        in [0, 1]: centre from left (10 px) to right (22 px)
- ``pos_y``        in [0, 1]: centre from top (10 px) to bottom (22 px)
- ``hue``          in [0, 0.75]: red through yellow, green, cyan to blue (no wrap to red)
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

SIZE = 32
SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y", "hue")
SCALE_RANGE = (0.5, 1.0)
ORIENTATION_RANGE = (-math.pi / 4, math.pi / 4)
HUE_RANGE = (0.0, 0.75)
HALF_SIZE_PX = 10.0
POS_MARGIN_PX = 10.0
SUPERSAMPLE = 4
RENDER_CHUNK = 256
SATURATION, VALUE = 0.85, 1.0


def sample_factors(n: int, seed: int) -> dict[str, np.ndarray]:
    """Independent uniform factors for ``n`` sprites; the same seed gives the same factors."""
    rng = np.random.default_rng(seed)
    return {
        "shape": rng.integers(0, len(SHAPES), n),
        "scale": rng.uniform(*SCALE_RANGE, n).astype(np.float32),
        "orientation": rng.uniform(*ORIENTATION_RANGE, n).astype(np.float32),
        "pos_x": rng.uniform(0.0, 1.0, n).astype(np.float32),
        "pos_y": rng.uniform(0.0, 1.0, n).astype(np.float32),
        "hue": rng.uniform(*HUE_RANGE, n).astype(np.float32),
    }


def sample_sprites(n: int, seed: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """``n`` sprites (n, 3, 32, 32) float32 in [0, 1] and their factors (see the module doc)."""
    factors = sample_factors(n, seed)
    return render_sprites(factors), factors


def _subpixel_grid(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-sample centres in pixel units, (S*32, S*32) each: x to the right, y down."""
    s = SUPERSAMPLE
    coords = (torch.arange(SIZE * s, dtype=torch.float32, device=device) + 0.5) / s
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    return xx, yy


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether shape-frame points (u, v), in half-size units with v up, are inside one shape kind."""
    if shape == 0:
        return torch.maximum(u.abs(), v.abs()) <= 0.85
    if shape == 1:
        return u * u + (v * (1 / 0.55)) ** 2 <= 1.0
    # The heart curve (x^2 + y^2 - 1)^3 = x^2 y^3, shrunk to fit the unit box and centred.
    hx2, hy = (u * 1.25) ** 2, v * 1.25 + 0.15
    a = hx2 + hy * hy - 1.0
    return a * a * a <= hx2 * hy * hy * hy


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """HSV hue in [0, 1) at the dataset's saturation and value to RGB (N, 3) in [0, 1]."""
    h = np.asarray(hue, np.float64)[:, None] * 6.0
    k = (np.array([5.0, 3.0, 1.0]) + h) % 6.0
    return (VALUE - VALUE * SATURATION * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def render_sprites(factors: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """Sprites for given factors (see ``sample_factors``): (N, 3, 32, 32) float32 in [0, 1]."""
    device = torch.device(device)
    n = len(factors["shape"])
    if n == 0:
        return torch.zeros((0, 3, SIZE, SIZE), device=device)
    if n > RENDER_CHUNK:  # bounded memory: the sub-sampled masks are 16x the image size
        parts = [render_sprites({k: np.asarray(v)[i : i + RENDER_CHUNK] for k, v in factors.items()}, device)
                 for i in range(0, n, RENDER_CHUNK)]
        return torch.cat(parts)

    def col(name: str) -> torch.Tensor:
        return torch.as_tensor(np.asarray(factors[name], np.float32), device=device).view(-1, 1, 1)

    span = SIZE - 2 * POS_MARGIN_PX
    cx = POS_MARGIN_PX + col("pos_x") * span
    cy = POS_MARGIN_PX + col("pos_y") * span
    half = col("scale") * HALF_SIZE_PX
    theta = col("orientation")
    xx, yy = _subpixel_grid(device)
    dx, dy = xx - cx, cy - yy  # dy up, so positive angles turn counter-clockwise on screen
    cos, sin = torch.cos(theta), torch.sin(theta)
    u = (cos * dx + sin * dy) / half
    v = (-sin * dx + cos * dy) / half
    shapes = np.asarray(factors["shape"])
    mask = torch.empty(u.shape, dtype=torch.float32, device=device)
    for kind in range(len(SHAPES)):
        idx = torch.as_tensor(np.flatnonzero(shapes == kind), device=device)
        if len(idx):
            mask[idx] = _inside(kind, u[idx], v[idx]).float()
    coverage = torch.nn.functional.avg_pool2d(mask[:, None], SUPERSAMPLE)  # (N, 1, 32, 32)
    rgb = torch.as_tensor(hue_to_rgb(factors["hue"]), device=device).view(n, 3, 1, 1)
    return (coverage * rgb).contiguous()


def discretize_factors(factors: Mapping[str, np.ndarray], bins: int = 10) -> dict[str, np.ndarray]:
    """Each factor as integer classes (continuous ones in ``bins`` equal-width bins), for scores
    such as the mutual information gap."""
    ranges = {
        "scale": SCALE_RANGE,
        "orientation": ORIENTATION_RANGE,
        "pos_x": (0.0, 1.0),
        "pos_y": (0.0, 1.0),
        "hue": HUE_RANGE,
    }
    out = {"shape": np.asarray(factors["shape"], np.int64)}
    for name, (lo, hi) in ranges.items():
        x = (np.asarray(factors[name], np.float64) - lo) / (hi - lo)
        out[name] = np.clip((x * bins).astype(np.int64), 0, bins - 1)
    return out
