"""Procedural cartoon faces at 32x32 with their true attributes.

Each face is drawn with OpenCV at 64x64 (anti-aliased polygons with sub-pixel coordinates) and
reduced to 32x32 with ``INTER_AREA``. Every part is built as a polygon in face-local units (the
head radius), rotated by the head tilt about the head centre, then filled, so tilt needs no image
warp. A seed fixes the batch: the same ``(n, seed)`` gives the same images and attributes.

Attributes (one entry per face in the returned dict):

- ``face_shape``  int: 0 round, 1 oval, 2 square-ish
- ``skin``        (3,) float RGB in [0, 1]
- ``hair_color``  (3,) float RGB in [0, 1]
- ``hair_style``  int: 0 none (bald), 1 short, 2 long
- ``eye_size``    float in [0.7, 1.4], relative
- ``smile``       float in [-0.7, 1.0]: mouth curve, negative is a frown
- ``tilt``        float degrees in [-30, 30]: positive turns the head clockwise on screen
- ``glasses``     bool
- ``background``  (3,) float RGB in [0, 1]
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

SIZE = 32
RENDER = 64
SHIFT = 4  # fixed-point bits for cv2 polygon coordinates
ONE = 1 << SHIFT

FACE_SHAPES = ("round", "oval", "square")
HAIR_STYLES = ("none", "short", "long")
SMILE_RANGE = (-0.7, 1.0)
TILT_RANGE = (-30.0, 30.0)
GLASSES_P = 0.35
HAIR_STYLE_P = (0.2, 0.45, 0.35)

SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 155], [224, 172, 120], [198, 134, 86], [141, 85, 52], [96, 60, 38]], np.float32
) / 255.0
HAIR_COLORS = np.array(
    [[25, 20, 20], [90, 55, 30], [150, 95, 45], [230, 200, 110], [180, 70, 30], [170, 170, 175]], np.float32
) / 255.0


def sample_attributes(n: int, seed: int) -> dict[str, np.ndarray]:
    """The attributes of ``n`` faces, drawn from a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    skin = SKIN_TONES[rng.integers(0, len(SKIN_TONES), n)] + rng.normal(0, 0.03, (n, 3))
    hair = HAIR_COLORS[rng.integers(0, len(HAIR_COLORS), n)] + rng.normal(0, 0.04, (n, 3))
    # Backgrounds: any hue, mid saturation, never too close to black so dark hair stays visible.
    hue = rng.uniform(0, 180, n)
    sat = rng.uniform(40, 200, n)
    val = rng.uniform(120, 250, n)
    hsv = np.stack([hue, sat, val], 1).astype(np.uint8)[None]
    background = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32) / 255.0
    return {
        "face_shape": rng.integers(0, 3, n),
        "skin": np.clip(skin, 0, 1).astype(np.float32),
        "hair_color": np.clip(hair, 0, 1).astype(np.float32),
        "hair_style": rng.choice(3, n, p=HAIR_STYLE_P),
        "eye_size": rng.uniform(0.7, 1.4, n).astype(np.float32),
        "smile": rng.uniform(*SMILE_RANGE, n).astype(np.float32),
        "tilt": rng.uniform(*TILT_RANGE, n).astype(np.float32),
        "glasses": rng.random(n) < GLASSES_P,
        "background": background,
        # Nuisance factors: small head position and size jitter.
        "center": rng.uniform(-1.5, 1.5, (n, 2)).astype(np.float32),
        "radius": rng.uniform(19.0, 21.5, n).astype(np.float32),
    }


