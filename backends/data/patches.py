"""Natural-image patches: random crops of the bundled samples in assets/images/, for a tokenizer
that works on any photo.

Each sample image is kept as a small pyramid (full size, 1/2, 1/4) so crops cover fine texture
and whole objects. A crop picks an image uniformly, then a pyramid level, a position and a
horizontal flip. ``split`` holds one photo out ("coffee") so tests can score on an image the
model never saw: "train" is every other image, "test" is that one, "all" is all of them.

Info (one entry per crop in the returned dict): ``image`` (index into ``image_names(split)``),
``level`` (0 full, 1 half, 2 quarter), ``x``, ``y`` (top-left at that level), ``flip`` (bool).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGES_DIR = Path(__file__).resolve().parents[2] / "assets" / "images"
HELD_OUT = ("coffee",)
LEVELS = 3
SPLITS = ("train", "test", "all")


def image_names(split: str = "train") -> tuple[str, ...]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names = tuple(sorted(p.stem for p in IMAGES_DIR.glob("*.png")))
    if split == "train":
        names = tuple(n for n in names if n not in HELD_OUT)
    elif split == "test":
        names = tuple(n for n in names if n in HELD_OUT)
    if not names:
        raise FileNotFoundError(f"no sample images for split {split!r} in {IMAGES_DIR}")
    return names


@lru_cache(maxsize=64)
def pyramid(name: str) -> tuple[np.ndarray, ...]:
    """The image at full, half and quarter size: uint8 RGB (H, W, 3) each."""
    bgr = cv2.imread(str(IMAGES_DIR / f"{name}.png"), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read {IMAGES_DIR / name}.png")
    levels = [np.ascontiguousarray(bgr[..., ::-1])]
    for _ in range(LEVELS - 1):
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return tuple(levels)


def sample_patches(n: int, seed: int, size: int = 32, split: str = "train") -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """``n`` random crops (n, 3, size, size) float32 in [0, 1] and where each came from."""
    names = image_names(split)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, len(names), n)
    level = rng.integers(0, LEVELS, n)
    flip = rng.random(n) < 0.5
    fx, fy = rng.random(n), rng.random(n)
    xs = np.zeros(n, np.int64)
    ys = np.zeros(n, np.int64)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        pyr = pyramid(names[image[i]])
        lv = int(level[i])
        while lv > 0 and min(pyr[lv].shape[:2]) < size:
            lv -= 1
        level[i] = lv
        img = pyr[lv]
        h, w = img.shape[:2]
        if h < size or w < size:
            img = cv2.resize(img, (max(w, size), max(h, size)), interpolation=cv2.INTER_LINEAR)
            h, w = img.shape[:2]
        xs[i] = int(fx[i] * (w - size + 1))
        ys[i] = int(fy[i] * (h - size + 1))
        crop = img[ys[i] : ys[i] + size, xs[i] : xs[i] + size]
        out[i] = crop[:, ::-1] if flip[i] else crop
    images = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return images, {"image": image, "level": level, "x": xs, "y": ys, "flip": flip}
