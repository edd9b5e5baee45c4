"""Efficient attention cores: full attention against F.scaled_dot_product_attention (1e-5 in
float32) and a naive float64 loop (1e-10); linear attention against its quadratic form
(phi(Q) phi(K)^T, rows normalized) V and a naive loop; window attention against a naive masked
loop on a grid the windows do not divide, and equal to full attention when one window covers the
grid; channel (cross-covariance) attention against a naive loop; float64 gradcheck of each; the
weights rows; the cost formulas; the module twin; and shape errors that name the shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.efficient_attention import (
    METHODS,
    EfficientSelfAttention,
    channel_attention,
    channel_token_shares,
    feature_map,
    full_attention,
    full_weights_row,
    linear_attention,
    linear_weights,
    multiply_adds,
    weight_bytes,
    window_attention,
    window_members,
    window_weights_row,
)

NAIVE_TOL = 1e-10  # float64, the same sums in another order
TORCH_TOL = 1e-5  # float32 against torch's own kernel


def _qkv(seed: int, b: int = 2, h: int = 2, n: int = 15, d: int = 4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3))


def naive_softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed=None) -> np.ndarray:
    """One head (N, d) by loops; ``allowed(i, j)`` limits the keys of query i."""
    n, d = q.shape
    out = np.zeros((n, v.shape[1]))
    for i in range(n):
        keys = [j for j in range(n) if allowed is None or allowed(i, j)]
        logits = [float(q[i] @ k[j]) / math.sqrt(d) for j in keys]
        top = max(logits)
        e = [math.exp(x - top) for x in logits]
        for j, w in zip(keys, e):
            out[i] += w / sum(e) * v[j]
    return out


def naive_linear_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    def phi(x):
        return np.where(x > 0, x + 1, np.exp(x))

    n = q.shape[0]
    out = np.zeros((n, v.shape[1]))
    for i in range(n):
        s = [float(phi(q[i]) @ phi(k[j])) for j in range(n)]
        for j in range(n):
            out[i] += s[j] / sum(s) * v[j]
    return out


def naive_channel_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, tau: float) -> np.ndarray:
    n, d = q.shape
    qn, kn = q / np.linalg.norm(q, axis=0), k / np.linalg.norm(k, axis=0)
    out = np.zeros((n, d))
    for c in range(d):
        logits = [sum(qn[t, c] * kn[t, c2] for t in range(n)) / tau for c2 in range(d)]
        e = [math.exp(x - max(logits)) for x in logits]
        for t in range(n):
            out[t, c] = sum(e[c2] / sum(e) * v[t, c2] for c2 in range(d))
    return out


def test_full_attention_equals_sdpa_and_a_naive_loop():
    q, k, v = _qkv(0, dtype=torch.float32)
    out, weights = full_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=TORCH_TOL, rtol=TORCH_TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 15))
    q, k, v = _qkv(1)
    np.testing.assert_allclose(full_attention(q, k, v)[0][1, 0].numpy(),
                               naive_softmax_attention(q[1, 0].numpy(), k[1, 0].numpy(), v[1, 0].numpy()), atol=NAIVE_TOL)
    torch.testing.assert_close(full_weights_row(q, k, 6), full_attention(q, k, v)[1][..., 6, :])


def test_linear_attention_equals_its_quadratic_form():
    """phi(Q)(phi(K)^T V) / normalizer == (phi(Q) phi(K)^T, rows normalized) V."""
    q, k, v = _qkv(2)
    for kind in ("elu+1", "relu"):
        fq, fk = feature_map(q, kind), feature_map(k, kind)
        a = fq @ fk.transpose(-1, -2)
        normalized = a / a.sum(-1, keepdim=True).clamp_min(1e-6)  # relu: a query with no positive dim reads nothing
        torch.testing.assert_close(linear_attention(q, k, v, kind), normalized @ v, atol=NAIVE_TOL, rtol=0)
        torch.testing.assert_close(linear_weights(q, k, kind), normalized, atol=NAIVE_TOL, rtol=0)
        torch.testing.assert_close(linear_weights(q, k, kind, index=4), linear_weights(q, k, kind)[..., 4, :])
    np.testing.assert_allclose(linear_attention(q, k, v)[0, 1].numpy(),
                               naive_linear_attention(q[0, 1].numpy(), k[0, 1].numpy(), v[0, 1].numpy()), atol=NAIVE_TOL)


@pytest.mark.parametrize("rows, cols, window", [(5, 7, 3), (4, 6, 2), (6, 4, 4), (3, 5, 1)])
def test_window_attention_equals_a_naive_masked_loop(rows, cols, window):
    q, k, v = _qkv(3, n=rows * cols)

    def same_window(i, j):
        return (i // cols) // window == (j // cols) // window and (i % cols) // window == (j % cols) // window

    out = window_attention(q, k, v, rows, cols, window)
    for b, h in ((0, 0), (1, 1)):
        np.testing.assert_allclose(out[b, h].numpy(), naive_softmax_attention(q[b, h].numpy(), k[b, h].numpy(),
                                                                              v[b, h].numpy(), same_window), atol=NAIVE_TOL)
    row = window_weights_row(q, k, rows, cols, window, rows * cols - 2)
    torch.testing.assert_close((row.unsqueeze(-2) @ v)[..., 0, :], out[..., rows * cols - 2, :])
    members = set(window_members(rows * cols - 2, rows, cols, window).tolist())
    assert all(same_window(rows * cols - 2, j) == (j in members) for j in range(rows * cols))


@pytest.mark.parametrize("rows, cols, window", [(5, 7, 7), (5, 7, 12), (4, 4, 4)])
def test_a_window_covering_every_token_is_full_attention(rows, cols, window):
    q, k, v = _qkv(4, n=rows * cols)
    torch.testing.assert_close(window_attention(q, k, v, rows, cols, window), full_attention(q, k, v)[0],
                               atol=NAIVE_TOL, rtol=0)


def test_channel_attention_equals_a_naive_loop():
    q, k, v = _qkv(5, n=9, d=5)
    out, weights = channel_attention(q, k, v, 0.7)
    np.testing.assert_allclose(out[1, 0].numpy(), naive_channel_attention(q[1, 0].numpy(), k[1, 0].numpy(),
                                                                          v[1, 0].numpy(), 0.7), atol=NAIVE_TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 5, dtype=torch.float64))
    shares = channel_token_shares(q, k)
    qn, kn = F.normalize(q, dim=-2), F.normalize(k, dim=-2)
    s = qn.norm(dim=-1) * kn.norm(dim=-1)
    torch.testing.assert_close(shares, s / s.sum(-1, keepdim=True))


def test_gradcheck_each_method():
    q, k, v = (t.requires_grad_(True) for t in _qkv(6, b=1, h=1, n=6, d=3))
    assert torch.autograd.gradcheck(lambda a, b, c: full_attention(a, b, c)[0], (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: linear_attention(a, b, c), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: window_attention(a, b, c, 2, 3, 2), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: channel_attention(a, b, c, 0.5)[0], (q, k, v))


def test_cost_formulas():
    assert weight_bytes("full", 1000, 32) == 4_000_000
    assert weight_bytes("window", 1000, 32, window=8) == 1000 * 64 * 4
    assert weight_bytes("window", 10, 32, window=8) == 10 * 10 * 4  # a window never holds more than N
    assert weight_bytes("linear", 1000, 32) == (32 * 32 + 1000 * 32) * 4
    assert weight_bytes("channel", 1000, 32) == 32 * 32 * 4
    assert multiply_adds("full", 100, 8) == 2 * 100 * 100 * 8
    assert multiply_adds("linear", 100, 8) == multiply_adds("channel", 100, 8) == 2 * 100 * 64
    assert multiply_adds("window", 100, 8, 4) == 2 * 100 * 16 * 8


@pytest.mark.parametrize("method", METHODS)
def test_module_equals_the_functions(method):
    torch.manual_seed(7)
    m = EfficientSelfAttention(8, num_heads=2, method=method, window=2, temperature=0.5)
    x = torch.randn(1, 12, 8)
    q, k, v = (t(x).view(1, 12, 2, 4).transpose(1, 2) for t in (m.q_proj, m.k_proj, m.v_proj))
    core = {"full": lambda: full_attention(q, k, v)[0], "linear": lambda: linear_attention(q, k, v),
            "window": lambda: window_attention(q, k, v, 3, 4, 2), "channel": lambda: channel_attention(q, k, v, 0.5)[0]}
    expected = m.out_proj(core[method]().transpose(1, 2).reshape(1, 12, 8))
    torch.testing.assert_close(m(x, 3, 4), expected)


def test_shape_errors_name_the_shapes():
    q = torch.zeros(1, 1, 6, 4)
    with pytest.raises(ValueError, match=r"q \(1, 1, 6, 4\), k \(1, 1, 5, 4\)"):
        linear_attention(q, torch.zeros(1, 1, 5, 4), q)
    with pytest.raises(ValueError, match="6 tokens; a 2 x 2 grid has 4"):
        window_attention(q, q, q, 2, 2, 2)
    with pytest.raises(ValueError, match=r"v \(1, 1, 6, 3\)"):
        channel_attention(q, q, torch.zeros(1, 1, 6, 3))
