"""Thin-plate splines: the smoothest map through control points, and its ``grid_sample`` grid,
the TPS counterpart of ``F.affine_grid``.

Points are (K, 2) tensors of (x, y), in whatever frame the caller chooses; :func:`tps_grid`
works in ``grid_sample``'s normalized coordinates (see :mod:`backends.functional.coords`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.coords import pixel_to_normalized


def _tps_kernel(r2: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2, with U(0) = 0."""
    return r2 * torch.log(r2.clamp_min(1e-12))


def tps_fit(sources: torch.Tensor, targets: torch.Tensor, regularization: float = 0.0) -> torch.Tensor:
    """Coefficients of the thin-plate spline f with f(sources[i]) = targets[i].

    Args:
        sources: (K, 2), K >= 3 points not all on a line.
        targets: (K, 2).
        regularization: added to the kernel's diagonal; 0 interpolates exactly.
    Returns:
        (K + 3, 2): K radial weights, then the affine part (constant, x, y). Differentiable in
        both inputs.
    """
    k = sources.shape[0]
    if sources.shape != targets.shape or sources.dim() != 2 or sources.shape[-1] != 2 or k < 3:
        raise ValueError(f"tps_fit needs (K, 2) sources and targets with K >= 3, got {tuple(sources.shape)} and {tuple(targets.shape)}")
    d2 = torch.cdist(sources, sources).pow(2)
    kmat = _tps_kernel(d2) + regularization * torch.eye(k, dtype=sources.dtype, device=sources.device)
    p = torch.cat([torch.ones_like(sources[:, :1]), sources], 1)
    top = torch.cat([kmat, p], 1)
    bottom = torch.cat([p.T, torch.zeros(3, 3, dtype=sources.dtype, device=sources.device)], 1)
    system = torch.cat([top, bottom], 0)
    rhs = torch.cat([targets, torch.zeros(3, 2, dtype=targets.dtype, device=targets.device)], 0)
    return torch.linalg.solve(system, rhs)


def tps_apply(coeffs: torch.Tensor, sources: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The spline of :func:`tps_fit` at ``points`` (..., 2) -> (..., 2)."""
    k = sources.shape[0]
    if tuple(coeffs.shape) != (k + 3, 2) or points.shape[-1] != 2:
        raise ValueError(f"tps_apply needs ({k + 3}, 2) coefficients for {k} sources and (..., 2) points, "
                         f"got {tuple(coeffs.shape)} and {tuple(points.shape)}")
    flat = points.reshape(-1, 2)
    u = _tps_kernel(torch.cdist(flat, sources).pow(2))
    out = u @ coeffs[:k] + coeffs[k] + flat @ coeffs[k + 1:]
    return out.reshape(points.shape)


def control_lattice(n_per_side: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n * n, 2) control points (x, y) on a regular lattice over normalized [-1, 1]^2, corners
    included, row-major from the top-left."""
    t = torch.linspace(-1.0, 1.0, n_per_side, dtype=dtype)
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def tps_grid(controls: torch.Tensor, targets: torch.Tensor, size: tuple[int, int], align_corners: bool,
             step: int = 1) -> torch.Tensor:
    """The ``grid_sample`` grid of the thin-plate spline f taking ``controls`` to ``targets``.

    Args:
        controls, targets: (K, 2) normalized (x, y); output pixel p samples the input at f(p),
            f(controls) = targets.
        size: the output's (H, W).
        step: > 1 evaluates the spline every ``step`` pixels (first and last rows and columns
            included) and interpolates linearly between: exact for affine maps, and for bends of
            tens of pixels over hundreds the error is a few hundredths of a pixel.
    Returns:
        (1, H, W, 2), like ``F.affine_grid``; differentiable in ``targets``, in targets' dtype.
    """
    if controls.shape != targets.shape or controls.dim() != 2 or controls.shape[-1] != 2:
        raise ValueError(f"tps_grid needs (K, 2) controls and targets, got {tuple(controls.shape)} and {tuple(targets.shape)}")
    h, w = size
    hs, ws = (h, w) if step <= 1 else (-(-(h - 1) // step) + 1, -(-(w - 1) // step) + 1)
    dev, dt = targets.device, torch.float64  # float64 inside: identity stays exact to ~1e-7 px
    ys = pixel_to_normalized(torch.linspace(0, h - 1, hs, device=dev, dtype=dt), h, align_corners)
    xs = pixel_to_normalized(torch.linspace(0, w - 1, ws, device=dev, dtype=dt), w, align_corners)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    coeffs = tps_fit(controls.to(dev, dt), targets.to(dt))
    grid = tps_apply(coeffs, controls.to(dev, dt), base)[None]
    if (hs, ws) != (h, w):
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
    return grid.to(targets.dtype)


class TPSGridGen(nn.Module):
    """The grid generator of a TPS spatial transformer: fixed ``controls`` (a buffer), targets
    from the localisation network, a ``grid_sample`` grid out (:func:`tps_grid`)."""

    def __init__(self, controls: torch.Tensor, size: tuple[int, int], align_corners: bool = False, step: int = 1) -> None:
        super().__init__()
        self.register_buffer("controls", controls.clone())
        self.size, self.align_corners, self.step = tuple(size), align_corners, step

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        return tps_grid(self.controls, targets, self.size, self.align_corners, self.step)
