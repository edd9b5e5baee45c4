"""Shared grid helpers for operators that move sampling positions (deformable convolution,
spatial transformers): pixel <-> ``grid_sample`` coordinates, affine maps composed in pixels,
per-tap displacement fields (analytic warps, edge-following taps), and thin-plate splines.

Pixel coordinates put pixel centres on integers (x right, y down), so pixel ``(0, 0)`` covers
``[-0.5, 0.5]``. Normalized coordinates are those of ``F.grid_sample`` / ``F.affine_grid``:
``-1`` and ``+1`` are the outer pixel edges when ``align_corners=False`` and the outer pixel
centres when ``align_corners=True``. Affine maps are (3, 3) homogeneous matrices acting on
column vectors ``(x, y, 1)``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from backends.kernels import make_kernel


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


# -- deformable taps: where each tap of each pixel reads, as torchvision offsets -------------------


def tap_vectors(k: int, dilation: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(K, 2) regular tap positions (x, y) relative to the output pixel, 'same' padding, row-major."""
    c = (torch.arange(k, device=device, dtype=dtype) - k // 2) * dilation
    return torch.stack([c.repeat(k), c.repeat_interleave(k)], 1)


def _offsets_buffer(k: int, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An empty (1, 2K, H, W) offsets tensor and its dx and dy planes (K, H, W), to be filled with
    ``out=`` and in-place ops: the fields are memory-bound, so every full-size pass counts."""
    out = like.new_empty(1, 2 * k, h, w)
    planes = out.view(k, 2, h, w)
    return out, planes[:, 1], planes[:, 0]


def offsets_to_xy(offsets: torch.Tensor) -> torch.Tensor:
    """(1, 2K, H, W) torchvision offsets -> (K, H, W, 2) displacements (dx, dy); thin it first."""
    _, c, h, w = offsets.shape
    return offsets.reshape(c // 2, 2, h, w).permute(0, 2, 3, 1).flip(-1)


def offset_magnitude(offsets: torch.Tensor) -> torch.Tensor:
    """(1, 2K, H, W) offsets -> (K, H, W) lengths in pixels."""
    _, c, h, w = offsets.shape
    return offsets.reshape(c // 2, 2, h, w).pow(2).sum(1).sqrt()


GLOBAL_WARPS = ("zoom", "rotate", "shear", "swirl")  # offsets that one warp of the plane gives every tap


def widened_coords(h: int, w: int, reach: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (1, W + 2 reach) and y (H + 2 reach, 1): the pixel grid widened by ``reach`` on each side,
    where every tap of a kernel of that reach lands."""
    x = torch.arange(-reach, w + reach, device=device, dtype=torch.float32)[None, :]
    y = torch.arange(-reach, h + reach, device=device, dtype=torch.float32)[:, None]
    return x, y


def swirl_envelope(query: tuple[float, float], h: int, w: int, reach: int, device=None) -> torch.Tensor:
    """exp(-r^2 / 2 R^2) on the widened grid (H + 2 reach, W + 2 reach), r from the query, R a fifth
    of the short side: the swirl's fall-off, which does not depend on its strength (so callers may keep it)."""
    x, y = widened_coords(h, w, reach, device)
    a = math.sqrt(0.5) / (0.2 * min(h, w))
    return ((x - query[0]) * a).square_().add((y - query[1]).mul_(a).square_()).neg_().exp_()


def warp_displacement(kind: str, strength: float, query: tuple[float, float], h: int, w: int, reach: int,
                      device=None, envelope: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dy), each (H + 2 reach, W + 2 reach): how far a global warp moves every point of the
    widened grid (point (x, y) at index (y + reach, x + reach)).

    zoom magnifies about the query by 2**strength, rotate turns by 45 deg * strength about it,
    shear slides x by strength / 2 * (y - query y), swirl turns by pi * strength about the query
    with a Gaussian fall-off (:func:`swirl_envelope`, passed in when the caller keeps it). Every
    tap of every pixel sits on this grid, so one field serves all K taps: K times less work than
    a field per tap.
    """
    x, y = widened_coords(h, w, reach, device)
    if kind == "swirl":
        env = envelope if envelope is not None else swirl_envelope(query, h, w, reach, device)
        phi = env * (math.pi * strength)
        cos_m1, sin = phi.cos().sub_(1.0), phi.sin_()
        rx, ry = x - query[0], y - query[1]
        dx = torch.mul(cos_m1, rx).addcmul_(sin, ry)  # (cos - 1) rx + sin ry
        dy = torch.mul(cos_m1, ry).addcmul_(sin, rx, value=-1.0)  # (cos - 1) ry - sin rx
        return dx, dy
    maps = {"zoom": dict(scale=2.0 ** (-strength)), "rotate": dict(angle_deg=45.0 * strength), "shear": dict(shear=0.5 * strength)}
    if kind not in maps:
        raise ValueError(f"unknown global warp {kind!r}; one of {', '.join(GLOBAL_WARPS)}")
    m = compose_affine(centre=query, **maps[kind]).tolist()
    dx = torch.add(x * (m[0][0] - 1) + m[0][2], y * m[0][1])
    dy = torch.add(x * m[1][0], y * (m[1][1] - 1) + m[1][2])
    return dx, dy


def tap_windows(plane: torch.Tensor, k: int, dilation: int, h: int, w: int) -> list[torch.Tensor]:
    """The (..., H, W) window of a widened-grid plane (..., H + 2 reach, W + 2 reach) that each
    tap reads, row-major: views, no copies."""
    return [plane[..., i * dilation : i * dilation + h, j * dilation : j * dilation + w] for i in range(k) for j in range(k)]


def offsets_from_displacement(dx: torch.Tensor, dy: torch.Tensor, k: int, dilation: int) -> torch.Tensor:
    """torchvision offsets (1, 2K, H, W) from a :func:`warp_displacement`: tap t of pixel p moves
    by the displacement at p + t."""
    reach = dilation * (k // 2)
    h, w = dx.shape[0] - 2 * reach, dx.shape[1] - 2 * reach
    out, out_dx, out_dy = _offsets_buffer(k * k, h, w, dx)
    for t, (wx, wy) in enumerate(zip(tap_windows(dx, k, dilation, h, w), tap_windows(dy, k, dilation, h, w))):
        out_dx[t].copy_(wx)
        out_dy[t].copy_(wy)
    return out


def analytic_offsets(kind: str, strength: float, query: tuple[float, float], h: int, w: int, k: int, dilation: int,
                     seed: int = 0, device=None, envelope: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Offsets (1, 2K, H, W): a global warp's (:func:`warp_displacement`), or, for random, each
    tap its own smooth field of about 2 * dilation * strength pixels."""
    if kind == "random":
        g = torch.Generator().manual_seed(int(seed))
        coarse = torch.randn(1, 2 * k * k, 6, 6, generator=g).to(device)
        return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True) * (2.0 * dilation * strength)
    reach = dilation * (k // 2)
    dx, dy = warp_displacement(kind, strength, query, h, w, reach, device, envelope)
    return offsets_from_displacement(dx, dy, k, dilation)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), replicate border; identity below sigma 0.3."""
    if sigma < 0.3:
        return x
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def structure_tensor(grey: torch.Tensor, sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Dominant gradient angle (H, W), radians, and coherence in [0, 1] of a (1, 1, H, W) image."""
    sob = torch.from_numpy(make_kernel("sobel_x", 3)).to(grey.device, grey.dtype)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sob[None, None])
    gy = F.conv2d(padded, sob.T[None, None])
    j = gaussian_blur(torch.cat([gx * gx, gx * gy, gy * gy], 1), sigma)[0]
    jxx, jxy, jyy = j[0], j[1], j[2]
    angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)
    spread = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy)
    coherence = (spread / (jxx + jyy).clamp_min(1e-8)) ** 2
    return angle, coherence.clamp(0, 1)


