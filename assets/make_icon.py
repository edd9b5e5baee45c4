"""Draws the app icon, assets/icon.png (run: ``python -m assets.make_icon``): a lens over a
3 x 3 grid of kernel taps, the taps spread apart as a dilated kernel's are. Deterministic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parent / "icon.png"
SIZE = 256


def draw_icon(size: int = SIZE) -> np.ndarray:
    """(size, size, 4) BGRA."""
    s = size / 256
    img = np.zeros((size, size, 4), np.uint8)
    cv2.circle(img, (int(112 * s), int(112 * s)), int(92 * s), (60, 44, 40, 255), -1, cv2.LINE_AA)
    for i in range(3):
        for j in range(3):
            colour = (80, 170, 255, 255) if (i, j) != (1, 1) else (60, 220, 255, 255)
            centre = (int((64 + 48 * j) * s), int((64 + 48 * i) * s))
            cv2.circle(img, centre, int(13 * s), colour, -1, cv2.LINE_AA)
    cv2.circle(img, (int(112 * s), int(112 * s)), int(92 * s), (235, 235, 235, 255), int(10 * s), cv2.LINE_AA)
    cv2.line(img, (int(180 * s), int(180 * s)), (int(238 * s), int(238 * s)), (235, 235, 235, 255), int(22 * s),
             cv2.LINE_AA)
    return img


if __name__ == "__main__":
    cv2.imwrite(str(OUT), draw_icon())
    print(f"wrote {OUT}")
