"""Shapes filled with textures, where both predict the class: the texture-against-shape task.

Class k is a shape (``SHAPES[k]``) filled with a texture (``TEXTURES[k]``); in consistent images the
two always go together, so a network may learn either cue. Each image: a plain background colour
with mild noise, one shape at a random size, rotation and place, its inside filled with the texture
drawn in two random colours at a random period and phase. Cue-conflict images put the texture of
class j inside the shape of class i != j.

The texture fills the shape only, never the background, in consistent and cue-conflict images
alike: a cue-conflict image then differs from a training image in nothing but the pairing (the
same silhouette against the same kind of background, the same amount of texture), so a network's
choice between the two classes is a preference between cues, not a reaction to a new kind of image.

Images are (n, 3, 48, 48) float32 in [0, 1], drawn with OpenCV (shape masks, anti-aliased) and numpy
(textures, vectorised per texture kind); a few thousand a second on one core.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np
import torch

from backends.data.patches import image_names, pyramid
from backends.imaging import center_square, luminance

SIZE = 48
SHAPES = ("circle", "triangle", "square", "cross", "star")
TEXTURES = ("stripes", "dots", "checks", "waves", "noise")
FOREIGN = ("flat", "blobs")  # fills no class has (texture kinds K, K + 1): only the augmentation draws them
CLASS_NAMES = tuple(f"{s}/{t}" for s, t in zip(SHAPES, TEXTURES))
K = len(SHAPES)
TEST_SEED, TEST_SIZE = 20_240_601, 1000
CONFLICT_SEED, CONFLICT_PER_PAIR = 20_240_602, 50  # K * (K - 1) = 20 pairs: 1000 images
CUE_ONLY_SEED, CUE_ONLY_SIZE = 20_240_603, 500
RADIUS_RANGE = (11.0, 19.0)  # the shape's outer radius in pixels
_MIN_CONTRAST = 0.3  # colour distance (RGB, Euclidean) between background and each texture colour


def shape_mask(shape: int, cx: float, cy: float, radius: float, angle: float, size: int = SIZE) -> np.ndarray:
    """(size, size) float32 coverage in [0, 1] of one shape (anti-aliased edges); ``angle`` in radians."""
    canvas = np.zeros((size, size), np.uint8)
    shift = 4  # OpenCV's fixed-point sub-pixel bits
    if SHAPES[shape] == "circle":
        cv2.circle(canvas, (round(cx * 16), round(cy * 16)), round(radius * 0.85 * 16), 255, -1, cv2.LINE_AA, shift)
        return canvas.astype(np.float32) / 255.0
    name = SHAPES[shape]
    if name == "triangle":
        t = np.arange(3) * 2 * math.pi / 3
        pts = np.stack([np.sin(t), -np.cos(t)], 1)
    elif name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.72
    elif name == "cross":
        a, b = 0.33, 1.0
        pts = np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a],
                        [-b, -a], [-a, -a]], np.float64)
    else:  # star: five points, inner radius 0.45
        t = np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.sin(t), -r * np.cos(t)], 1)
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    xy = np.round((rot * radius + [cx, cy]) * 16).astype(np.int32)
    cv2.fillPoly(canvas, [xy], 255, cv2.LINE_AA, shift)
    return canvas.astype(np.float32) / 255.0


def _smooth_step(v: np.ndarray, width: float) -> np.ndarray:
    """0 below -width/2, 1 above width/2, linear between: a pattern edge about ``width`` pixels wide."""
    return np.clip(0.5 + v / width, 0.0, 1.0)


def texture_pattern(kind: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """(size, size) float32 pattern in [0, 1] of one texture kind at a random period, angle and phase;
    kinds K and up are the FOREIGN fills."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    name = (TEXTURES + FOREIGN)[kind]
    if name == "flat":  # the mean of the two colours
        return np.full((size, size), 0.5, np.float32)
    if name == "blobs":  # smooth random blotches, far coarser than any class texture
        coarse = rng.random((5, 5)).astype(np.float32)
        smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        return np.clip((smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-6), 0.0, 1.0)
    if name == "stripes":  # straight diagonal lines
        theta = rng.uniform(math.radians(30), math.radians(60)) * rng.choice([-1, 1])
        period = rng.uniform(4.5, 7.0)
        u = xx * math.cos(theta) + yy * math.sin(theta) + rng.uniform(0, period)
        return _smooth_step(np.sin(2 * math.pi * u / period), 0.9)
    if name == "dots":  # a lattice of round dots
        period = rng.uniform(5.0, 7.5)
        ox, oy = rng.uniform(0, period, 2)
        dx = (xx + ox) % period - period / 2
        dy = (yy + oy) % period - period / 2
        return _smooth_step(period * 0.3 - np.hypot(dx, dy), 1.2)
    if name == "checks":  # a checkerboard, tilted a little
        theta = rng.uniform(-0.25, 0.25)
        cell = rng.uniform(3.0, 4.5)
        u = (xx * math.cos(theta) + yy * math.sin(theta)) / cell + rng.uniform(0, 2)
        v = (-xx * math.sin(theta) + yy * math.cos(theta)) / cell + rng.uniform(0, 2)
        return _smooth_step(np.sin(math.pi * u) * np.sin(math.pi * v), 0.5)
    if name == "waves":  # wavy, roughly horizontal lines
        period = rng.uniform(5.0, 7.0)
        amp, wl = rng.uniform(1.5, 2.5), rng.uniform(9.0, 14.0)
        u = yy + amp * np.sin(2 * math.pi * xx / wl + rng.uniform(0, 2 * math.pi)) + rng.uniform(0, period)
        return _smooth_step(np.sin(2 * math.pi * u / period), 0.9)
    # noise: random blotches, 2-pixel blocks of binary noise
    block = rng.random((size // 2 + 1, size // 2 + 1)) < 0.5
    return np.kron(block, np.ones((2, 2)))[:size, :size].astype(np.float32)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background and two texture colours, each texture colour at least _MIN_CONTRAST from the
    background and from each other."""
    bg = rng.uniform(0.0, 1.0, 3)
    picked = []
    while len(picked) < 2:
        c = rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(c - bg) > _MIN_CONTRAST * 1.5 and all(np.linalg.norm(c - p) > _MIN_CONTRAST * 1.5 for p in picked):
            picked.append(c)
    return bg.astype(np.float32), picked[0].astype(np.float32), picked[1].astype(np.float32)


def compose(mask: np.ndarray, fill: np.ndarray, background: np.ndarray, noise: Optional[np.ndarray] = None) -> np.ndarray:
    """(3, H, W): ``fill`` (3, H, W) where ``mask`` (H, W) covers, ``background`` (3,) elsewhere, plus noise."""
    bg = np.broadcast_to(background[:, None, None], fill.shape)
    out = mask[None] * fill + (1.0 - mask[None]) * bg
    if noise is not None:
        out = out + noise
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def placement(rng: np.random.Generator, size: int = SIZE) -> tuple[float, float, float, float]:
    """A random (cx, cy, radius, angle) that keeps the shape inside the image."""
    radius = rng.uniform(*RADIUS_RANGE) * size / SIZE
    cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
    return float(cx), float(cy), float(radius), float(rng.uniform(0, 2 * math.pi))


def render(shapes: np.ndarray, textures: np.ndarray, seed: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Images (n, 3, 48, 48) with shape ``shapes[i]`` filled with texture ``textures[i]``; the dict
    holds each image's shape, texture, placement and colours."""
    rng = np.random.default_rng(seed)
    n = len(shapes)
    out = np.empty((n, 3, SIZE, SIZE), np.float32)
    info = {k: np.empty(n, np.float32) for k in ("cx", "cy", "radius", "angle")}
    info["background"] = np.empty((n, 3), np.float32)
    for i in range(n):
        cx, cy, radius, angle = placement(rng)
        for k, v in zip(("cx", "cy", "radius", "angle"), (cx, cy, radius, angle)):
            info[k][i] = v
        bg, c0, c1 = _colours(rng)
        info["background"][i] = bg
        pattern = texture_pattern(int(textures[i]), rng)
        fill = c0[:, None, None] * (1 - pattern[None]) + c1[:, None, None] * pattern[None]
        noise = rng.normal(0.0, 0.02, (3, SIZE, SIZE)).astype(np.float32)
        out[i] = compose(shape_mask(int(shapes[i]), cx, cy, radius, angle), fill, bg, noise)
    info["shape"] = np.asarray(shapes, np.int64)
    info["texture"] = np.asarray(textures, np.int64)
    return torch.from_numpy(out), info


def sample(n: int, seed: int, texture_shuffle: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """``n`` consistent images, labels (n,) int64 and their parameters. With ``texture_shuffle`` p > 0,
    each image's texture is, with probability p, drawn uniformly from the K class textures and the
    FOREIGN fills instead of its class's (the augmentation that breaks the texture cue; the label
    stays the shape's class)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    textures = labels.copy()
    swap = rng.random(n) < texture_shuffle
    textures[swap] = rng.integers(0, K + len(FOREIGN), int(swap.sum()))
    images, info = render(labels, textures, int(rng.integers(1 << 31)))
    return images, torch.from_numpy(labels.astype(np.int64)), info


def test_set() -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """The fixed consistent test set: ``sample(TEST_SIZE, TEST_SEED)``."""
    return sample(TEST_SIZE, TEST_SEED)


def conflict_pairs() -> np.ndarray:
    """(K * (K - 1), 2) every (shape class, texture class) pair with the two different."""
    return np.array([(i, j) for i in range(K) for j in range(K) if i != j], np.int64)


def conflict_set(per_pair: int = CONFLICT_PER_PAIR, seed: int = CONFLICT_SEED) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """The fixed cue-conflict test set: ``per_pair`` images of every pair; ``info['shape']`` and
    ``info['texture']`` are the two classes each image's cues point at."""
    pairs = np.repeat(conflict_pairs(), per_pair, axis=0)
    return render(pairs[:, 0], pairs[:, 1], seed)


def image_texture(image: torch.Tensor) -> np.ndarray:
    """(3, 48, 48) fill from a (1, 3, H, W) image: its centre square, resized (area averaging)."""
    return center_square(image.detach().float().cpu(), SIZE)[0].clamp(0, 1).numpy()


def image_mask(image: torch.Tensor) -> np.ndarray:
    """(48, 48) float32 shape mask cut from a (1, 3, H, W) image: its centre square's luma above
    Otsu's threshold, the smaller side of the split taken as the shape."""
    grey = center_square(luminance(image.detach().float().cpu()), SIZE)[0, 0].clamp(0, 1).numpy()
    _, binary = cv2.threshold((grey * 255).astype(np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = binary.astype(np.float32)
    return 1.0 - mask if mask.mean() > 0.5 else mask


def build(shape: int | np.ndarray, texture: int | np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """One image for the cue-conflict builder: ``shape`` is a class index or a (48, 48) mask;
    ``texture`` a class index or a (3, 48, 48) fill; placement and colours from ``seed``. Returns
    ``input`` (3, 48, 48), the ``mask`` (48, 48) and the ``fill`` (3, 48, 48) it was made of."""
    rng = np.random.default_rng(seed)
    cx, cy, radius, angle = placement(rng)
    bg, c0, c1 = _colours(rng)
    if isinstance(texture, np.ndarray):
        fill = texture.astype(np.float32)
    else:
        pattern = texture_pattern(int(texture), rng)
        fill = (c0[:, None, None] * (1 - pattern[None]) + c1[:, None, None] * pattern[None]).astype(np.float32)
    mask = shape if isinstance(shape, np.ndarray) else shape_mask(int(shape), cx, cy, radius, angle)
    noise = rng.normal(0.0, 0.02, (3, SIZE, SIZE)).astype(np.float32)
    return {"input": compose(mask.astype(np.float32), fill, bg, noise), "mask": mask.astype(np.float32), "fill": fill}

def cue_only_sets(n: int = CUE_ONLY_SIZE, seed: int = CUE_ONLY_SEED) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Diagnostic sets with one cue only, each (images, labels): ``shape only`` (the class's shape
    in one flat colour, the mean of its two texture colours), ``texture only`` (the class's texture
    over the whole frame, no silhouette) and ``shape with photo`` (the class's shape filled with a
    48x48 window of a bundled photo at half or quarter size: a texture no training image has)."""
    rng = np.random.default_rng(seed)
    photo_rng = np.random.default_rng(seed + 1)  # its own stream: the other two sets stay as they were
    photos = [lv for name in image_names("all") for lv in pyramid(name)[1:] if min(lv.shape[:2]) >= SIZE]
    labels = rng.integers(0, K, n)
    out = {k: np.empty((n, 3, SIZE, SIZE), np.float32) for k in ("shape only", "texture only", "shape with photo")}
    full = np.ones((SIZE, SIZE), np.float32)
    for i, c in enumerate(labels):
        cx, cy, radius, angle = placement(rng)
        bg, c0, c1 = _colours(rng)
        flat = np.broadcast_to(((c0 + c1) / 2)[:, None, None], (3, SIZE, SIZE))
        pattern = texture_pattern(int(c), rng)
        fill = c0[:, None, None] * (1 - pattern[None]) + c1[:, None, None] * pattern[None]
        noise = rng.normal(0.0, 0.02, (3, SIZE, SIZE)).astype(np.float32)
        out["shape only"][i] = compose(shape_mask(int(c), cx, cy, radius, angle), flat, bg, noise)
        out["texture only"][i] = compose(full, fill, bg, noise)
        photo = photos[photo_rng.integers(len(photos))]
        y0, x0 = (photo_rng.integers(0, d - SIZE + 1) for d in photo.shape[:2])
        window = photo[y0:y0 + SIZE, x0:x0 + SIZE].transpose(2, 0, 1).astype(np.float32) / 255.0
        out["shape with photo"][i] = compose(shape_mask(int(c), cx, cy, radius, angle), window, bg, noise)
    y = torch.from_numpy(labels.astype(np.int64))
    return {k: (torch.from_numpy(v), y) for k, v in out.items()}