def edge_offsets(angle: torch.Tensor, coherence: torch.Tensor, strength: float, k: int, dilation: int) -> torch.Tensor:
    """Offsets (1, 2K, H, W) turning the tap grid so its rows follow the local edge (the tangent,
    across the dominant gradient) and stretching it along the edge by 2**(strength * coherence),
    squeezing across by the inverse; flat regions (low coherence) keep the regular grid.

    Tap t = (tx, ty) moves to t + c * (tx * s * tangent + ty / s * normal - t), linear in t, so
    four (H, W) planes give every tap's displacement."""
    t = tap_vectors(k, dilation, angle.device, angle.dtype)
    tx, ty = t[:, 0, None, None], t[:, 1, None, None]
    cos, sin, c = torch.cos(angle), torch.sin(angle), coherence
    s = 2.0 ** (strength * coherence)
    out, dx, dy = _offsets_buffer(t.shape[0], *angle.shape, angle)
    torch.mul(c * (-sin * s - 1), tx, out=dx).addcmul_(c * cos / s, ty)
    torch.mul(c * cos * s, tx, out=dy).addcmul_(c * (sin / s - 1), ty)
    return out


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


def control_lattice(n_per_side: int, dtype=torch.float32) -> torch.Tensor:
    """(n * n, 2) control points (x, y) on a regular lattice over normalized [-1, 1]^2, corners
    included, row-major from the top-left."""
    t = torch.linspace(-1.0, 1.0, n_per_side, dtype=dtype)
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def tps_grid(controls: torch.Tensor, targets: torch.Tensor, size: tuple[int, int], align_corners: bool,
             step: int = 1) -> torch.Tensor:
    """The ``grid_sample`` grid (1, H, W, 2) of the thin-plate spline taking ``controls`` (K, 2) to
    ``targets`` (K, 2), both normalized: output pixel p samples the input at f(p), f(controls) =
    targets. Like ``F.affine_grid`` for a TPS; ``size`` is (H, W). Differentiable in ``targets``.

    ``step`` > 1 evaluates the spline every ``step`` pixels (first and last rows and columns
    included) and interpolates linearly between: exact for affine maps, and for bends of tens
    of pixels over hundreds the error is a few hundredths of a pixel, at a fraction of the cost.
    """
    h, w = size
    hs, ws = (h, w) if step <= 1 else (-(-(h - 1) // step) + 1, -(-(w - 1) // step) + 1)
    dev, dt = targets.device, torch.float64  # float64 inside: identity stays exact to ~1e-7 px
    ys = pixel_to_normalized(torch.linspace(0, h - 1, hs, device=dev, dtype=dt), h, align_corners)
    xs = pixel_to_normalized(torch.linspace(0, w - 1, ws, device=dev, dtype=dt), w, align_corners)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    coeffs = tps_fit(controls.to(dt), targets.to(dt))
    grid = tps_apply(coeffs, controls.to(dt), base)[None]
    if (hs, ws) != (h, w):
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
    return grid.to(targets.dtype)
