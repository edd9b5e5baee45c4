"""The differentiable tricks' cores: the two gradient estimators against their per-draw formulas
(1e-12) and against the closed form within a stated number of standard errors (seeded), the
closed forms against quadrature; the soft argmax against a naive float64 loop (1e-10), kornia's
spatial_soft_argmax2d when installed (1e-6), the hard argmax as the temperature falls; the
boxcar against its formula, the hard crop as the sharpness grows, its edge gradients against
autograd and central differences; the lookup-table delta against a naive loop, a bilinear splat
convolved with the sampled kernel (one phase); float64 gradcheck and module twins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.tricks import (
    FUNCTIONS,
    BlurredDelta,
    SoftArgmax2d,
    batch_mean_variance,
    blurred_delta,
    boxcar_mask,
    expected_value,
    expected_value_gradient,
    gaussian_lut,
    hard_argmax2d,
    hard_box_mask,
    lut_kernel,
    objective,
    reparameterized_gradients,
    rounded_delta,
    score_function_gradients,
    soft_argmax2d,
    soft_crop_edge_gradients,
    soft_crop_mean,
    spatial_softmax2d,
)

NAIVE_TOL = 1e-10  # float64, the same arithmetic up to summation order
FORMULA_TOL = 1e-12  # per-draw estimates against their formulas, float64
PEER_TOL = 1e-6  # float64 against kornia
UNBIASED_SE = 4.0  # a mean of an unbiased estimator lies within 4 standard errors of the truth (p ~ 6e-5 per check)
QUADRATURE_TOL = 1e-7  # closed forms against 100001-point trapezoid rules over +-12 sigma
HARD_TOL = 1e-6  # soft -> hard as the temperature falls (1e-3) or the sharpness grows (100 / px)


# -- estimators ------------------------------------------------------------------------------------

def _draws(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _derivative(name: str, z: torch.Tensor) -> torch.Tensor:
    """f'(z) written out: what the reparameterized estimator must return per draw."""
    if name == "square":
        return 2 * z
    if name == "bump":
        return -z * torch.exp(-z * z / 2)
    return torch.zeros_like(z)  # the step is flat wherever it is differentiable


@pytest.mark.parametrize("name", FUNCTIONS)
def test_per_draw_estimates_follow_their_formulas(name):
    mu, sigma = 0.7, 1.3
    eps = _draws(257, 1)
    z = mu + sigma * eps
    f = objective(name)
    torch.testing.assert_close(reparameterized_gradients(f, mu, sigma, eps), _derivative(name, z), atol=FORMULA_TOL, rtol=0)
    torch.testing.assert_close(score_function_gradients(f, mu, sigma, eps), f(z) * (z - mu) / sigma**2,
                               atol=FORMULA_TOL, rtol=0)
    n = eps.numel()
    loo = f(z) - (f(z).sum() - f(z)) / (n - 1)
    torch.testing.assert_close(score_function_gradients(f, mu, sigma, eps, baseline=True), loo * (z - mu) / sigma**2,
                               atol=FORMULA_TOL, rtol=0)


def _quadrature(name: str, mu: float, sigma: float) -> float:
    """Trapezoids on each side of 0, where the step jumps, each side taking its own limit there."""
    f = objective(name)
    total = 0.0
    for lo, hi, inward in ((mu - 12 * sigma, 0.0, -math.inf), (0.0, mu + 12 * sigma, math.inf)):
        if hi <= lo:
            continue
        z = torch.linspace(lo, hi, 100001, dtype=torch.float64)
        density = torch.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        total += float(torch.trapezoid(f(torch.nextafter(z, torch.full_like(z, inward))) * density, z))
    return total


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("mu, sigma", [(0.8, 1.0), (-1.3, 0.4)])
def test_closed_forms_match_quadrature(name, mu, sigma):
    assert expected_value(name, mu, sigma) == pytest.approx(_quadrature(name, mu, sigma), abs=QUADRATURE_TOL)
    h = 1e-4
    numeric = (_quadrature(name, mu + h, sigma) - _quadrature(name, mu - h, sigma)) / (2 * h)
    assert expected_value_gradient(name, mu, sigma) == pytest.approx(numeric, abs=1e-5)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("baseline", [False, True])
def test_the_score_function_is_unbiased_everywhere(name, baseline):
    mu, sigma = 0.6, 0.9
    g = score_function_gradients(objective(name), mu, sigma, _draws(20000, 7), baseline)
    se = float(g.std()) / math.sqrt(g.numel())
    assert abs(float(g.mean()) - expected_value_gradient(name, mu, sigma)) < UNBIASED_SE * se


