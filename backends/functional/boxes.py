"""Box arithmetic for detectors: overlap, batched non-maximum suppression, box regression, squaring,
image pyramids and crops.

Boxes are (N, 4) tensors of x1, y1, x2, y2 in edge coordinates (pixel i spans [i, i + 1]), so a
box's width is x2 - x1 and its area (x2 - x1)(y2 - y1): no "+ 1" anywhere.
"""

from __future__ import annotations

import math

import torch

from backends.imaging import resize

MODES = ("union", "min")


def _check_boxes(boxes: torch.Tensor, name: str = "boxes") -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) x1, y1, x2, y2, got {tuple(boxes.shape)}")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) -> (N,) areas; a box with x2 < x1 or y2 < y1 has area 0."""
    _check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def overlap(a: torch.Tensor, b: torch.Tensor, mode: str = "union") -> torch.Tensor:
    """Pairwise overlap (M, N) of boxes ``a`` (M, 4) and ``b`` (N, 4): intersection over union
    (``mode = "union"``), or over the smaller of the two areas (``"min"``, which also suppresses a
    small box lying inside a big one). A zero denominator gives 0. Symmetric in a and b."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(2)
    area_a, area_b = box_area(a)[:, None], box_area(b)[None, :]
    denom = area_a + area_b - inter if mode == "union" else torch.minimum(area_a, area_b)
    return torch.where(denom > 0, inter / denom.clamp(min=torch.finfo(denom.dtype).tiny), torch.zeros_like(inter))


BLOCK = 256  # rows of the overlap matrix made at once: memory BLOCK x N, not N x N


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, groups: torch.Tensor | None = None,
        mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression, batched over ``groups``.

    Repeatedly keeps the best-scoring box left and drops every box of the same group whose overlap
    with it (see :func:`overlap`) exceeds ``threshold``. Boxes of different groups (pyramid levels,
    images) never suppress each other. Ties in score keep the lower index first. Overlaps are
    computed in float64, ``BLOCK`` rows at a time.

    Args:
        boxes: (N, 4) x1, y1, x2, y2.
        scores: (N,).
        threshold: overlap above which a box is dropped.
        groups: (N,) integer group of each box, or None for one group.
        mode: "union" (IoU) or "min".

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, best score first.
    """
    _check_boxes(boxes)
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be (N,) for boxes {tuple(boxes.shape)}, got {tuple(scores.shape)}")
    if groups is not None and groups.shape != scores.shape:
        raise ValueError(f"groups must be (N,) for boxes {tuple(boxes.shape)}, got {tuple(groups.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes.double()[order]
    g = groups[order] if groups is not None else None
    n = len(order)
    removed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    keep: list[int] = []
    for start in range(0, n, BLOCK):
        rows = torch.arange(start, min(start + BLOCK, n), device=boxes.device)
        live = rows[~removed[rows]]
        if not len(live):
            continue
        suppress = overlap(b[live], b, mode) > threshold  # (L, N)
        if g is not None:
            suppress &= g[live][:, None] == g[None, :]
        for r, i in enumerate(live.tolist()):
            if removed[i]:  # dropped by a box kept earlier in this block
                continue
            keep.append(i)
            removed |= suppress[r]  # overlap is symmetric, so no box kept before i is in this row
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Applies a detector's box regression: each edge moves by its offset times the box's size,
    x1 + dx1 w, y1 + dy1 h, x2 + dx2 w, y2 + dy2 h (offsets (N, 4) as dx1, dy1, dx2, dy2)."""
    _check_boxes(boxes)
    if offsets.shape != boxes.shape:
        raise ValueError(f"offsets must match boxes {tuple(boxes.shape)}, got {tuple(offsets.shape)}")
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown along its short side to a square of side max(w, h), about the same centre."""
    _check_boxes(boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).amax(1, keepdim=True) / 2
    return torch.cat([centre - half, centre + half], 1)


def pyramid_scales(height: int, width: int, min_face: float, factor: float = 0.709, window: int = 12) -> list[float]:
    """Scales at which a ``window``-pixel detector sees faces from ``min_face`` pixels up: the first
    maps ``min_face`` to ``window`` (window / min_face), each next is ``factor`` times the last, down
    to the last at which the image's short side still holds one window."""
    if min_face <= 0 or not 0 < factor < 1:
        raise ValueError(f"min_face must be > 0 and factor in (0, 1), got {min_face} and {factor}")
    scales, s = [], window / min_face
    short = min(height, width)
    while short * s >= window:
        scales.append(s)
        s *= factor
    return scales


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The (h, w) of the image resized by ``scale``: each side rounded up, so the whole image is kept."""
    return max(1, math.ceil(height * scale)), max(1, math.ceil(width * scale))


def window_boxes(rows: torch.Tensor, cols: torch.Tensor, scale_xy: tuple[float, float], stride: int = 2,
                 window: int = 12) -> torch.Tensor:
    """The input-frame boxes (N, 4) of a fully convolutional detector's output cells (row, col):
    cell (i, j) reads the ``window`` x ``window`` patch at (stride j, stride i) of the image scaled
    by (sx, sy)."""
    sx, sy = scale_xy
    x1, y1 = stride * cols.double(), stride * rows.double()
    return torch.stack([x1 / sx, y1 / sy, (x1 + window) / sx, (y1 + window) / sy], 1)


def crop_boxes(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crops of ``image`` (1, C, H, W) at ``boxes`` (edges rounded to whole pixels, at least one
    pixel wide), zeros where a box leaves the image, each resized to ``size`` x ``size`` (area
    averaging where it shrinks, bilinear where it grows). Returns (N, C, size, size)."""
    _check_boxes(boxes)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, H, W), got {tuple(image.shape)}; boxes are {tuple(boxes.shape)}")
    _, c, h, w = image.shape
    out = image.new_zeros((len(boxes), c, size, size))
    bound = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
    edges = torch.maximum(torch.minimum(boxes.round(), 2 * bound), -bound)  # a runaway box costs no more than 3x
    for k, (x1, y1, x2, y2) in enumerate(edges.long().tolist()):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:  # the common case: no padding to make
            out[k] = resize(image[..., y1:y2, x1:x2], (size, size))[0]
            continue
        tile = image.new_zeros((1, c, y2 - y1, x2 - x1))
        ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if ix2 > ix1 and iy2 > iy1:
            tile[..., iy1 - y1: iy2 - y1, ix1 - x1: ix2 - x1] = image[..., iy1:iy2, ix1:ix2]
        out[k] = resize(tile, (size, size))[0]
    return out
