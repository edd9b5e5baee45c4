"""Saliency-based sampling (Recasens et al., "Learning to Zoom", ECCV 2018): a saliency map
turns into a non-uniform sampling grid that spends more output pixels where the saliency is high.

Each output pixel is first placed where a plain resize would read, ``x'``; it then reads the
saliency- and Gaussian-weighted average of the saliency cells' centres ``x``:

    u(x') = sum_x S(x) k(x, x') x / sum_x S(x) k(x, x'),   k(x, x') = exp(-|x - x'|^2 / (2 sigma^2)).

Salient cells pull the samples towards them, so a peak of saliency is sampled densely: magnified.
(For a smooth saliency the shift is about sigma^2 (log S)' and the input area per output pixel
about 1 + sigma^2 (log S)'': peaks are magnified, the flanks around them compressed, and a
saliency growing exponentially only shifts the samples.) The kernel is separable, so the sums are
two small matrix products per coordinate (exact, no truncation).

Near the border the sums are one-sided and pull samples inward even for a uniform saliency.
``extend_border`` continues the saliency past the frame (over 6 sigma, the cells' centres going
on past the edge) at its lowest value. Then a uniform saliency gives the plain resize everywhere
(the identity up to the lattice's Poisson error, ~exp(-2 pi^2 sigma^2 / cell^2), and the cut at
6 sigma, ~exp(-18): under 1e-6 px for sigma at least one cell); and since no cell inside is less
salient than those outside, every sample is a convex mix of the plain position and cells inside:
no sample leaves the frame. (The reference implementation replicates the border and clamps the
grid, which stacks samples on the edge where the border is salient.)

Coordinates are input pixels (pixel centres on integers, x right, y down); grids are (N, H, W, 2)
of (x, y), read with ``F.grid_sample(..., align_corners=False)`` after
:func:`backends.functional.coords.points_to_normalized`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.coords import grid_jacobian_determinant, points_to_normalized
from backends.functional.filters import gaussian_blur
from backends.functional.kernels import make_kernel

PAD_SIGMAS = 6.0  # the extended border reaches this many kernel widths past the frame
MIN_SIGMA_CELLS = 0.25  # a narrower kernel than this share of a cell leaves outputs no cell to read


def edge_energy(grey: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, H, W): the Sobel gradient magnitude, blurred by ``sigma`` px."""
    if grey.dim() != 4 or grey.shape[1] != 1:
        raise ValueError(f"edge_energy expects (N, 1, H, W), got {tuple(grey.shape)}")
    sob = torch.from_numpy(make_kernel("sobel_x", 3)).to(grey.device, grey.dtype)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sob[None, None])
    gy = F.conv2d(padded, sob.T[None, None])
    return gaussian_blur(torch.sqrt(gx * gx + gy * gy + 1e-12), sigma)