def sample_faces(n: int, seed: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """``n`` faces as (n, 3, 32, 32) float32 in [0, 1] and their attributes (see module doc)."""
    attrs = sample_attributes(n, seed)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        out[i] = render_face({k: v[i] for k, v in attrs.items()})
    images = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    return images.contiguous(), attrs


# -- drawing ---------------------------------------------------------------------------------

_T = np.linspace(0, 2 * np.pi, 48, endpoint=False)
_COS, _SIN = np.cos(_T), np.sin(_T)


def _superellipse(a: float, b: float, p: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    """(48, 2) points of |x/a|^p + |y/b|^p = 1 (p = 2 an ellipse, larger p squarer)."""
    e = 2.0 / p
    x = a * np.sign(_COS) * np.abs(_COS) ** e
    y = b * np.sign(_SIN) * np.abs(_SIN) ** e
    return np.stack([x + cx, y + cy], 1)


def _arc(a: float, b: float, t0: float, t1: float, cx: float = 0.0, cy: float = 0.0, k: int = 16) -> np.ndarray:
    t = np.linspace(t0, t1, k)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1)


class _Canvas:
    """Face-local polygons (units of head radius, y down) to anti-aliased pixels at RENDER size."""

    def __init__(self, background: np.ndarray, center: np.ndarray, radius: float, tilt_deg: float) -> None:
        self.img = np.empty((RENDER, RENDER, 3), np.uint8)
        self.img[:] = _rgb(background)
        t = np.radians(tilt_deg)
        c, s = np.cos(t), np.sin(t)
        self.m = radius * np.array([[c, -s], [s, c]])
        self.o = np.array([RENDER / 2, RENDER / 2 + 2.0]) + center
        self.radius = radius

    def _px(self, pts: np.ndarray) -> np.ndarray:
        xy = pts @ self.m.T + self.o
        return np.round(xy * ONE).astype(np.int32)

    def fill(self, pts: np.ndarray, color) -> None:
        cv2.fillPoly(self.img, [self._px(pts)], color, cv2.LINE_AA, SHIFT)

    def line(self, pts: np.ndarray, color, width: float, closed: bool = False) -> None:
        thick = max(1, int(round(width * self.radius)))
        cv2.polylines(self.img, [self._px(pts)], closed, color, thick, cv2.LINE_AA, SHIFT)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(c) * 255.0 + 0.5, 0, 255))


def render_face(a: dict) -> np.ndarray:
    """One face (32, 32, 3) uint8 RGB from one face's attributes."""
    cv = _Canvas(a["background"], a["center"], float(a["radius"]), float(a["tilt"]))
    skin, hair = _rgb(a["skin"]), _rgb(a["hair_color"])
    skin_dark = _rgb(np.asarray(a["skin"]) * 0.8)
    shape = int(a["face_shape"])
    style = int(a["hair_style"])
    ax, by, p = ((1.0, 1.0, 2.0), (0.86, 1.12, 2.0), (0.97, 1.02, 4.0))[shape]

    if style == 2:  # long hair falls behind the head, past the chin
        back = _superellipse(ax + 0.28, 1.25, 3.0, 0.0, 0.28)
        cv.fill(back, hair)
    else:  # ears show without long hair
        for sx in (-1, 1):
            cv.fill(_superellipse(0.17, 0.24, 2.0, sx * ax * 0.98, 0.05), skin_dark)
    cv.fill(_superellipse(ax, by, p), skin)
    if style >= 1:  # a cap over the crown that ends in a fringe line on the forehead
        top = -by * 0.42
        cap = _arc(ax * 1.07, by * 0.8, np.pi, 2 * np.pi, 0.0, top + 0.08, 20)
        cv.fill(np.vstack([cap, [[ax * 1.07, top + 0.08], [-ax * 1.07, top + 0.08]]]), hair)

    # Eyes: white, pupil, scaled by eye_size.
    e = float(a["eye_size"])
    ex, ey = 0.38 * ax, -0.08
    for sx in (-1, 1):
        cv.fill(_superellipse(0.17 * e, 0.13 * e, 2.0, sx * ex, ey), (250, 250, 250))
        cv.fill(_superellipse(0.09 * e, 0.09 * e, 2.0, sx * ex, ey + 0.01), (30, 25, 35))
    if a["glasses"]:
        dark = (20, 20, 30)
        for sx in (-1, 1):
            cv.line(_superellipse(0.27, 0.23, 2.0, sx * ex, ey), dark, 0.09, closed=True)
        cv.line(np.array([[-ex + 0.27, ey], [ex - 0.27, ey]]), dark, 0.09)

    # Nose: a small darker bump.
    cv.fill(_superellipse(0.07, 0.09, 2.0, 0.0, 0.2), skin_dark)

    # Mouth: a parabola whose centre sits lower than its corners for a smile, higher for a frown.
    smile = float(a["smile"])
    xs = np.linspace(-0.38, 0.38, 12)
    ys = 0.5 * by - 0.12 * smile + 0.3 * smile * (1 - (xs / 0.38) ** 2)
    cv.line(np.stack([xs, ys], 1), (120, 25, 35), 0.11)

    return cv2.resize(cv.img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def attribute_labels(attrs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The discrete labels the attribute classifier learns: smile sign, glasses, hair style, tilt sign."""
    return {
        "smile": (attrs["smile"] > 0).astype(np.int64),
        "glasses": attrs["glasses"].astype(np.int64),
        "hair": attrs["hair_style"].astype(np.int64),
        "tilt": (attrs["tilt"] > 0).astype(np.int64),
    }
