"""Writes the bundled sample images into assets/images/ (run: ``python -m assets.make_samples``).

Photos are copied from scikit-image's wheel (CC0 / public domain, see assets/README.md) and
downscaled to at most 512 px; patterns are drawn procedurally. Deterministic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from backends.imageio import save_png

OUT = Path(__file__).resolve().parent / "images"
MAX_SIDE = 512
PHOTOS = ("chelsea", "astronaut", "camera", "coffee", "brick", "coins", "text", "rocket")


def _downscale(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = MAX_SIDE / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def photos() -> dict[str, np.ndarray]:
    import skimage.data as data

    out = {}
    for name in PHOTOS:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out[name] = _downscale(img[..., :3].astype(np.uint8))
    return out


def checkerboard(size: int = 512, cell: int = 32) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    board = ((xs // cell + ys // cell) % 2).astype(np.float32)
    return np.repeat(board[..., None], 3, axis=2)


def zone_plate(size: int = 512) -> np.ndarray:
    """cos(k r^2): every spatial frequency up to Nyquist at the corners; shows aliasing and gridding."""
    c = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    r2 = (xs - c) ** 2 + (ys - c) ** 2
    plate = 0.5 + 0.5 * np.cos(np.pi * r2 / size)
    return np.repeat(plate[..., None], 3, axis=2).astype(np.float32)


def gradients(size: int = 512) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    rgb = np.stack([xs, ys, 1.0 - 0.5 * (xs + ys)], axis=2)
    # A few shapes with hard edges on the smooth ramps.
    cv2.circle(rgb, (150, 160), 70, (1.0, 1.0, 1.0), -1, lineType=cv2.LINE_AA)
    cv2.rectangle(rgb, (300, 280), (440, 420), (0.05, 0.05, 0.05), -1)
    pts = np.array([[80, 440], [200, 300], [240, 470]], np.int32)
    cv2.fillPoly(rgb, [pts], (0.95, 0.85, 0.1), lineType=cv2.LINE_AA)
    return np.clip(rgb, 0, 1)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, img in photos().items():
        save_png(OUT / f"{name}.png", img)
    save_png(OUT / "checkerboard.png", checkerboard())
    save_png(OUT / "zone_plate.png", zone_plate())
    save_png(OUT / "gradients.png", gradients())
    for p in sorted(OUT.glob("*.png")):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
