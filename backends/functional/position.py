"""Position embeddings on a token grid with a free base and dimension: sinusoidal (1-D and 2-D),
rotary (RoPE, 1-D and axial 2-D), a relative bias table indexed by offset (Swin), and how
similar two positions are under each.

Token grids are raster order, as in :mod:`backends.functional.attention` (whose rotation
:func:`~backends.functional.attention.apply_rotary` and learned-random table this module reuses):
token ``r * cols + c`` sits in row r (y, down) and column c (x, right). 1-D schemes number the
tokens in that order, so vertical neighbours are ``cols`` apart. Frequencies follow Vaswani et
al.: pair k of a ``dim``-wide table turns base^(-2k / dim) radians per position.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from backends.functional.attention import apply_rotary
from backends.imaging import hwc, resize

SIMILARITIES = ("dot", "cosine")


# -- grids and frequencies ----------------------------------------------------------------------
def grid_coords(rows: int, cols: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(rows * cols, 2) token positions (x, y) in raster order."""
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=dtype), torch.arange(cols, dtype=dtype), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1)


def grid_picture(image: torch.Tensor, rows: int, cols: int, patch: int, side: int = 256) -> tuple[torch.Tensor, int]:
    """The part of ``image`` (1, 3, H, W) that a rows x cols grid of ``patch`` px patches covers,
    resized to ``scale`` pixels per token with the longer side near ``side``: (rows * scale,
    cols * scale, 3) to draw token maps over (each upscaled ``scale`` times), and the scale."""
    scale = max(1, side // max(rows, cols))
    small = resize(image[..., : rows * patch, : cols * patch], (rows * scale, cols * scale))
    return hwc(small[0]).contiguous(), scale


def frequencies(dim: int, base: float = 10000.0) -> torch.Tensor:
    """(dim // 2,) float64 radians per position of each sin/cos pair: base^(-2k / dim)."""
    if dim < 2 or dim % 2 or base <= 1:
        raise ValueError(f"dim must be even and at least 2 and base above 1, got dim {dim}, base {base}")
    return float(base) ** (-torch.arange(dim // 2, dtype=torch.float64) * 2 / dim)


def wavelengths(dim: int, base: float = 10000.0) -> torch.Tensor:
    """(dim // 2,) positions per full turn of each pair: 2 pi base^(2k / dim)."""
    return 2 * math.pi / frequencies(dim, base)


def sinusoidal(positions: torch.Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Vaswani et al.'s table for positions (N,): (N, dim), column 2k is sin(p w_k) and 2k + 1
    cos(p w_k), w_k = base^(-2k / dim). Computed in float64. Row p dotted with row p + d is
    sum_k cos(d w_k): it depends on the offset d alone."""
    if positions.dim() != 1:
        raise ValueError(f"positions must be (N,), got {tuple(positions.shape)}")
    angles = positions.double()[:, None] * frequencies(dim, base)[None]
    return torch.stack([angles.sin(), angles.cos()], -1).flatten(1).to(dtype)


def sinusoidal_1d(rows: int, cols: int, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(rows * cols, dim): the 1-D table of each token's raster index."""
    return sinusoidal(torch.arange(rows * cols), dim, base, dtype)


def sinusoidal_2d(rows: int, cols: int, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(rows * cols, dim): the first half of the dims is the 1-D table of the column (x), the
    second of the row (y), each ``dim / 2`` wide (as MAE); ``dim`` must divide by 4."""
    if dim % 4:
        raise ValueError(f"a 2-D sinusoidal table needs dim divisible by 4, got {dim}")
    xy = grid_coords(rows, cols)
    return torch.cat([sinusoidal(xy[:, 0], dim // 2, base, dtype), sinusoidal(xy[:, 1], dim // 2, base, dtype)], 1)


# -- rotary -------------------------------------------------------------------------------------
def rope_angles(rows: int, cols: int, dim: int, base: float = 10000.0, two_d: bool = False,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(rows * cols, dim // 2) rotation angles for :func:`apply_rotary` (RoFormer's RoPE).

    1-D: pair k turns by (raster index) x base^(-2k / dim). Axial 2-D: the first dim / 4 pairs
    turn with the column (x), the rest with the row (y), each half a 1-D RoPE of dim / 2."""
    n = rows * cols
    if not two_d:
        return (torch.arange(n, dtype=torch.float64)[:, None] * frequencies(dim, base)[None]).to(dtype)
    if dim % 4:
        raise ValueError(f"axial 2-D rotary needs dim divisible by 4, got {dim}")
    xy = grid_coords(rows, cols)
    f = frequencies(dim // 2, base)[None]
    return torch.cat([xy[:, :1] * f, xy[:, 1:] * f], 1).to(dtype)


def rotary_scores(q: torch.Tensor, k: torch.Tensor, angles: torch.Tensor, index: Optional[int] = None) -> torch.Tensor:
    """q_m . k_n after turning the content vectors q (dim,) and k (dim,) by every position's
    ``angles`` (N, dim / 2): (N, N), or row ``index`` alone (N,). A rotation keeps norms and
    R(a)^T R(b) = R(b - a), so each score depends on the two positions' offset only."""
    if q.shape != k.shape or q.dim() != 1 or 2 * angles.shape[-1] != q.shape[0]:
        raise ValueError(f"q and k must be (dim,) with angles (N, dim / 2), got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"angles {tuple(angles.shape)}")
    n = angles.shape[0]
    keys = apply_rotary(k.to(angles.dtype).expand(1, 1, n, -1), angles)[0, 0]
    if index is not None:
        return apply_rotary(q.to(angles.dtype).view(1, 1, 1, -1), angles[index : index + 1])[0, 0, 0] @ keys.T
    return apply_rotary(q.to(angles.dtype).expand(1, 1, n, -1), angles)[0, 0] @ keys.T


# -- relative bias ------------------------------------------------------------------------------
def relative_index(rows: int, cols: int, device=None) -> torch.Tensor:
    """(N, N) long: where the bias of query i and key j sits in a flattened (2R - 1, 2C - 1)
    table, indexed by the offset (dy, dx) = query - key, shifted to start at 0 (Swin's
    ``relative_position_index``)."""
    xy = grid_coords(rows, cols, torch.long).to(device)
    offset = xy[:, None, :] - xy[None, :, :]  # (N, N, 2): x, y of query minus key
    return (offset[..., 1] + rows - 1) * (2 * cols - 1) + offset[..., 0] + cols - 1


def relative_bias(table: torch.Tensor, rows: int, cols: int, index: Optional[int] = None) -> torch.Tensor:
    """The bias of every query-key pair looked up by offset: table (..., 2R - 1, 2C - 1), entry
    [dy + R - 1, dx + C - 1] for (dx, dy) = query - key, gives (..., N, N), or the row of query
    ``index`` alone (..., N)."""
    if table.dim() < 2 or tuple(table.shape[-2:]) != (2 * rows - 1, 2 * cols - 1):
        raise ValueError(f"table must be (..., {2 * rows - 1}, {2 * cols - 1}) for a {rows} x {cols} grid, "
                         f"got {tuple(table.shape)}")
    flat = table.flatten(-2)
    if index is None:
        return flat[..., relative_index(rows, cols, table.device)]
    qy, qx = divmod(int(index), cols)
    return table[..., qy: qy + rows, qx: qx + cols].flip(-1, -2).flatten(-2)  # key (y, x) reads offset (qy - y, qx - x)


def distance_table(rows: int, cols: int, slope: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(2R - 1, 2C - 1) bias of -slope x the Euclidean length of each offset: ALiBi's linear
    penalty (Press et al., 2022) on the distance between two grid positions."""
    dy = torch.arange(-(rows - 1), rows, dtype=torch.float64)[:, None]
    dx = torch.arange(-(cols - 1), cols, dtype=torch.float64)[None, :]
    return (-float(slope) * torch.sqrt(dx * dx + dy * dy)).to(dtype)


# -- similarity ---------------------------------------------------------------------------------
def similarity_row(vectors: torch.Tensor, index: int, kind: str = "dot") -> torch.Tensor:
    """How similar position ``index`` is to every position: vectors (N, D) -> (N,), by dot
    product or cosine."""
    if kind not in SIMILARITIES:
        raise ValueError(f"kind must be one of {SIMILARITIES}, got {kind!r}")
    row = vectors @ vectors[index]
    if kind == "cosine":
        norms = vectors.norm(dim=1)
        row = row / (norms * norms[index]).clamp_min(1e-12)
    return row


def distance_profile(values: torch.Tensor, rows: int, cols: int, index: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``values`` (N,) gathered by whole Euclidean distance (rounded, in tokens) from token
    ``index``: (distances, mean, lowest, highest) over the tokens at each distance that occurs,
    distances ascending."""
    xy = grid_coords(rows, cols, torch.float64).to(values.device)
    dist = (xy - xy[index]).norm(dim=1).round().long()
    counts = torch.bincount(dist)
    present = counts > 0
    size = counts.shape[0]
    sums = values.new_zeros(size).index_add_(0, dist, values)
    lowest = values.new_full((size,), math.inf).scatter_reduce_(0, dist, values, "amin")
    highest = values.new_full((size,), -math.inf).scatter_reduce_(0, dist, values, "amax")
    d = torch.nonzero(present)[:, 0].to(values.dtype)
    return d, sums[present] / counts[present], lowest[present], highest[present]


# -- module twins -------------------------------------------------------------------------------
class SinusoidalPositionEmbedding(nn.Module):
    """Adds the sinusoidal table of a rows x cols grid to tokens (B, rows * cols, dim): 1-D over
    the raster index, or 2-D (x in the first half of the dims, y in the second)."""

    def __init__(self, dim: int, base: float = 10000.0, two_d: bool = True) -> None:
        super().__init__()
        self.dim, self.base, self.two_d = dim, base, two_d

    def forward(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (rows * cols, self.dim):
            raise ValueError(f"x must be (B, {rows * cols}, {self.dim}), got {tuple(x.shape)}")
        table = (sinusoidal_2d if self.two_d else sinusoidal_1d)(rows, cols, self.dim, self.base, x.dtype)
        return x + table.to(x.device)


class RotaryEmbedding(nn.Module):
    """Turns queries and keys (B, heads, rows * cols, dim) by their positions (RoPE)."""

    def __init__(self, dim: int, base: float = 10000.0, two_d: bool = True) -> None:
        super().__init__()
        self.dim, self.base, self.two_d = dim, base, two_d

    def forward(self, q: torch.Tensor, k: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        angles = rope_angles(rows, cols, self.dim, self.base, self.two_d, q.dtype).to(q.device)
        return apply_rotary(q, angles), apply_rotary(k, angles)


class RelativePositionBias(nn.Module):
    """A learnable (heads, 2R - 1, 2C - 1) table; ``forward()`` gives the (heads, N, N) bias to add
    to the attention logits (Swin). Starts at zero, or at ``distance_table(slope)``."""

    def __init__(self, rows: int, cols: int, heads: int = 1, slope: float = 0.0) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols
        self.table = nn.Parameter(distance_table(rows, cols, slope).expand(heads, -1, -1).clone())

    def forward(self, index: Optional[int] = None) -> torch.Tensor:
        return relative_bias(self.table, self.rows, self.cols, index)
