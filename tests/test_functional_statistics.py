"""Feature statistics cores: the covariance against a naive float64 loop (1e-12) and torch.cov,
the CORAL distance against its formula written out, CORAL alignment (the aligned covariance and
mean are the target's, aligning an image to itself is the identity, the transform is not its
transpose), the symmetric matrix powers, float64 gradcheck of the CORAL loss and the alignment,
the module twins, and shape errors that name the shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.functional.statistics import (
    CoralAlign,
    CoralLoss,
    coral_align,
    coral_distance,
    coral_loss,
    coral_transform,
    covariance,
    feature_mean,
    symmetric_power,
)

NAIVE_TOL = 1e-12  # float64, the same sums in another order
ALIGN_TOL = 1e-9  # float64 through two eigendecompositions
TORCH_TOL = 1e-5  # float32 against torch.cov


def naive_covariance(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (C, C): sum over pixels of (x_i - mean_i)(x_j - mean_j) / (n - 1), by loops."""
    c = x.shape[0]
    flat = x.reshape(c, -1)
    n = flat.shape[1]
    means = [sum(flat[i]) / n for i in range(c)]
    out = np.zeros((c, c))
    for i in range(c):
        for j in range(c):
            out[i, j] = sum((flat[i, p] - means[i]) * (flat[j, p] - means[j]) for p in range(n)) / (n - 1)
    return out


def naive_coral_distance(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[0]
    return sum((a[i, j] - b[i, j]) ** 2 for i in range(d) for j in range(d)) / (4 * d * d)


def _correlated(seed: int, c: int = 3, h: int = 9, w: int = 11, dtype=torch.float64) -> torch.Tensor:
    """(1, c, h, w) features with a non-symmetric mix, so channels co-vary unevenly."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=g, dtype=dtype) + 2 * torch.eye(c, dtype=dtype)
    base = torch.rand(1, c, h, w, generator=g, dtype=dtype)
    return torch.einsum("ij,njhw->nihw", mix, base) + torch.randn(c, generator=g, dtype=dtype).view(1, c, 1, 1)


def test_covariance_equals_the_naive_loop_and_torch_cov():
    x = _correlated(0, c=4, h=5, w=7)
    np.testing.assert_allclose(covariance(x)[0].numpy(), naive_covariance(x[0].numpy()), atol=NAIVE_TOL)
    x32 = torch.rand(2, 5, 13, 6)
    for b in range(2):
        torch.testing.assert_close(covariance(x32)[b], torch.cov(x32[b].flatten(1)), atol=TORCH_TOL, rtol=TORCH_TOL)
    torch.testing.assert_close(feature_mean(x32), x32.mean((2, 3)))


def test_coral_distance_equals_the_formula_written_out():
    a, b = covariance(_correlated(1))[0], covariance(_correlated(2))[0]
    assert float(coral_distance(a, b)) == pytest.approx(naive_coral_distance(a.numpy(), b.numpy()), abs=NAIVE_TOL)
    assert float(coral_distance(a, a)) == 0.0
    x, y = _correlated(3, c=5), _correlated(4, c=5, h=6, w=4)
    expected = naive_coral_distance(naive_covariance(x[0].numpy()), naive_covariance(y[0].numpy()))
    assert float(coral_loss(x, y)) == pytest.approx(expected, rel=1e-10)


def test_after_alignment_the_covariance_and_mean_are_the_targets():
    source, target = _correlated(5, h=12, w=10), _correlated(6, h=7, w=9)
    aligned = coral_align(source, target)
    torch.testing.assert_close(covariance(aligned), covariance(target), atol=ALIGN_TOL, rtol=0)
    torch.testing.assert_close(feature_mean(aligned), feature_mean(target), atol=ALIGN_TOL, rtol=0)
    assert float(coral_loss(aligned, target)) < 1e-18
    assert float(coral_loss(source, target)) > 1e-3  # the two started apart


def test_aligning_an_image_to_itself_is_the_identity():
    x = _correlated(7, c=4)
    torch.testing.assert_close(coral_align(x, x), x, atol=ALIGN_TOL, rtol=0)
    torch.testing.assert_close(coral_transform(covariance(x), covariance(x)), torch.eye(4, dtype=x.dtype)[None],
                               atol=ALIGN_TOL, rtol=0)


def test_the_transform_recolours_column_vectors_and_is_not_its_transpose():
    """A = C_t^(1/2) C_s^(-1/2) applied to each pixel's column vector: A C_s A^T = C_t, A itself
    not symmetric (so applying A^T, the row-vector slip, would fail the covariance check)."""
    c_s, c_t = covariance(_correlated(8))[0], covariance(_correlated(9))[0]
    a = coral_transform(c_s, c_t)
    torch.testing.assert_close(a @ c_s @ a.T, c_t, atol=ALIGN_TOL, rtol=0)
    assert float((a - a.T).abs().max()) > 1e-3
    assert float((a.T @ c_s @ a - c_t).abs().max()) > 1e-4


def test_symmetric_powers():
    c = covariance(_correlated(10, c=5))[0]
    root, inv_root = symmetric_power(c, 0.5), symmetric_power(c, -0.5)
    torch.testing.assert_close(root @ root, c, atol=ALIGN_TOL, rtol=0)
    torch.testing.assert_close(inv_root @ c @ inv_root, torch.eye(5, dtype=c.dtype), atol=ALIGN_TOL, rtol=0)
    eps = 0.3
    torch.testing.assert_close(symmetric_power(c, -1.0, eps), torch.linalg.inv(c + eps * torch.eye(5, dtype=c.dtype)),
                               atol=1e-8, rtol=0)


def test_a_flat_channel_is_left_out_of_the_whitening_not_blown_up():
    """A grey image: R = G = B, a rank-1 covariance. The pseudo-inverse root keeps every value finite
    and the aligned image still takes the target's mean."""
    grey = torch.rand(1, 1, 8, 8, dtype=torch.float64).expand(1, 3, 8, 8)
    target = _correlated(11, h=8, w=8)
    aligned = coral_align(grey, target)
    assert torch.isfinite(aligned).all()
    torch.testing.assert_close(feature_mean(aligned), feature_mean(target), atol=ALIGN_TOL, rtol=0)


def test_gradcheck_coral_loss_and_alignment():
    x = _correlated(12, h=3, w=4).requires_grad_(True)
    y = _correlated(13, h=4, w=3).requires_grad_(True)
    assert torch.autograd.gradcheck(coral_loss, (x, y))
    assert torch.autograd.gradcheck(lambda a, b: coral_align(a, b, eps=0.01), (x, y))


def test_modules_equal_the_functions():
    x, y = _correlated(14), _correlated(15)
    assert float(CoralLoss()(x, y)) == float(coral_loss(x, y))
    torch.testing.assert_close(CoralAlign(eps=0.05)(x, y), coral_align(x, y, eps=0.05))


def test_regularization_moves_the_aligned_covariance_only_slightly():
    source, target = _correlated(16), _correlated(17)
    exact = coral_align(source, target)
    regularized = coral_align(source, target, eps=1e-4)
    gap = float(coral_loss(regularized, target))
    assert 0 < gap < 1e-6 and float((regularized - exact).abs().max()) < 1e-2


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\).*\(1, 2, 4, 4\)"):
        coral_align(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(2, 2\)"):
        coral_distance(torch.eye(3), torch.eye(2))
    with pytest.raises(ValueError, match=r"\(1, 3, 1, 1\)"):
        covariance(torch.rand(1, 3, 1, 1))
