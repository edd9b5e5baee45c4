"""Thin-plate spline cores: interpolation at the controls (1e-9, float64), exact on affine maps,
the identity grid (1e-5), a float64 gradcheck of the grid in the targets, the stepped grid close
to the full one, and the module twin."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backends.functional.tps import TPSGridGen, control_lattice, tps_apply, tps_fit, tps_grid

EXACT_TOL = 1e-9  # float64 solve of a small system
IDENTITY_TOL = 1e-5  # float32 grid against affine_grid
STEP_TOL_PX = 0.1  # a mild bend (5% jitter) evaluated every 4 px and linear between, at 70 x 50 px


def _jittered(n: int, amount: float, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    controls = control_lattice(n, dtype)
    g = torch.Generator().manual_seed(seed)
    return controls, controls + amount * torch.randn(controls.shape, generator=g, dtype=dtype)


def test_the_spline_passes_through_its_targets():
    controls, targets = _jittered(4, 0.1)
    coeffs = tps_fit(controls, targets)
    torch.testing.assert_close(tps_apply(coeffs, controls, controls), targets, atol=EXACT_TOL, rtol=0)


def test_an_affine_map_is_reproduced_exactly_between_the_controls():
    controls = control_lattice(3, torch.float64)
    a = torch.tensor([[1.1, 0.25], [-0.3, 0.8]], dtype=torch.float64)
    b = torch.tensor([0.05, -0.1], dtype=torch.float64)
    coeffs = tps_fit(controls, controls @ a.T + b)
    points = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.testing.assert_close(tps_apply(coeffs, controls, points), points @ a.T + b, atol=EXACT_TOL, rtol=0)
    assert float(coeffs[:9].abs().max()) < EXACT_TOL  # no bending


@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_with_controls_in_place_is_the_identity_grid(align_corners):
    controls = control_lattice(4)
    for step in (1, 4):
        grid = tps_grid(controls, controls.clone(), (23, 31), align_corners, step)
        identity = F.affine_grid(torch.eye(2, 3)[None], [1, 1, 23, 31], align_corners=align_corners)
        assert torch.allclose(grid, identity, atol=IDENTITY_TOL)


def test_the_grid_reads_the_spline_at_each_output_pixel():
    """Non-square: grid[y, x] is f at the normalized centre of pixel (x, y), not of (y, x)."""
    controls, targets = _jittered(3, 0.08, seed=1)
    h, w = 9, 14
    grid = tps_grid(controls, targets, (h, w), align_corners=False)[0]
    coeffs = tps_fit(controls, targets)
    for x, y in ((0, 0), (13, 2), (5, 8)):
        point = torch.tensor([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dtype=torch.float64)
        torch.testing.assert_close(grid[y, x], tps_apply(coeffs, controls, point), atol=EXACT_TOL, rtol=0)


def test_the_stepped_grid_is_close_to_the_full_one():
    controls, targets = _jittered(3, 0.05, seed=3, dtype=torch.float32)
    full = tps_grid(controls, targets, (50, 70), False, step=1)
    stepped = tps_grid(controls, targets, (50, 70), False, step=4)
    in_pixels = (full - stepped) * torch.tensor([70 / 2, 50 / 2])
    assert float(in_pixels.abs().max()) < STEP_TOL_PX


@pytest.mark.parametrize("step", [1, 2])
def test_gradcheck_the_grid_in_the_targets(step):
    controls, targets = _jittered(3, 0.1, seed=4)
    targets.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: tps_grid(controls, t, (5, 6), False, step), (targets,), eps=1e-6, atol=1e-6)


def test_gradcheck_fit_and_apply_in_sources_and_targets():
    controls, targets = _jittered(3, 0.1, seed=5)
    sources = (controls + 0.02).requires_grad_(True)
    targets.requires_grad_(True)
    points = torch.tensor([[0.31, -0.42], [-0.77, 0.15]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s, t: tps_apply(tps_fit(s, t), s, points), (sources, targets), eps=1e-6, atol=1e-6)


def test_module_equals_functional():
    controls, targets = _jittered(4, 0.05, seed=6, dtype=torch.float32)
    gen = TPSGridGen(controls, (17, 25), align_corners=True, step=2)
    torch.testing.assert_close(gen(targets), tps_grid(controls, targets, (17, 25), True, 2), atol=0, rtol=0)
    assert [name for name, _ in gen.named_buffers()] == ["controls"]


def test_shape_errors_print_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 2\) and \(3, 2\)"):
        tps_fit(torch.rand(4, 2), torch.rand(3, 2))
