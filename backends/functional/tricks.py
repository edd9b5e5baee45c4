"""Tricks that give a useful gradient where the plain operation has none, or a poor one.

- **Reparameterization against the score function** (REINFORCE): two unbiased estimators of
  ``d/dmu E[f(z)]``, ``z ~ N(mu, sigma^2)``. Reparameterized: ``z = mu + sigma * eps`` and the
  per-draw estimate is ``f'(z)`` (autograd through ``f``). Score function:
  ``f(z) * d log N(z; mu, sigma) / d mu = f(z) (z - mu) / sigma^2``, which needs no ``f'``
  (it works for a step) but has a larger variance.
- **Soft argmax**: the expected location under a softmax of a heatmap; it tends to the hard
  argmax as the temperature falls and, unlike it, has a gradient.
- **Soft crop**: a two-dimensional boxcar, a product of two differences of sigmoids, whose box
  edges get gradients; it tends to the hard crop as its sharpness grows.
- **Blurred delta**: a point drawn at a sub-pixel location as a blur kernel read from a lookup
  table by linear interpolation, so the drawing has a gradient with respect to the location.

Tensors follow torch conventions (NCHW). Pixel coordinates put pixel centres on integers, x right,
y down; a box is ``(x0, y0, x1, y1)`` in those coordinates (its edges, not pixel indices).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

FUNCTIONS = ("square", "bump", "step")
BUMP_WIDTH = 1.0  # the bump is exp(-z^2 / (2 BUMP_WIDTH^2))


# -- reparameterization against the score function -------------------------------------------------

def objective(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f`` by name: ``square`` z^2, ``bump`` exp(-z^2 / 2), ``step`` 1 for z > 0 else 0 (written
    with ``sign``, whose autograd derivative is 0: what the reparameterized estimator sees)."""
    if name == "square":
        return lambda z: z * z
    if name == "bump":
        return lambda z: torch.exp(-z * z / (2 * BUMP_WIDTH**2))
    if name == "step":
        return lambda z: 0.5 * (1 + torch.sign(z))
    raise ValueError(f"function must be one of {FUNCTIONS}, got {name!r}")


def expected_value(name: str, mu: float, sigma: float) -> float:
    """``E[f(z)]``, ``z ~ N(mu, sigma^2)``, in closed form."""
    if name == "square":
        return mu * mu + sigma * sigma
    if name == "bump":
        v = BUMP_WIDTH**2 + sigma * sigma
        return BUMP_WIDTH / math.sqrt(v) * math.exp(-mu * mu / (2 * v))
    if name == "step":
        return 0.5 * (1 + math.erf(mu / (sigma * math.sqrt(2))))
    raise ValueError(f"function must be one of {FUNCTIONS}, got {name!r}")


