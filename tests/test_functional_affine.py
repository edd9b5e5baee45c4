"""Affine cores: agreement with F.affine_grid + F.grid_sample (1e-6), the separable display grid
(1e-6), pixel maps round-tripping through theta (1e-12, float64), theta written out by hand,
the inverse theta, float64 gradcheck of the sampler, and the module twin."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backends.functional.affine import (
    AffineTransformer,
    affine_points,
    affine_sampling_grid,
    affine_transform,
    compose_affine,
    decompose_affine,
    invert_theta,
    sampling_map_from_theta,
    spatial_transform,
    theta_from_sampling_map,
)
from backends.functional.coords import frame_centre, grid_jacobian_determinant, points_to_normalized, points_to_pixels

CORE_TOL = 1e-6  # float32, the same torch calls in another order
ROUND_TRIP_TOL = 1e-12  # float64 matrix products
THETA = torch.tensor([[0.9, -0.35, 0.12], [0.3, 1.1, -0.05]], dtype=torch.float64)  # not symmetric


def _texture(h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_core_agrees_with_affine_grid_and_grid_sample():
    image = _texture()
    theta = THETA[None].float()
    for ac in (False, True):
        for mode in ("bilinear", "nearest", "bicubic"):
            for pad in ("zeros", "border", "reflection"):
                ref = F.grid_sample(image, F.affine_grid(theta, list(image.shape), align_corners=ac), mode=mode,
                                    padding_mode=pad, align_corners=ac)
                assert torch.allclose(affine_transform(image, theta, mode, pad, ac), ref, atol=CORE_TOL)
    with pytest.raises(ValueError, match="padding"):
        spatial_transform(image, torch.zeros(1, 4, 4, 2), "bilinear", "wrap")
    with pytest.raises(ValueError, match=r"\(N, 2, 3\) with N = 1, got \(2, 3\)"):
        affine_transform(image, THETA)


@pytest.mark.parametrize("align_corners", [False, True])
def test_the_display_grid_equals_affine_grid(align_corners):
    ref = F.affine_grid(THETA[None].float(), [1, 1, 37, 53], align_corners=align_corners)
    ours = affine_sampling_grid(THETA, 37, 53, align_corners, torch.empty(0))
    torch.testing.assert_close(ours, ref, atol=CORE_TOL, rtol=0)


def test_pixel_maps_round_trip_through_theta():
    content = compose_affine(20.0, 1.15, 0.1, 5.0, -3.0, frame_centre(60, 40))
    parts = decompose_affine(content, frame_centre(60, 40))
    assert parts == pytest.approx({"angle": 20.0, "scale": 1.15, "shear": 0.1, "tx": 5.0, "ty": -3.0}, abs=1e-9)
    for ac in (False, True):
        theta = theta_from_sampling_map(content, (60, 40), (60, 40), ac)
        assert torch.allclose(sampling_map_from_theta(theta, (60, 40), (60, 40), ac), content, atol=ROUND_TRIP_TOL)


def test_compose_affine_written_out_by_hand():
    """Rotation is counter-clockwise on screen (y down): +x turns towards -y."""
    m = compose_affine(90.0, 2.0, 0.0, 1.0, -1.0, centre=(10.0, 4.0))
    moved = affine_points(m, torch.tensor([[11.0, 4.0], [10.0, 5.0]], dtype=torch.float64))
    torch.testing.assert_close(moved, torch.tensor([[11.0, 1.0], [13.0, 3.0]], dtype=torch.float64), atol=1e-12, rtol=0)
    sheared = compose_affine(shear=0.5, centre=(0.0, 2.0))
    torch.testing.assert_close(affine_points(sheared, torch.tensor([[3.0, 6.0]], dtype=torch.float64)),
                               torch.tensor([[5.0, 6.0]], dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
def test_theta_maps_output_pixels_to_input_pixels_as_written_out(align_corners):
    """A pixel map M, non-square frames of different sizes: theta's grid at output pixel p,
    taken back to input pixels, is M(p)."""
    m = torch.tensor([[1.2, 0.3, -4.0], [-0.2, 0.7, 3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out_size, in_size = (23, 17), (31, 19)
    theta = theta_from_sampling_map(m, in_size, out_size, align_corners)
    grid = F.affine_grid(theta[None], [1, 1, out_size[1], out_size[0]], align_corners=align_corners)[0]
    ys, xs = torch.meshgrid(torch.arange(17.0, dtype=torch.float64), torch.arange(23.0, dtype=torch.float64), indexing="ij")
    expected = torch.stack([1.2 * xs + 0.3 * ys - 4.0, -0.2 * xs + 0.7 * ys + 3.0], -1)
    torch.testing.assert_close(points_to_pixels(grid, *in_size, align_corners), expected, atol=1e-9, rtol=0)
    back = points_to_normalized(expected, *in_size, align_corners)
    torch.testing.assert_close(back, grid, atol=1e-12, rtol=0)


def test_invert_theta_undoes_theta():
    points = torch.rand(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(affine_points(invert_theta(THETA), affine_points(THETA, points)), points, atol=1e-12, rtol=0)


def test_gradcheck_input_and_theta():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    theta = (THETA * 0.9 + 0.013)[None].clone().requires_grad_(True)  # sample points off the pixel lattice's kinks
    assert torch.autograd.gradcheck(lambda i, t: affine_transform(i, t, "bilinear", "zeros", False, (4, 7)),
                                    (image, theta), eps=1e-6, atol=1e-6)


def test_module_equals_functional():
    image = _texture().double()
    theta = THETA[None]
    mod = AffineTransformer(size=(20, 24), mode="bicubic", padding_mode="border", align_corners=True)
    out = mod(image, theta)
    assert out.shape == (1, 3, 20, 24)
    torch.testing.assert_close(out, affine_transform(image, theta, "bicubic", "border", True, (20, 24)), atol=0, rtol=0)


def test_decompose_recovers_negative_angles_and_shear():
    m = compose_affine(-35.0, 0.8, -0.3, -2.0, 7.0, centre=(5.0, 9.0))
    found = decompose_affine(m, (5.0, 9.0))
    assert found == pytest.approx({"angle": -35.0, "scale": 0.8, "shear": -0.3, "tx": -2.0, "ty": 7.0}, abs=1e-9)
    assert math.isclose(float(torch.linalg.det(m[:2, :2])), 0.64, abs_tol=1e-12)


def test_jacobian_determinant_of_a_sampling_map_written_out_by_hand():
    """x_in = c + a r^2, y_in = r + b c over (row r, column c) of a non-square grid: det =
    1 - 2 a b r, exact in the interior for central differences (a quadratic); a transposed
    formula would vary along the columns instead. An affine map's det is its matrix's."""
    a, b = 0.01, 0.7
    r, c = torch.meshgrid(torch.arange(7, dtype=torch.float64), torch.arange(11, dtype=torch.float64), indexing="ij")
    det = grid_jacobian_determinant(torch.stack([c + a * r**2, r + b * c], -1)[None])[0]
    torch.testing.assert_close(det[1:-1, 1:-1], (1 - 2 * a * b * r)[1:-1, 1:-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(det[:, 0], det[:, 5], rtol=0, atol=1e-12)  # constant along a row
    A = THETA[:, :2]
    affine = torch.stack([A[0, 0] * c + A[0, 1] * r, A[1, 0] * c + A[1, 1] * r], -1)[None]
    torch.testing.assert_close(grid_jacobian_determinant(affine), torch.full((1, 7, 11), float(torch.linalg.det(A)),
                                                                             dtype=torch.float64), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(1, 1, 5, 2\)"):
        grid_jacobian_determinant(torch.zeros(1, 1, 5, 2))
