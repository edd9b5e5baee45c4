"""What the glyph networks read in the explorer: the app's image (a photo, a file or the sketchpad)
as a 48 x 48 glyph, or an item of the fixed test set, and where that glyph sits on the input frame.
A thin layer over ``backends.data.cluttered_glyphs`` (``network_input``, ``view_box``,
``placed_view``), which the STN and deformable labs use directly: this adds the caption and the
extent the SE-ResNet and ViT panels draw on.

``from_image`` takes the image's centre square, so the glyph's pixel (u, v) covers the input
pixels of that square scaled by side / 48: panels drawn at 48 x 48 carry that square as their
``extent``, and a click on the input maps back with :func:`glyph_pixel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch

from backends.data.cluttered_glyphs import CLASSES, SIZE, TEST_SIZE, network_input, placed_view, test_set, view_box

SOURCES = ("image", "test sample")

Extent = tuple[float, float, float, float]


@dataclass(frozen=True)
class GlyphInput:
    """x (1, 1, 48, 48) on the image's device, the true label (test samples only), a caption, and
    the input-frame square (x, y, w, h) the glyph is drawn over."""

    x: torch.Tensor
    label: Optional[int]
    caption: str
    extent: Extent


@lru_cache(maxsize=1)
def cached_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed test set's images and labels, drawn once per process (about two seconds)."""
    x, y, _ = test_set()
    return x, y


def square_extent(height: int, width: int) -> Extent:
    """The centre square ``from_image`` reads, in input pixels (edge coordinates)."""
    x0, y0, side = view_box(height, width)
    return float(x0), float(y0), float(side), float(side)


def glyph_input(image: torch.Tensor, source: str, index: int) -> GlyphInput:
    """The glyph the networks read for ``source``: 'image' (the app's image through ``from_image``)
    or 'test sample' (item ``index`` of the fixed test set, clamped to its range)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    i = max(0, min(int(index), TEST_SIZE - 1))
    x, label, _ = network_input(image, source, i)
    caption = ("the image's centre square as a 48x48 glyph" if label is None
               else f"test sample {i} (label {CLASSES[label]})")
    return GlyphInput(x, label, caption, square_extent(*image.shape[2:]))


def glyph_pixel(query: tuple[float, float], extent: Extent) -> tuple[int, int]:
    """The glyph pixel (u, v) under an input-frame point, clamped to the 48 x 48 grid."""
    x0, y0, side, _ = extent
    u = int((query[0] + 0.5 - x0) * SIZE / side)
    v = int((query[1] + 0.5 - y0) * SIZE / side)
    return min(max(u, 0), SIZE - 1), min(max(v, 0), SIZE - 1)


def glyph_background(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The glyph (1, 1, 48, 48) as the input frame's picture (height, width, 3) uint8: the glyph
    the network reads, nearest-resized into the centre square, black around it, so maps drawn on
    the square's extent lie over the pixels they describe (and clicks land in the input frame)."""
    return placed_view(x, height, width).to(x.device)