def expected_value_gradient(name: str, mu: float, sigma: float) -> float:
    """``d/dmu E[f(z)]`` in closed form: the target both estimators aim at."""
    if name == "square":
        return 2 * mu
    if name == "bump":
        return -mu / (BUMP_WIDTH**2 + sigma * sigma) * expected_value("bump", mu, sigma)
    if name == "step":
        return math.exp(-0.5 * (mu / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    raise ValueError(f"function must be one of {FUNCTIONS}, got {name!r}")


def _check_noise(eps: torch.Tensor) -> None:
    if eps.dim() != 1:
        raise ValueError(f"eps must be (n,) standard normal draws, got {tuple(eps.shape)}")


def reparameterized_gradients(f: Callable[[torch.Tensor], torch.Tensor], mu: float, sigma: float,
                              eps: torch.Tensor) -> torch.Tensor:
    """Per-draw ``d/dmu f(mu + sigma * eps_i)`` by autograd through ``f``.

    Args:
        eps: (n,) standard normal draws.
    Returns:
        (n,); zeros where autograd finds no path from ``mu`` to ``f`` (a step).
    """
    _check_noise(eps)
    with torch.enable_grad():
        m = torch.full_like(eps, mu).requires_grad_(True)  # one copy of mu per draw: per-draw gradients
        y = f(m + sigma * eps)
        if not y.requires_grad:
            return torch.zeros_like(eps)
        (grad,) = torch.autograd.grad(y.sum(), m)
    return grad


def score_function_gradients(f: Callable[[torch.Tensor], torch.Tensor], mu: float, sigma: float, eps: torch.Tensor,
                             baseline: bool = False) -> torch.Tensor:
    """Per-draw ``(f(z_i) - b_i) d log N(z_i; mu, sigma^2) / d mu`` (REINFORCE), the score by autograd.

    Args:
        eps: (n,) standard normal draws; ``z = mu + sigma * eps``.
        baseline: subtract ``b_i``, the mean of ``f`` over the other draws (leave-one-out, so the
            estimate stays unbiased); otherwise ``b_i = 0``.
    Returns:
        (n,).
    """
    _check_noise(eps)
    z = (mu + sigma * eps).detach()
    with torch.enable_grad():
        m = torch.full_like(eps, mu).requires_grad_(True)
        log_p = torch.distributions.Normal(m, sigma).log_prob(z)
        (score,) = torch.autograd.grad(log_p.sum(), m)
    fz = f(z).detach()
    if baseline:
        n = fz.numel()
        if n < 2:
            raise ValueError(f"a leave-one-out baseline needs at least 2 draws, got {n}")
        fz = fz - (fz.sum() - fz) / (n - 1)
    return fz * score


def batch_mean_variance(estimates: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """The variance of the mean of ``size`` draws, measured over disjoint batches of the draws.

    Args:
        estimates: (n,) per-draw estimates.
        sizes: batch sizes, each at most n / 2 (two batches at least).
    Returns:
        (len(sizes),) float64: for independent draws about ``var(estimates) / size``.
    """
    _check_noise(estimates)
    n = estimates.numel()
    out = []
    for size in sizes:
        batches = n // int(size)
        if batches < 2:
            raise ValueError(f"batch size {size} leaves fewer than 2 batches of {n} draws")
        means = estimates[: batches * int(size)].double().view(batches, int(size)).mean(1)
        out.append(means.var(unbiased=True))
    return torch.stack(out)


# -- soft argmax -------------------------------------------------------------------------------------

def _check_maps(input: torch.Tensor, what: str) -> None:
    if input.dim() != 4:
        raise ValueError(f"{what} expects (B, N, H, W), got {tuple(input.shape)}")


def spatial_softmax2d(input: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over the pixels of each map of ``input / temperature``: (B, N, H, W) -> same shape."""
    _check_maps(input, "spatial_softmax2d")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b, n, h, w = input.shape
    return F.softmax(input.reshape(b, n, h * w) / temperature, dim=-1).view(b, n, h, w)


def pixel_coordinates(h: int, w: int, normalized: bool, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w,) x and (h,) y of pixel centres: integers, or ``linspace(-1, 1)`` when ``normalized``."""
    if normalized:
        return (torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype),
                torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype))
    return (torch.arange(w, device=like.device, dtype=like.dtype), torch.arange(h, device=like.device, dtype=like.dtype))


def soft_argmax2d(input: torch.Tensor, temperature: float = 1.0, normalized_coordinates: bool = False) -> torch.Tensor:
    """The expected (x, y) under :func:`spatial_softmax2d`: a differentiable argmax.

    Args:
        input: (B, N, H, W) scores.
        temperature: divides the scores; towards 0 the result tends to the hard argmax. (kornia's
            ``spatial_soft_argmax2d`` *multiplies* by its ``temperature``: ours at ``t`` equals
            kornia's at ``1 / t``.)
        normalized_coordinates: pixel centres from -1 to 1 (kornia's convention) instead of pixels.
    Returns:
        (B, N, 2) of (x, y).
    """
    p = spatial_softmax2d(input, temperature)
    xs, ys = pixel_coordinates(input.shape[-2], input.shape[-1], normalized_coordinates, input)
    return torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)


def hard_argmax2d(input: torch.Tensor) -> torch.Tensor:
    """(B, N, H, W) -> (B, N, 2): the (x, y) pixel of each map's maximum (first in row-major order)."""
    _check_maps(input, "hard_argmax2d")
    b, n, h, w = input.shape
    idx = input.reshape(b, n, h * w).argmax(-1)
    return torch.stack([idx % w, idx // w], -1).to(input.dtype)


class SoftArgmax2d(nn.Module):
    """Module twin of :func:`soft_argmax2d` (a keypoint head's last layer)."""

    def __init__(self, temperature: float = 1.0, normalized_coordinates: bool = False) -> None:
        super().__init__()
        self.temperature, self.normalized_coordinates = temperature, normalized_coordinates

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return soft_argmax2d(input, self.temperature, self.normalized_coordinates)


# -- soft crop ---------------------------------------------------------------------------------------

def boxcar_profile(coords: torch.Tensor, low: torch.Tensor, high: torch.Tensor, sharpness: float) -> torch.Tensor:
    """``sigmoid(k (c - low)) - sigmoid(k (c - high))``: about 1 between ``low`` and ``high``, 0
    outside, 1/2 on an edge when the box is wide; broadcasts ``coords`` against the edges."""
    return torch.sigmoid(sharpness * (coords - low)) - torch.sigmoid(sharpness * (coords - high))


def boxcar_mask(height: int, width: int, box: torch.Tensor, sharpness: float) -> torch.Tensor:
    """The two-dimensional boxcar of a box: a product of a row and a column profile.

    Args:
        box: (..., 4) of (x0, y0, x1, y1), pixel coordinates of the box's edges.
        sharpness: 1 / px; the edges blur over about 4 / sharpness px.
    Returns:
        (..., H, W) in [0, 1], differentiable in ``box``.
    """
    if box.shape[-1] != 4:
        raise ValueError(f"box must be (..., 4) of x0, y0, x1, y1, got {tuple(box.shape)}")
    xs = torch.arange(width, device=box.device, dtype=box.dtype)
    ys = torch.arange(height, device=box.device, dtype=box.dtype)
    e = box[..., None]
    px = boxcar_profile(xs, e[..., 0, :], e[..., 2, :], sharpness)  # (..., W)
    py = boxcar_profile(ys, e[..., 1, :], e[..., 3, :], sharpness)  # (..., H)
    return py[..., :, None] * px[..., None, :]


def hard_box_mask(height: int, width: int, box: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """(H, W): 1 where the pixel centre lies strictly inside the box, else 0 (the plain crop)."""
    x0, y0, x1, y1 = box
    xs = torch.arange(width, device=like.device, dtype=like.dtype)
    ys = torch.arange(height, device=like.device, dtype=like.dtype)
    return (((ys > y0) & (ys < y1))[:, None] & ((xs > x0) & (xs < x1))[None, :]).to(like.dtype)


def soft_crop_mean(values: torch.Tensor, box: torch.Tensor, sharpness: float) -> torch.Tensor:
    """The boxcar-weighted mean of ``values`` (H, W): ``sum(m v) / sum(m)``, differentiable in ``box`` (4,)."""
    if values.dim() != 2:
        raise ValueError(f"values must be (H, W), got {tuple(values.shape)}")
    m = boxcar_mask(values.shape[0], values.shape[1], box, sharpness)
    return (m * values).sum() / m.sum().clamp_min(1e-12)


def soft_crop_edge_gradients(values: torch.Tensor, box: Sequence[float], sharpness: float) -> tuple[torch.Tensor, ...]:
    """Where along each edge the gradient of :func:`soft_crop_mean` comes from.

    Give each edge one copy per row (left, right) or column (top, bottom): the derivatives with
    respect to those copies are the edge's gradient split by row or column, and they sum to the
    gradient with respect to the edge. The mask is a product of two profiles, so each part is one
    matrix-vector product: for the left edge ``py_i sum_j dpx_j / dx0 (v_ij - mean) / sum(m)``.

    Args:
        values: (H, W).
        box: (x0, y0, x1, y1).
    Returns:
        the mean (a 0-d tensor), then d mean / d x0 per row (H,), d / d y0 per column (W,),
        d / d x1 per row (H,) and d / d y1 per column (W,).
    """
    if values.dim() != 2:
        raise ValueError(f"values must be (H, W), got {tuple(values.shape)}")
    h, w = values.shape
    x0, y0, x1, y1 = (float(v) for v in box)

    def profile(n: int, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The profile and its derivatives with respect to its low and high edge."""
        c = torch.arange(n, device=values.device, dtype=values.dtype)
        a, b = torch.sigmoid(sharpness * (c - low)), torch.sigmoid(sharpness * (c - high))
        return a - b, -sharpness * a * (1 - a), sharpness * b * (1 - b)

    px, dx_low, dx_high = profile(w, x0, x1)
    py, dy_low, dy_high = profile(h, y0, y1)
    total = (py.sum() * px.sum()).clamp_min(1e-12)
    mean = (py @ values @ px) / total
    by_row = [py * (values @ d - mean * d.sum()) / total for d in (dx_low, dx_high)]
    by_col = [px * (d @ values - mean * d.sum()) / total for d in (dy_low, dy_high)]
    return (mean, by_row[0], by_col[0], by_row[1], by_col[1])


# -- blurred delta -----------------------------------------------------------------------------------

def gaussian_lut(sigma: float, phases: int, radius: int = 0) -> tuple[torch.Tensor, int]:
    """A blur kernel tabulated at ``phases`` steps per pixel: the lookup table of :func:`lut_kernel`.

    Args:
        sigma: the Gaussian's standard deviation, px.
        phases: table entries per pixel (1: the kernel at whole pixels only).
        radius: px on each side; 0 means ceil(3 sigma) + 1.
    Returns:
        the table (2 radius phases + 1,) float64 of ``exp(-t^2 / 2 sigma^2) / (sqrt(2 pi) sigma)``
        at ``t = -radius + i / phases``, and the radius.
    """
    if sigma <= 0 or phases < 1:
        raise ValueError(f"sigma must be positive and phases at least 1, got {sigma} and {phases}")
    radius = radius or int(math.ceil(3 * sigma)) + 1
    t = torch.arange(2 * radius * phases + 1, dtype=torch.float64) / phases - radius
    return torch.exp(-t * t / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma), radius


def lut_kernel(table: torch.Tensor, phases: int, radius: int, offsets: torch.Tensor) -> torch.Tensor:
    """The tabulated kernel at any ``offsets`` (px), linear between entries and down to 0 one entry
    past each end: continuous and piecewise linear, so its derivative (the gradient a drawing
    passes back) is piecewise constant."""
    if table.dim() != 1 or table.numel() != 2 * radius * phases + 1:
        raise ValueError(f"table must be ({2 * radius * phases + 1},) for radius {radius} and {phases} phases, "
                         f"got {tuple(table.shape)}")
    t = F.pad(table.to(offsets), (1, 1))  # a zero entry past each end
    last = t.numel() - 1
    pos = (offsets + radius) * phases + 1
    inside = (pos >= 0) & (pos <= last)
    pos = pos.clamp(0, last)
    i0 = pos.detach().floor().clamp(max=last - 1).long()
    frac = pos - i0.to(pos.dtype)
    return torch.where(inside, t[i0] * (1 - frac) + t[i0 + 1] * frac, torch.zeros_like(offsets))


def blurred_delta(points: torch.Tensor, height: int, width: int, table: torch.Tensor, phases: int,
                  radius: int) -> torch.Tensor:
    """Points drawn as blurred deltas: pixel (x, y) of point p is ``k(x - p_x) k(y - p_y)``, ``k``
    read from the table (:func:`lut_kernel`). With 1 phase this is a bilinear splat followed by the
    kernel sampled at whole pixels; more phases follow the continuous kernel more closely.

    Args:
        points: (N, 2) of (x, y), pixel coordinates.
    Returns:
        (N, H, W), differentiable in ``points``.
    """
    if points.dim() != 2 or points.shape[-1] != 2:
        raise ValueError(f"points must be (N, 2) of x, y, got {tuple(points.shape)}")
    xs = torch.arange(width, device=points.device, dtype=points.dtype)
    ys = torch.arange(height, device=points.device, dtype=points.dtype)
    kx = lut_kernel(table, phases, radius, xs[None, :] - points[:, :1])  # (N, W)
    ky = lut_kernel(table, phases, radius, ys[None, :] - points[:, 1:])  # (N, H)
    return ky[:, :, None] * kx[:, None, :]


def rounded_delta(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 2) -> (N, H, W): a 1 at each point's nearest pixel, the plain (gradient-free) drawing."""
    out = points.new_zeros(points.shape[0], height, width)
    ix = points[:, 0].detach().round().long()
    iy = points[:, 1].detach().round().long()
    inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    out[torch.nonzero(inside)[:, 0], iy[inside], ix[inside]] = 1
    return out


class BlurredDelta(nn.Module):
    """Module twin of :func:`blurred_delta`: draws (N, 2) points on an H x W canvas."""

    def __init__(self, height: int, width: int, sigma: float = 1.0, phases: int = 8) -> None:
        super().__init__()
        table, self.radius = gaussian_lut(sigma, phases)
        self.register_buffer("table", table)
        self.height, self.width, self.phases = height, width, phases

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return blurred_delta(points, self.height, self.width, self.table, self.phases, self.radius)
