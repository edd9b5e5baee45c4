"""Shared grid helpers for operators that move sampling positions (deformable convolution,
spatial transformers): pixel <-> ``grid_sample`` coordinates, affine maps composed in pixels,
displacement fields, and thin-plate splines.

Pixel coordinates put pixel centres on integers (x right, y down), so pixel ``(0, 0)`` covers
``[-0.5, 0.5]``. Normalized coordinates are those of ``F.grid_sample`` / ``F.affine_grid``:
``-1`` and ``+1`` are the outer pixel edges when ``align_corners=False`` and the outer pixel
centres when ``align_corners=True``. Affine maps are (3, 3) homogeneous matrices acting on
column vectors ``(x, y, 1)``.
"""

from __future__ import annotations

import math

import torch


def pixel_to_normalized(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Pixel coordinate along an axis of ``size`` pixels to ``grid_sample``'s [-1, 1] frame."""
    if align_corners:
        return coord * (2.0 / max(size - 1, 1)) - 1.0
    return (2.0 * coord + 1.0) / size - 1.0


def normalized_to_pixel(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized`."""
    if align_corners:
        return (coord + 1.0) * (max(size - 1, 1) / 2.0)
    return ((coord + 1.0) * size - 1.0) / 2.0


def normalizer(width: int, height: int, align_corners: bool, dtype=torch.float64) -> torch.Tensor:
    """(3, 3) matrix taking pixel (x, y, 1) to normalized (u, v, 1) for a ``width`` x ``height`` frame."""
    def axis(size: int) -> tuple[float, float]:
        if align_corners:
            return 2.0 / max(size - 1, 1), -1.0
        return 2.0 / size, 1.0 / size - 1.0

    sx, ox = axis(width)
    sy, oy = axis(height)
    return torch.tensor([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]], dtype=dtype)


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel coordinates (x, y) of every pixel centre."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)


def frame_centre(width: int, height: int) -> tuple[float, float]:
    """The centre of a frame in pixel coordinates (between pixels when a side is even)."""
    return ((width - 1) / 2.0, (height - 1) / 2.0)


def compose_affine(
    angle_deg: float = 0.0,
    scale: float = 1.0,
    shear: float = 0.0,
    tx: float = 0.0,
    ty: float = 0.0,
    centre: tuple[float, float] = (0.0, 0.0),
) -> torch.Tensor:
    """(3, 3) pixel-space map ``x -> c + R(angle) S(scale) H(shear) (x - c) + t``, float64.

    ``angle_deg`` turns counter-clockwise as seen on screen (y points down); ``shear`` adds
    ``shear * (y - cy)`` to x before the rotation.
    """
    a = math.radians(angle_deg)
    cos, sin = math.cos(a), math.sin(a)
    rot = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)  # screen CCW with y down
    lin = rot @ torch.tensor([[scale, scale * shear], [0.0, scale]], dtype=torch.float64)
    c = torch.tensor(centre, dtype=torch.float64)
    out = torch.eye(3, dtype=torch.float64)
    out[:2, :2] = lin
    out[:2, 2] = c - lin @ c + torch.tensor([tx, ty], dtype=torch.float64)
    return out


def decompose_affine(matrix: torch.Tensor, centre: tuple[float, float] = (0.0, 0.0)) -> dict[str, float]:
    """Inverse of :func:`compose_affine` about ``centre``: angle (degrees), mean scale, shear and
    translation of a (3, 3) pixel-space map, by QR: ``lin = R @ [[s_x, s_x * shear], [0, s_y]]``."""
    lin = matrix[:2, :2].double()
    c = torch.tensor(centre, dtype=torch.float64)
    shift = matrix[:2, 2].double() - c + lin @ c
    angle = math.degrees(math.atan2(-float(lin[1, 0]), float(lin[0, 0])))
    a = math.radians(angle)
    rot_t = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    upper = rot_t @ lin
    sx, sy = float(upper[0, 0]), float(upper[1, 1])
    return {
        "angle": angle,
        "scale": math.sqrt(abs(sx * sy)),
        "shear": float(upper[0, 1]) / sx if sx else 0.0,
        "tx": float(shift[0]),
        "ty": float(shift[1]),
    }


def theta_from_sampling_map(
    sample_map: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int], align_corners: bool
) -> torch.Tensor:
    """The (2, 3) ``F.affine_grid`` theta of a pixel-space sampling map (output pixel -> input pixel).

    Sizes are (width, height). theta = N_in @ M @ N_out^-1, so it acts on normalized coordinates.
    """
    n_in = normalizer(*in_size, align_corners)
    n_out = normalizer(*out_size, align_corners)
    return (n_in @ sample_map.double() @ torch.linalg.inv(n_out))[:2]


def sampling_map_from_theta(
    theta: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int], align_corners: bool
) -> torch.Tensor:
    """Inverse of :func:`theta_from_sampling_map`: (3, 3) pixel map from a (2, 3) theta."""
    full = torch.eye(3, dtype=torch.float64)
    full[:2] = theta.double()
    n_in = normalizer(*in_size, align_corners)
    n_out = normalizer(*out_size, align_corners)
    return torch.linalg.inv(n_in) @ full @ n_out


def apply_affine(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points (..., 2) mapped by a (3, 3) matrix; the result has the points' dtype and device."""
    m = matrix.to(points.device, points.dtype)
    return points @ m[:2, :2].T + m[:2, 2]


def swirl_displacement(points: torch.Tensor, centre: tuple[float, float], angle_rad: float, radius: float) -> torch.Tensor:
    """Displacement (..., 2) that turns ``points`` about ``centre`` by ``angle * exp(-r^2 / 2 radius^2)``."""
    c = torch.tensor(centre, device=points.device, dtype=points.dtype)
    rel = points - c
    r2 = (rel * rel).sum(-1, keepdim=True)
    phi = angle_rad * torch.exp(-r2 / (2.0 * radius * radius))
    cos, sin = torch.cos(phi), torch.sin(phi)
    x, y = rel[..., :1], rel[..., 1:]
    turned = torch.cat([cos * x + sin * y, -sin * x + cos * y], -1)
    return turned - rel


def border_polyline(width: int, height: int, per_side: int = 16, dtype=torch.float32) -> torch.Tensor:
    """(4 * per_side, 2) points along the frame's outer edge (pixel coordinates), clockwise from
    the top-left corner: warp them to draw where the frame lands."""
    t = torch.linspace(0.0, 1.0, per_side + 1, dtype=dtype)[:-1]
    x0, y0, x1, y1 = -0.5, -0.5, width - 0.5, height - 0.5
    top = torch.stack([x0 + t * (x1 - x0), torch.full_like(t, y0)], 1)
    right = torch.stack([torch.full_like(t, x1), y0 + t * (y1 - y0)], 1)
    bottom = torch.stack([x1 - t * (x1 - x0), torch.full_like(t, y1)], 1)
    left = torch.stack([torch.full_like(t, x0), y1 - t * (y1 - y0)], 1)
    return torch.cat([top, right, bottom, left])


# -- thin-plate splines ------------------------------------------------------------------------


def _tps_kernel(r2: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2, with U(0) = 0."""
    return r2 * torch.log(r2.clamp_min(1e-12))


def tps_fit(sources: torch.Tensor, targets: torch.Tensor, regularization: float = 0.0) -> torch.Tensor:
    """Coefficients of the thin-plate spline f with f(sources[i]) = targets[i].

    Shapes: sources (K, 2), targets (K, 2) -> (K + 3, 2): K radial weights then the affine part
    (constant, x, y). Differentiable in both inputs. Needs K >= 3 points not all on a line.
    """
    k = sources.shape[0]
    if sources.shape != targets.shape or sources.shape[-1] != 2 or k < 3:
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
    flat = points.reshape(-1, 2)
    u = _tps_kernel(torch.cdist(flat, sources).pow(2))
    k = sources.shape[0]
    out = u @ coeffs[:k] + coeffs[k] + flat @ coeffs[k + 1 :]
    return out.reshape(points.shape)


def control_lattice(n_per_side: int, width: int, height: int, dtype=torch.float32) -> torch.Tensor:
    """(n * n, 2) control points on a regular lattice spanning the frame's outer pixel centres,
    corners included, row-major from the top-left."""
    xs = torch.linspace(0.0, width - 1.0, n_per_side, dtype=dtype)
    ys = torch.linspace(0.0, height - 1.0, n_per_side, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
