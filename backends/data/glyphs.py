"""Glyphs: digits and capital letters drawn with OpenCV's Hershey fonts, at 32x32 RGB.

Each glyph is drawn at 64x64 in one of the eight Hershey fonts (sometimes italic) with a random
stroke width, moved by a random affine map (rotation, shear, scale, shift), laid over clutter
(a few faint strokes and dots), coloured, and reduced to 32x32 with area averaging.

Labels (one entry per image in the returned dict):

- ``label``      int index into ``CHARSET`` ("0".."9" then "A".."Z")
- ``font``       int index into ``FONTS``
- ``italic``     bool
- ``thickness``  int stroke width at 64x64, 1..5
- ``angle``      degrees in [-20, 20], counter-clockwise
- ``shear``      in [-0.3, 0.3]
- ``scale``      in [0.75, 1.15]
- ``shift_x``, ``shift_y``  pixels at 32x32, in [-3, 3]
- ``clutter``    int number of clutter strokes and dots
- ``fg``, ``bg`` (3,) RGB in [0, 1]
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

SIZE = 32
CANVAS = 64
CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)
FONT_NAMES = ("simplex", "plain", "duplex", "complex", "triplex", "complex_small", "script_simplex", "script_complex")
GLYPH_HEIGHT = 36.0  # cap height at 64x64 before the random scale


def sample_labels(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random labels and drawing parameters for ``n`` glyphs; the same seed gives the same ones."""
    rng = np.random.default_rng(seed)
    fg = rng.uniform(0.55, 1.0, (n, 3))
    bg = rng.uniform(0.0, 0.3, (n, 3))
    swap = rng.random(n) < 0.3  # some dark-on-light glyphs
    fg[swap], bg[swap] = 1.0 - fg[swap], 1.0 - bg[swap]
    return {
        "label": rng.integers(0, len(CHARSET), n),
        "font": rng.integers(0, len(FONTS), n),
        "italic": rng.random(n) < 0.2,
        "thickness": rng.integers(1, 6, n),
        "angle": rng.uniform(-20.0, 20.0, n).astype(np.float32),
        "shear": rng.uniform(-0.3, 0.3, n).astype(np.float32),
        "scale": rng.uniform(0.75, 1.15, n).astype(np.float32),
        "shift_x": rng.uniform(-3.0, 3.0, n).astype(np.float32),
        "shift_y": rng.uniform(-3.0, 3.0, n).astype(np.float32),
        "clutter": rng.integers(0, 5, n),
        "fg": fg.astype(np.float32),
        "bg": bg.astype(np.float32),
        "_clutter_seed": rng.integers(0, 2**31 - 1, n),
    }


def sample_glyphs(n: int, seed: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """``n`` glyphs (n, 3, 32, 32) float32 in [0, 1] and their labels (see the module doc)."""
    labels = sample_labels(n, seed)
    images = np.stack([_render(labels, i) for i in range(n)]) if n else np.zeros((0, SIZE, SIZE, 3), np.float32)
    labels.pop("_clutter_seed")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def draw_glyph(text: str, font: int, thickness: int, height: float, canvas: int) -> tuple[np.ndarray, float, float]:
    """``text`` drawn upright in a Hershey ``font`` (cv2 flags, italic included) with cap height
    ``height`` near the middle of a ``canvas`` x ``canvas`` uint8 image (ink 255, antialiased).

    Returns the image and the centre (x, y) of the ink's bounding box: fonts place glyphs
    differently around their origin, so callers centre on the ink, not on the text box.
    """
    (w, h), base = cv2.getTextSize(text, font, 1.0, thickness)
    font_scale = height / max(h, 1)
    (w, h), base = cv2.getTextSize(text, font, font_scale, thickness)
    image = np.zeros((canvas, canvas), np.uint8)
    org = (int(round((canvas - w) / 2)), int(round((canvas + h) / 2)))
    cv2.putText(image, text, org, font, font_scale, 255, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(image)
    if not len(xs):
        return image, canvas / 2, canvas / 2
    return image, (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2


def _mask(labels: dict[str, np.ndarray], i: int) -> np.ndarray:
    """The glyph's ink at 64x64, centred and affine-warped: (64, 64) float32 in [0, 1]."""
    font = FONTS[int(labels["font"][i])] | (cv2.FONT_ITALIC if labels["italic"][i] else 0)
    canvas, cx, cy = draw_glyph(CHARSET[int(labels["label"][i])], font, int(labels["thickness"][i]), GLYPH_HEIGHT, CANVAS)
    angle = float(labels["angle"][i])
    scale = float(labels["scale"][i])
    rot = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, scale)
    shear = np.array([[1.0, float(labels["shear"][i]), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    move = np.array([[1.0, 0.0, CANVAS / 2 - cx], [0.0, 1.0, CANVAS / 2 - cy], [0.0, 0.0, 1.0]])
    centre = np.array([[1.0, 0.0, -CANVAS / 2], [0.0, 1.0, -CANVAS / 2], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, CANVAS / 2 + 2 * float(labels["shift_x"][i])],
                      [0.0, 1.0, CANVAS / 2 + 2 * float(labels["shift_y"][i])], [0.0, 0.0, 1.0]])
    m = shift @ shear @ centre @ move @ np.vstack([rot, [0.0, 0.0, 1.0]])
    warped = cv2.warpAffine(canvas, m[:2], (CANVAS, CANVAS), flags=cv2.INTER_LINEAR)
    return warped.astype(np.float32) / 255.0


def _clutter(labels: dict[str, np.ndarray], i: int) -> np.ndarray:
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    rng = np.random.default_rng(int(labels["_clutter_seed"][i]))
    for _ in range(int(labels["clutter"][i])):
        if rng.random() < 0.5:
            p0, p1 = rng.integers(0, CANVAS, 2), rng.integers(0, CANVAS, 2)
            cv2.line(canvas, tuple(map(int, p0)), tuple(map(int, p1)), int(rng.integers(60, 140)), int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            c = tuple(map(int, rng.integers(0, CANVAS, 2)))
            cv2.circle(canvas, c, int(rng.integers(1, 4)), int(rng.integers(60, 140)), -1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _render(labels: dict[str, np.ndarray], i: int) -> np.ndarray:
    ink = np.maximum(_mask(labels, i), _clutter(labels, i))
    ink = cv2.resize(ink, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[..., None]
    fg, bg = labels["fg"][i], labels["bg"][i]
    return (bg + (fg - bg) * ink).astype(np.float32)