@pytest.mark.parametrize("name", ["square", "bump"])
def test_the_reparameterized_estimate_is_unbiased_for_smooth_f_with_less_variance_for_the_square(name):
    mu, sigma = 0.6, 0.9
    eps = _draws(20000, 8)
    r = reparameterized_gradients(objective(name), mu, sigma, eps)
    se = float(r.std()) / math.sqrt(r.numel())
    assert abs(float(r.mean()) - expected_value_gradient(name, mu, sigma)) < UNBIASED_SE * se
    if name == "square":
        assert float(r.var()) < float(score_function_gradients(objective(name), mu, sigma, eps).var()) / 2


def test_the_reparameterized_estimate_of_a_step_is_zero_and_biased():
    r = reparameterized_gradients(objective("step"), 0.3, 1.0, _draws(1000, 2))
    assert float(r.abs().max()) == 0.0
    assert expected_value_gradient("step", 0.3, 1.0) > 0.3


def test_batch_mean_variance_is_the_variance_of_batch_means():
    alternating = torch.tensor([1.0, -1.0] * 8, dtype=torch.float64)
    v = batch_mean_variance(alternating, [1, 2, 4])
    torch.testing.assert_close(v, torch.tensor([16 / 15, 0.0, 0.0], dtype=torch.float64))
    x = _draws(4096, 3) * 2.0
    v = batch_mean_variance(x, [1, 16, 256])
    assert v[0] == pytest.approx(4.0, rel=0.08) and v[1] == pytest.approx(4.0 / 16, rel=0.2)
    with pytest.raises(ValueError, match="fewer than 2 batches of 16"):
        batch_mean_variance(x[:16], [16])


# -- soft argmax ------------------------------------------------------------------------------------

def naive_soft_argmax(x: np.ndarray, t: float, normalized: bool) -> np.ndarray:
    """(H, W) -> (x, y) by loops: softmax weights times pixel positions."""
    h, w = x.shape
    top = x.max()
    total, sx, sy = 0.0, 0.0, 0.0
    for i in range(h):
        for j in range(w):
            e = math.exp((x[i, j] - top) / t)
            px = -1 + 2 * j / (w - 1) if normalized else j
            py = -1 + 2 * i / (h - 1) if normalized else i
            total, sx, sy = total + e, sx + e * px, sy + e * py
    return np.array([sx / total, sy / total])


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("t", [0.05, 0.7])
def test_soft_argmax_equals_a_naive_loop(normalized, t):
    rng = np.random.default_rng(5)
    x = rng.random((2, 3, 7, 9))
    ours = soft_argmax2d(torch.from_numpy(x), t, normalized).numpy()
    for b in range(2):
        for n in range(3):
            np.testing.assert_allclose(ours[b, n], naive_soft_argmax(x[b, n], t, normalized), atol=NAIVE_TOL)


def test_spatial_softmax_sums_to_one_per_map():
    p = spatial_softmax2d(torch.rand(2, 3, 5, 6, dtype=torch.float64), 0.3)
    torch.testing.assert_close(p.sum((-2, -1)), torch.ones(2, 3, dtype=torch.float64))


def test_hard_argmax_is_x_then_y_on_a_non_square_map():
    x = torch.zeros(1, 2, 7, 11)
    x[0, 0, 5, 2] = 1.0
    x[0, 1, 1, 9] = 1.0
    torch.testing.assert_close(hard_argmax2d(x), torch.tensor([[[2.0, 5.0], [9.0, 1.0]]]))


def test_soft_argmax_tends_to_the_hard_argmax_as_the_temperature_falls():
    torch.manual_seed(3)
    x = torch.rand(1, 1, 13, 17, dtype=torch.float64)
    x[0, 0, 9, 4] = 1.05  # the maximum, 0.05 above any other score
    hard = hard_argmax2d(x)
    assert hard.tolist() == [[[4.0, 9.0]]]
    gaps = [float((soft_argmax2d(x, t) - hard).norm()) for t in (1.0, 0.1, 0.01, 1e-3)]
    assert gaps[0] > 1.0 and gaps[-1] < HARD_TOL
    assert gaps[2] < gaps[0]


def test_equals_kornia_spatial_soft_argmax2d():
    kornia = pytest.importorskip("kornia")
    torch.manual_seed(4)
    x = torch.rand(2, 3, 9, 12, dtype=torch.float64)
    t = 0.2
    ref = kornia.geometry.subpix.spatial_soft_argmax2d(x, torch.tensor(1 / t), normalized_coordinates=True)
    torch.testing.assert_close(soft_argmax2d(x, t, normalized_coordinates=True), ref, atol=PEER_TOL, rtol=0)


