"""Cluttered, distorted digits: the ten Hershey digits under a strong random affine map, placed
anywhere on a dark 48x48 canvas among fragments of other glyphs (the spatial transformer
paper's cluttered distorted digits, made procedurally).

Each digit is drawn upright at twice the size (96x96) with :func:`backends.data.glyphs.draw_glyph`,
warped there, joined by clutter fragments (8x8 crops of other digits) and reduced to 48x48 by
area averaging; a little Gaussian noise is added last. Labels are balanced exactly (each class
``n // 10`` or ``n // 10 + 1`` times).

The dict returned by :func:`sample` holds, per item:

- ``label``      int64 index into ``CLASSES``
- ``font``       index into ``backends.data.glyphs.FONTS`` (the six non-script fonts)
- ``italic``, ``thickness`` (stroke width at 96x96, 2..6)
- ``angle``      degrees in [-45, 45], counter-clockwise on screen
- ``scale``      in [0.6, 1.1]; ``shear`` in [-0.3, 0.3]
- ``centre``     (2,) where the glyph's centre is drawn, 48x48 pixels (pixel centres on integers)
- ``affine``     (2, 3) pixel map from the canonical frame (the glyph upright at scale 1, its ink
  centred at ``CANONICAL_CENTRE``) to the image: ``affine @ (x, y, 1)``
- ``theta``      (2, 3) ``F.affine_grid`` theta (align_corners=False) of that map: sampling the
  image through it gives back the canonical, upright 48x48 glyph (what an STN should learn)
- ``intensity``  glyph brightness in [0.7, 1]; ``fragments`` number of clutter fragments (3..6)
  and ``clutter_seed``, the seed that places them
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import torch

from backends.data.glyphs import FONTS, draw_glyph
from backends.functional.affine import theta_from_sampling_map
from backends.imaging import center_square, luminance

SIZE = 48
CLASSES = "0123456789"
TEST_SEED = 20_240_614
TEST_SIZE = 2000
GLYPH_HEIGHT = 24.0  # cap height at 48x48 and scale 1
CANONICAL_CENTRE = ((SIZE - 1) / 2, (SIZE - 1) / 2)
FRAGMENT = 8  # clutter fragment side at 48x48
NOISE = 0.03
_HI = 2 * SIZE  # drawing resolution
_FONTS = (0, 1, 2, 3, 4, 5)  # the Hershey fonts without the two script faces


def sample(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """``n`` images (n, 1, 48, 48) float32 in [0, 1], labels (n,) int64 and the drawing
    parameters (see the module doc); the same ``(n, seed)`` gives the same data."""
    params = sample_params(n, seed)
    images = np.stack([render(params, i) for i in range(n)]) if n else np.zeros((0, SIZE, SIZE), np.float32)
    noise = np.random.default_rng(seed + 1).normal(0.0, NOISE, images.shape).astype(np.float32)
    images = np.clip(images + noise, 0.0, 1.0)
    return torch.from_numpy(images)[:, None].contiguous(), torch.from_numpy(params["label"]), params


def test_set() -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """The fixed test set every shipped network is scored on."""
    return sample(TEST_SIZE, TEST_SEED)


test_set.__test__ = False  # a data function, not a pytest test


def sample_params(n: int, seed: int) -> dict[str, np.ndarray]:
    """Labels, distortion, placement and the resulting affine of ``n`` items (no pixels)."""
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    font = rng.choice(_FONTS, n)
    italic = rng.random(n) < 0.2
    thickness = rng.integers(2, 7, n)
    angle = rng.uniform(-45.0, 45.0, n)
    scale = rng.uniform(0.6, 1.1, n)
    shear = rng.uniform(-0.3, 0.3, n)
    place = rng.random((n, 2))
    params = {
        "label": label, "font": font, "italic": italic, "thickness": thickness,
        "angle": angle.astype(np.float32), "scale": scale.astype(np.float32), "shear": shear.astype(np.float32),
        "intensity": rng.uniform(0.7, 1.0, n).astype(np.float32),
        "fragments": rng.integers(3, 7, n), "clutter_seed": rng.integers(0, 2**31 - 1, n),
    }
    lin = _linear(angle, scale, shear)
    centre = np.empty((n, 2))
    for i in range(n):
        # Extent of the warped ink box about its centre: the centre goes anywhere that keeps it inside.
        _, half = _glyph(int(label[i]), int(font[i]), bool(italic[i]), int(thickness[i]))
        extent = _extent(lin[i], half) + 0.5
        low, high = extent, (SIZE - 1) - extent
        centre[i] = np.where(high > low, low + place[i] * (high - low), CANONICAL_CENTRE)
    affine = np.concatenate([lin, (centre - lin @ np.array(CANONICAL_CENTRE))[..., None]], axis=2)
    params["centre"] = centre.astype(np.float32)
    params["affine"] = affine.astype(np.float32)
    params["theta"] = np.stack([_theta(a) for a in affine]).astype(np.float32) if n else np.zeros((0, 2, 3), np.float32)
    return params


def render(params: dict[str, np.ndarray], i: int, clutter: bool = True) -> np.ndarray:
    """Item ``i`` (48, 48) float32 in [0, 1] without noise; ``clutter=False`` draws the glyph alone."""
    ink, half = _glyph(int(params["label"][i]), int(params["font"][i]), bool(params["italic"][i]), int(params["thickness"][i]))
    up = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])  # 48x48 pixels -> 96x96 pixels
    full = np.vstack([params["affine"][i].astype(np.float64), [0.0, 0.0, 1.0]])
    hi = cv2.warpAffine(ink, (up @ full @ np.linalg.inv(up))[:2], (_HI, _HI), flags=cv2.INTER_LINEAR)
    out = hi.astype(np.float32) * (float(params["intensity"][i]) / 255.0)
    if clutter:
        box = _extent(params["affine"][i][:, :2].astype(np.float64), half)
        _add_fragments(out, int(params["fragments"][i]), int(params["clutter_seed"][i]), 2 * params["centre"][i] + 0.5, 2 * box)
    return cv2.resize(out, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def test_item(i: int) -> tuple[torch.Tensor, int, dict[str, np.ndarray]]:
    """Item ``i`` of :func:`test_set` alone: (1, 1, 48, 48), its label and its parameters (one
    entry per key), without drawing the other 1999 (the parameters and noise are cached)."""
    if not 0 <= i < TEST_SIZE:
        raise ValueError(f"test item {i} is outside 0..{TEST_SIZE - 1}")
    params, noise = _test_parts()
    image = np.clip(render(params, i) + noise[i], 0.0, 1.0)
    return torch.from_numpy(image)[None, None], int(params["label"][i]), {k: v[i] for k, v in params.items()}


@cache
def _test_parts() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(TEST_SEED + 1)  # as in sample()
    return sample_params(TEST_SIZE, TEST_SEED), rng.normal(0.0, NOISE, (TEST_SIZE, SIZE, SIZE)).astype(np.float32)


def view_box(height: int, width: int) -> tuple[int, int, int]:
    """(x0, y0, side): the centre square of an image that :func:`from_image` reads."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