def uniform_positions(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """(out,) input coordinates a plain resize of ``size`` pixels to ``out`` reads (pixel centres)."""
    return (torch.arange(out, device=like.device, dtype=like.dtype) + 0.5) * (size / out) - 0.5


def uniform_grid(frame: tuple[int, int], out_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """(1, H_out, W_out, 2): the plain resize's grid, what a uniform saliency gives."""
    ys = uniform_positions(frame[0], out_size[0], like)
    xs = uniform_positions(frame[1], out_size[1], like)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)[None]


def saliency_sampling_grid(saliency: torch.Tensor, frame: tuple[int, int], out_size: tuple[int, int], sigma: float,
                           extend_border: bool = True) -> torch.Tensor:
    """Where each output pixel reads the input, by the kernel-weighted average of the module docstring.

    Args:
        saliency: (N, 1, h, w) non-negative, positive somewhere near every output; cell (i, j)
            covers input pixels ``[j W / w, (j + 1) W / w)`` across (its centre is a cell centre).
        frame: (H, W) of the input in pixels.
        out_size: (H_out, W_out).
        sigma: the kernel's standard deviation in input pixels (at least a quarter of a cell).
        extend_border: continue the saliency past the frame (see the module docstring).
    Returns:
        (N, H_out, W_out, 2) of input (x, y) pixels, inside the frame's outer edges;
        differentiable in ``saliency``.
    """
    if saliency.dim() != 4 or saliency.shape[1] != 1:
        raise ValueError(f"saliency must be (N, 1, h, w), got {tuple(saliency.shape)}")
    _, _, h, w = saliency.shape
    (fh, fw), (oh, ow) = frame, out_size
    cell_x, cell_y = fw / w, fh / h
    if sigma < MIN_SIGMA_CELLS * max(cell_x, cell_y):
        raise ValueError(f"sigma {sigma:g} px is under {MIN_SIGMA_CELLS} of a {max(cell_x, cell_y):.3g} px cell")
    px = int(math.ceil(PAD_SIGMAS * sigma / cell_x)) if extend_border else 0
    py = int(math.ceil(PAD_SIGMAS * sigma / cell_y)) if extend_border else 0
    floor = saliency.amin(dim=(-2, -1), keepdim=True)
    s = (F.pad(saliency - floor, (px, px, py, py)) + floor)[:, 0] if px or py else saliency[:, 0]
    cx = (torch.arange(-px, w + px, device=s.device, dtype=s.dtype) + 0.5) * cell_x - 0.5
    cy = (torch.arange(-py, h + py, device=s.device, dtype=s.dtype) + 0.5) * cell_y - 0.5
    kx = torch.exp(-(uniform_positions(fw, ow, s)[:, None] - cx[None, :]) ** 2 / (2 * sigma * sigma))  # (W_out, w')
    ky = torch.exp(-(uniform_positions(fh, oh, s)[:, None] - cy[None, :]) ** 2 / (2 * sigma * sigma))  # (H_out, h')
    rows = ky @ s  # (N, H_out, w'): the y-weighted saliency of each cell column
    den = (rows @ kx.T).clamp_min(torch.finfo(s.dtype).tiny)
    x = (rows @ (kx * cx).T) / den
    y = (((ky * cy) @ s) @ kx.T) / den
    return torch.stack([x.clamp(-0.5, fw - 0.5), y.clamp(-0.5, fh - 0.5)], -1)


def to_normalized(grid: torch.Tensor, frame: tuple[int, int]) -> torch.Tensor:
    """A grid of input pixels to ``grid_sample``'s frame (``align_corners=False``)."""
    return points_to_normalized(grid, frame[1], frame[0], align_corners=False)


def saliency_sample(input: torch.Tensor, saliency: torch.Tensor, out_size: tuple[int, int], sigma: float,
                    extend_border: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The input read through its saliency's grid (bilinear, border padding).

    Args:
        input: (N, C, H, W).
        saliency: (N, 1, h, w), see :func:`saliency_sampling_grid`.
    Returns:
        the output (N, C, H_out, W_out) and the grid (N, H_out, W_out, 2) in input pixels.
    """
    if input.dim() != 4 or saliency.dim() != 4 or saliency.shape[0] != input.shape[0]:
        raise ValueError(f"input must be (N, C, H, W) and saliency (N, 1, h, w) with the same N, "
                         f"got {tuple(input.shape)} and {tuple(saliency.shape)}")
    frame = (input.shape[-2], input.shape[-1])
    grid = saliency_sampling_grid(saliency.to(input.dtype), frame, out_size, sigma, extend_border)
    out = F.grid_sample(input, to_normalized(grid, frame), mode="bilinear", padding_mode="border", align_corners=False)
    return out, grid


class SaliencySampler(nn.Module):
    """Module twin of :func:`saliency_sample`: a network predicts the saliency, this reads the
    input through it at ``out_size`` (the task network's input)."""

    def __init__(self, out_size: tuple[int, int], sigma: float, extend_border: bool = True) -> None:
        super().__init__()
        self.out_size, self.sigma, self.extend_border = out_size, sigma, extend_border

    def forward(self, input: torch.Tensor, saliency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return saliency_sample(input, saliency, self.out_size, self.sigma, self.extend_border)


def magnification(grid: torch.Tensor, frame: tuple[int, int]) -> torch.Tensor:
    """How many times larger than a plain resize each output pixel shows its input.

    Args:
        grid: (N, H_out, W_out, 2) of input pixels (H_out, W_out at least 2).
    Returns:
        (N, H_out, W_out): the plain resize's input area per output pixel over this grid's
        (1 / the Jacobian determinant, relative): above 1 where the grid is denser than uniform.
    """
    oh, ow = grid.shape[1:3]
    uniform = (frame[0] / oh) * (frame[1] / ow)
    return uniform / grid_jacobian_determinant(grid).clamp_min(1e-12)


def _sample_at(field: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``field`` (N, C, H, W) read bilinearly at output-pixel coordinates ``q`` (N, P, 2) -> (N, P, C)."""
    h, w = field.shape[-2:]
    u = q[..., 0] * (2.0 / max(w - 1, 1)) - 1.0
    v = q[..., 1] * (2.0 / max(h - 1, 1)) - 1.0
    out = F.grid_sample(field, torch.stack([u, v], -1)[:, None], mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0].transpose(1, 2)


def invert_sampling_grid(grid: torch.Tensor, points: torch.Tensor, iterations: int = 12) -> torch.Tensor:
    """Where in the output each input point lands: solves ``grid(q) = p`` by Newton's method.

    The grid is read bilinearly between output pixels, its Jacobian by central differences; the
    start is the plain resize's inverse. Points the grid never reaches (clamped borders) end on
    the output's edge.

    Args:
        grid: (N, H_out, W_out, 2) of input pixels, as :func:`saliency_sampling_grid` gives.
        points: (N, P, 2) input pixels (x, y).
    Returns:
        (N, P, 2) output pixels (x, y).
    """
    if grid.dim() != 4 or grid.shape[-1] != 2 or points.dim() != 3 or points.shape[0] != grid.shape[0]:
        raise ValueError(f"grid must be (N, H, W, 2) and points (N, P, 2) with the same N, "
                         f"got {tuple(grid.shape)} and {tuple(points.shape)}")
    oh, ow = grid.shape[1:3]
    d_row, d_col = torch.gradient(grid, dim=(1, 2))
    fields = torch.cat([grid, d_col, d_row], -1).permute(0, 3, 1, 2)  # x, y, dx/dc, dy/dc, dx/dr, dy/dr
    lo, hi = grid[:, 0, 0], grid[:, -1, -1]  # the grid's corners: the start maps lo..hi linearly
    q = (points - lo[:, None]) / (hi - lo)[:, None].clamp_min(1e-12) * points.new_tensor([ow - 1, oh - 1])
    top = points.new_tensor([ow - 1, oh - 1])
    for _ in range(iterations):
        q = torch.minimum(q.clamp_min(0.0), top)
        f = _sample_at(fields, q)
        rx, ry = points[..., 0] - f[..., 0], points[..., 1] - f[..., 1]
        a, b, c, d = f[..., 2], f[..., 3], f[..., 4], f[..., 5]
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        q = q + torch.stack([(d * rx - c * ry) / det, (a * ry - b * rx) / det], -1)
    return torch.minimum(q.clamp_min(0.0), top)