def test_soft_argmax_gradcheck_and_module():
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: soft_argmax2d(v, 0.3), (x,), eps=1e-6, atol=1e-7)
    torch.testing.assert_close(SoftArgmax2d(0.3, True)(x), soft_argmax2d(x, 0.3, True), atol=0, rtol=0)


# -- soft crop --------------------------------------------------------------------------------------

BOX = (3.3, 2.6, 12.7, 7.2)  # x0, y0, x1, y1: no pixel centre within 0.3 px of an edge, wider than tall


def naive_boxcar(h: int, w: int, box, k: float) -> np.ndarray:
    def sig(v):
        return 1 / (1 + math.exp(-v))
    x0, y0, x1, y1 = box
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = (sig(k * (j - x0)) - sig(k * (j - x1))) * (sig(k * (i - y0)) - sig(k * (i - y1)))
    return out


def test_boxcar_equals_its_formula_on_a_non_square_frame():
    ours = boxcar_mask(9, 15, torch.tensor(BOX, dtype=torch.float64), 0.8)
    np.testing.assert_allclose(ours.numpy(), naive_boxcar(9, 15, BOX, 0.8), atol=NAIVE_TOL)


def test_boxcar_tends_to_the_hard_crop_as_the_sharpness_grows():
    hard = hard_box_mask(9, 15, BOX, torch.zeros((), dtype=torch.float64))
    assert hard.sum() == 9 * 5 and hard[3, 4] == 1 and hard[2, 4] == 0 and hard[3, 3] == 0  # columns 4..12, rows 3..7
    errors = [float((boxcar_mask(9, 15, torch.tensor(BOX, dtype=torch.float64), k) - hard).abs().max())
              for k in (1.0, 10.0, 100.0)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < HARD_TOL


def per_copy_autograd(values: torch.Tensor, box, k: float) -> list[torch.Tensor]:
    """The edge gradients split by row and column by brute force: the mask built with one copy of
    each edge per row (left, right) or column (top, bottom), differentiated by autograd."""
    h, w = values.shape
    xs, ys = torch.arange(w, dtype=values.dtype), torch.arange(h, dtype=values.dtype)
    left, right = (torch.full((h, 1), v, dtype=values.dtype, requires_grad=True) for v in (box[0], box[2]))
    top, bottom = (torch.full((1, w), v, dtype=values.dtype, requires_grad=True) for v in (box[1], box[3]))
    m = ((torch.sigmoid(k * (xs[None] - left)) - torch.sigmoid(k * (xs[None] - right)))
         * (torch.sigmoid(k * (ys[:, None] - top)) - torch.sigmoid(k * (ys[:, None] - bottom))))
    grads = torch.autograd.grad((m * values).sum() / m.sum(), (left, top, right, bottom))
    return [g.reshape(-1) for g in grads]


def test_edge_gradients_are_the_per_copy_autograd_sum_to_the_edge_gradient_and_match_central_differences():
    torch.manual_seed(6)
    values = torch.rand(9, 15, dtype=torch.float64)
    box = torch.tensor(BOX, dtype=torch.float64, requires_grad=True)
    (full,) = torch.autograd.grad(soft_crop_mean(values, box, 0.9), box)
    mean, *parts = soft_crop_edge_gradients(values, BOX, 0.9)
    assert [p.shape[0] for p in parts] == [9, 15, 9, 15]
    for ours, brute in zip(parts, per_copy_autograd(values, BOX, 0.9)):
        torch.testing.assert_close(ours, brute, atol=NAIVE_TOL, rtol=0)
    torch.testing.assert_close(torch.stack([p.sum() for p in parts]), full, atol=NAIVE_TOL, rtol=0)
    assert float(mean) == pytest.approx(float(soft_crop_mean(values, torch.tensor(BOX, dtype=torch.float64), 0.9)))
    h = 1e-6
    for i in range(4):
        d = torch.zeros(4, dtype=torch.float64)
        d[i] = h
        numeric = (soft_crop_mean(values, box.detach() + d, 0.9) - soft_crop_mean(values, box.detach() - d, 0.9)) / (2 * h)
        assert float(parts[i].sum()) == pytest.approx(float(numeric), abs=1e-8)


def test_boxcar_gradcheck():
    box = torch.tensor(BOX, dtype=torch.float64, requires_grad=True)
    values = torch.rand(9, 15, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda b: boxcar_mask(9, 15, b, 0.7), (box,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda b: soft_crop_mean(values, b, 0.7), (box,), eps=1e-6, atol=1e-7)


# -- blurred delta ----------------------------------------------------------------------------------

def naive_lut(table: np.ndarray, phases: int, radius: int, u: float) -> float:
    """Linear between the table's entries, and down to 0 one entry past each end."""
    padded = np.concatenate([[0.0], table, [0.0]])
    pos = (u + radius) * phases + 1
    if pos < 0 or pos > len(padded) - 1:
        return 0.0
    i = min(int(math.floor(pos)), len(padded) - 2)
    f = pos - i
    return padded[i] * (1 - f) + padded[i + 1] * f


def test_the_table_holds_the_gaussian_at_its_nodes():
    table, radius = gaussian_lut(1.3, 4)
    assert radius == 5 and table.numel() == 2 * 5 * 4 + 1
    t = torch.arange(table.numel(), dtype=torch.float64) / 4 - radius
    torch.testing.assert_close(lut_kernel(table, 4, radius, t), torch.exp(-t * t / (2 * 1.69)) / (math.sqrt(2 * math.pi) * 1.3))


@pytest.mark.parametrize("phases", [1, 3, 8])
def test_blurred_delta_equals_a_naive_loop(phases):
    table, radius = gaussian_lut(0.9, phases)
    points = torch.tensor([[4.37, 2.81], [1.05, 5.5]], dtype=torch.float64)
    ours = blurred_delta(points, 8, 11, table, phases, radius).numpy()
    for n, (px, py) in enumerate(points.tolist()):
        for i in range(8):
            for j in range(11):
                expected = naive_lut(table.numpy(), phases, radius, j - px) * naive_lut(table.numpy(), phases, radius, i - py)
                assert ours[n, i, j] == pytest.approx(expected, abs=NAIVE_TOL)


def test_one_phase_is_a_bilinear_splat_then_the_sampled_kernel():
    table, radius = gaussian_lut(1.1, 1)
    px, py = 6.3, 4.75
    splat = torch.zeros(1, 1, 12, 15, dtype=torch.float64)
    fx, fy = px - 6, py - 4
    for (y, wy) in ((4, 1 - fy), (5, fy)):
        for (x, wx) in ((6, 1 - fx), (7, fx)):
            splat[0, 0, y, x] = wy * wx
    kernel = (table[:, None] * table[None, :])[None, None]  # the kernel sampled at whole pixels
    blurred = F.conv2d(splat, kernel, padding=radius)[0, 0]
    ours = blurred_delta(torch.tensor([[px, py]], dtype=torch.float64), 12, 15, table, 1, radius)[0]
    torch.testing.assert_close(ours, blurred, atol=NAIVE_TOL, rtol=0)


def test_more_phases_follow_the_continuous_gaussian_closer():
    offsets = torch.linspace(-3, 3, 601, dtype=torch.float64)
    gauss = torch.exp(-offsets**2 / 2) / math.sqrt(2 * math.pi)
    errors = []
    for phases in (1, 4, 32):
        table, radius = gaussian_lut(1.0, phases)
        errors.append(float((lut_kernel(table, phases, radius, offsets) - gauss).abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3


def test_blurred_delta_gradcheck_module_and_rounded_twin():
    table, radius = gaussian_lut(1.0, 8)
    pts = torch.tensor([[3.217, 4.561], [5.903, 2.338]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: blurred_delta(p, 9, 10, table, 8, radius), (pts,), eps=1e-7, atol=1e-6)
    module = BlurredDelta(9, 10, 1.0, 8).double()
    torch.testing.assert_close(module(pts), blurred_delta(pts, 9, 10, table, 8, radius), atol=0, rtol=0)
    hard = rounded_delta(pts.detach(), 9, 10)
    assert hard[0, 5, 3] == 1 and hard[1, 2, 6] == 1 and hard.sum() == 2


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(B, N, H, W\), got \(3, 4\)"):
        soft_argmax2d(torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\).*\(3,\)"):
        boxcar_mask(4, 4, torch.rand(3), 1.0)
    with pytest.raises(ValueError, match=r"\(N, 2\).*\(2, 3\)"):
        blurred_delta(torch.rand(2, 3), 4, 4, *gaussian_lut(1.0, 2)[:1], 2, 4)
    with pytest.raises(ValueError, match=r"\(17,\) for radius 4 and 2 phases, got \(5,\)"):
        lut_kernel(torch.rand(5), 2, 4, torch.rand(3))
    with pytest.raises(ValueError, match=r"eps must be \(n,\)"):
        reparameterized_gradients(objective("square"), 0.0, 1.0, torch.rand(2, 2))