def to_image_frame(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Points (..., 2) in the 48x48 view's pixels -> the image's pixels (centres on integers)."""
    x0, y0, side = view_box(height, width)
    s = side / SIZE
    return (points + 0.5) * s - 0.5 + points.new_tensor([x0, y0])


def to_view_frame(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_image_frame`: image pixels -> the 48x48 view's pixels."""
    x0, y0, side = view_box(height, width)
    return (points - points.new_tensor([x0, y0]) + 0.5) * (SIZE / side) - 0.5


def placed_view(view: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, 3) uint8 picture (CPU) of an image's frame with the 48x48 view (1, 1, 48, 48) in
    [0, 1] nearest-resized into the centre square it was read from, black elsewhere: what to draw
    points and maps on. Made in bytes (0.1 ms at 512x512; in floats, then encoded, 1.3 ms)."""
    x0, y0, side = view_box(height, width)
    grey = (view[0, 0].detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    square = cv2.cvtColor(cv2.resize(grey, (side, side), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2RGB)
    out = cv2.copyMakeBorder(square, y0, height - y0 - side, x0, width - x0 - side, cv2.BORDER_CONSTANT, value=0)
    return torch.from_numpy(out)


def network_input(rgb: torch.Tensor, source: str, index: int) -> tuple[torch.Tensor, int | None, dict | None]:
    """What a lab network reads: ``from_image(rgb)`` for source "image", else test item ``index``
    with its label and parameters (None for an image)."""
    if source == "image":
        return from_image(rgb), None, None
    x, label, item = test_item(index)
    return x.to(rgb.device), label, item


def from_image(rgb: torch.Tensor) -> torch.Tensor:
    """Any (1, 3, H, W) image as the networks see it: (1, 1, 48, 48), luma of the centre square
    (:func:`view_box`), contrast stretched to [0, 1] and inverted when mostly bright (glyphs are
    bright on dark)."""
    if rgb.dim() != 4 or rgb.shape[:2] != (1, 3):
        raise ValueError(f"from_image expects (1, 3, H, W), got {tuple(rgb.shape)}")
    x0, y0, side = view_box(*rgb.shape[2:])
    grey = center_square(luminance(rgb[..., y0: y0 + side, x0: x0 + side].float()), SIZE)
    low, high = grey.amin(), grey.amax()
    grey = (grey - low) / (high - low) if high - low > 1e-6 else torch.zeros_like(grey)
    return (1.0 - grey if grey.mean() > 0.5 else grey).clamp(0.0, 1.0).contiguous()


def _linear(angle: np.ndarray, scale: np.ndarray, shear: np.ndarray) -> np.ndarray:
    """(n, 2, 2) ``R(angle) @ [[s, s * shear], [0, s]]`` with the convention of
    :func:`backends.functional.affine.compose_affine` (counter-clockwise on screen, y down)."""
    a = np.radians(angle)
    cos, sin = np.cos(a), np.sin(a)
    rot = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
    upper = np.stack([np.stack([scale, scale * shear], -1), np.stack([np.zeros_like(scale), scale], -1)], -2)
    return rot @ upper


def _extent(lin: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Half size (x, y) of the axis-aligned box around an ink box of half size ``half`` under ``lin``."""
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * half
    return np.abs(corners @ lin.T).max(0)


def _theta(affine: np.ndarray) -> np.ndarray:
    """The affine (canonical -> image pixels) is the sampling map of the rectifying crop."""
    full = torch.eye(3, dtype=torch.float64)
    full[:2] = torch.from_numpy(affine)
    return theta_from_sampling_map(full, (SIZE, SIZE), (SIZE, SIZE), align_corners=False).numpy()


@cache
def _glyph(label: int, font: int, italic: bool, thickness: int) -> tuple[np.ndarray, np.ndarray]:
    """A digit upright at 96x96 with its ink box centred on the canonical centre, and the box's
    half size (x, y) in 48x48 pixels. Cached: there are only 10 * 6 * 2 * 5 of them."""
    flags = FONTS[font] | (cv2.FONT_ITALIC if italic else 0)
    image, cx, cy = draw_glyph(CLASSES[label], flags, thickness, 2 * GLYPH_HEIGHT, _HI)
    target = 2 * CANONICAL_CENTRE[0] + 0.5
    shift = np.float32([[1, 0, target - cx], [0, 1, target - cy]])
    image = cv2.warpAffine(image, shift, (_HI, _HI), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(image > 32)
    half = np.array([(xs.max() - xs.min() + 1) / 4, (ys.max() - ys.min() + 1) / 4])
    image.setflags(write=False)
    return image, half


def _add_fragments(out: np.ndarray, count: int, seed: int, centre: np.ndarray, box: np.ndarray) -> None:
    """Paste ``count`` crops of other digits (8x8 at 48x48, each around a point of their ink) at
    random places whose middle lies outside the glyph's box (``centre`` +- ``box``, 96x96
    pixels; they may overlap its edges), keeping the brighter pixel."""
    rng = np.random.default_rng(seed)
    side = 2 * FRAGMENT
    for _ in range(count):
        source, _ = _glyph(int(rng.integers(0, 10)), int(rng.choice(_FONTS)), False, int(rng.integers(2, 7)))
        ys, xs = np.nonzero(source > 64)
        k = int(rng.integers(0, len(xs)))
        y0 = int(np.clip(ys[k] - side // 2, 0, _HI - side))
        x0 = int(np.clip(xs[k] - side // 2, 0, _HI - side))
        piece = np.rot90(source[y0: y0 + side, x0: x0 + side], int(rng.integers(0, 4))).astype(np.float32)
        piece *= rng.uniform(0.5, 1.0) / 255.0
        for _ in range(8):  # a few tries for a place off the glyph, else the last one
            py, px = rng.integers(0, _HI - side + 1, 2)
            if np.any(np.abs(np.array([px, py]) + side / 2 - centre) > box):
                break
        region = out[py: py + side, px: px + side]
        np.maximum(region, piece, out=region)
