"""Gradient-weighted relevance (Chefer et al. 2021) against a naive float64 loop, its documented
row behaviour, the identity when gradients vanish, and plain rollout's rows summing to 1."""

import pytest
import torch

from backends.functional.attention import attention_rollout, rollout_row
from backends.functional.relevance import relevance_rollout, weighted_attention

NAIVE_TOL = 1e-10  # float64, same arithmetic up to summation order


def _random_layers(b=2, h=3, n=7, layers=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    att = [torch.softmax(torch.randn(b, h, n, n, generator=g, dtype=torch.float64) * 2, -1) for _ in range(layers)]
    grads = [torch.randn(b, h, n, n, generator=g, dtype=torch.float64) for _ in range(layers)]
    return att, grads


def naive_relevance(att, grads):
    """Nested loops: R = I; per layer A_bar[i, j] = mean_h max(0, g * a); R = R + A_bar R."""
    b, h, n, _ = att[0].shape
    out = torch.zeros(b, n, n, dtype=torch.float64)
    for bi in range(b):
        r = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
        for a, g in zip(att, grads):
            bar = [[sum(max(0.0, float(g[bi, k, i, j] * a[bi, k, i, j])) for k in range(h)) / h for j in range(n)]
                   for i in range(n)]
            r = [[r[i][j] + sum(bar[i][m] * r[m][j] for m in range(n)) for j in range(n)] for i in range(n)]
        out[bi] = torch.tensor(r, dtype=torch.float64)
    return out


def test_relevance_equals_the_naive_loop():
    att, grads = _random_layers()
    torch.testing.assert_close(relevance_rollout(att, grads), naive_relevance(att, grads), atol=NAIVE_TOL, rtol=NAIVE_TOL)


def test_layer_order_matters_first_layer_applied_first():
    """R = (I + A_L) ... (I + A_1): reversing the layers gives another matrix (the products do not commute)."""
    att, grads = _random_layers(b=1, layers=2, seed=3)
    forward = relevance_rollout(att, grads)[0]
    a1, a2 = (weighted_attention(a, g)[0] for a, g in zip(att, grads))
    eye = torch.eye(a1.shape[0], dtype=torch.float64)
    torch.testing.assert_close(forward, (eye + a2) @ (eye + a1), atol=NAIVE_TOL, rtol=NAIVE_TOL)
    assert not torch.allclose(forward, (eye + a1) @ (eye + a2))


def test_rows_are_non_negative_with_diagonal_at_least_one_and_grow_with_depth():
    att, grads = _random_layers(seed=1)
    previous = relevance_rollout(att[:1], grads[:1])
    assert (previous >= 0).all() and (torch.diagonal(previous, dim1=-2, dim2=-1) >= 1).all()
    for depth in range(2, len(att) + 1):
        r = relevance_rollout(att[:depth], grads[:depth])
        assert (r >= previous - 1e-12).all()  # each layer only adds non-negative relevance
        assert (r.sum(-1) > 1).any()  # not normalized: rows sum to more than 1
        previous = r


def test_zero_gradients_give_the_identity_and_negative_products_are_dropped():
    att, grads = _random_layers(seed=2)
    eye = torch.eye(att[0].shape[-1], dtype=torch.float64).expand(2, -1, -1)
    torch.testing.assert_close(relevance_rollout(att, [torch.zeros_like(g) for g in grads]), eye)
    torch.testing.assert_close(relevance_rollout(att, [-g.abs() for g in grads]), eye)  # gradient against the class


def test_mean_over_heads_of_positive_part():
    att, grads = _random_layers(b=1, h=2, n=4, layers=1, seed=4)
    expected = ((att[0] * grads[0]).clamp(min=0)).mean(1)
    torch.testing.assert_close(weighted_attention(att[0], grads[0]), expected)


def test_shape_errors_name_both_shapes():
    att, grads = _random_layers(layers=2)
    with pytest.raises(ValueError, match=r"\(2, 3, 7, 7\).*\(2, 3, 6, 7\)"):
        relevance_rollout(att, [grads[0], grads[1][:, :, :6]])
    with pytest.raises(ValueError, match="one gradient per attention layer"):
        relevance_rollout(att, grads[:1])


def test_plain_rollout_rows_sum_to_one_and_its_row_matches():
    g = torch.Generator().manual_seed(5)
    layers = [torch.softmax(torch.randn(9, 9, generator=g, dtype=torch.float64), -1) for _ in range(3)]
    for residual in (True, False):
        r = attention_rollout(layers, residual=residual)
        torch.testing.assert_close(r.sum(-1), torch.ones(9, dtype=torch.float64), atol=1e-12, rtol=0)
        assert (r >= 0).all()
        torch.testing.assert_close(rollout_row(layers, 4, residual=residual), r[4], atol=1e-12, rtol=1e-12)
