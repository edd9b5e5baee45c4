"""The attention core: a naive float64 loop, torch.nn.MultiheadAttention and
F.scaled_dot_product_attention, gradcheck, the module twin, the ``used_dims`` shortcut, entropy
and rollout against their definitions, rotary and sinusoidal position embeddings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.attention import (
    POSITION_KINDS,
    MultiheadSelfAttention,
    apply_rotary,
    attention_entropy,
    attention_logits,
    attention_rollout,
    attention_weights,
    entropy_from_logits,
    head_outputs,
    multi_head_attention,
    position_embedding,
    rollout_row,
    rotary_angles,
)

NAIVE_TOL = dict(atol=1e-10, rtol=1e-10)  # float64, the same arithmetic up to summation order
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5),  # float32: two implementations' rounding
       torch.float64: NAIVE_TOL}


def naive_attention(x, w_q, w_k, w_v, w_o, heads, b_q=None, b_k=None, b_v=None, b_o=None, scale=None):
    """Multi-head self-attention written out token by token in float64: (B, N, D_out), (B, heads, N, N)."""
    b_n, n, _ = x.shape
    e, e_v = w_q.shape[0], w_v.shape[0]
    d, d_v = e // heads, e_v // heads
    s = scale if scale is not None else 1 / math.sqrt(d)
    zero = lambda m: torch.zeros(m, dtype=torch.float64)  # noqa: E731
    b_q, b_k, b_v = (t if t is not None else zero(m) for t, m in ((b_q, e), (b_k, e), (b_v, e_v)))
    out = torch.zeros(b_n, n, w_o.shape[0], dtype=torch.float64)
    weights = torch.zeros(b_n, heads, n, n, dtype=torch.float64)
    for b in range(b_n):
        q = [w_q @ x[b, i] + b_q for i in range(n)]
        k = [w_k @ x[b, i] + b_k for i in range(n)]
        v = [w_v @ x[b, i] + b_v for i in range(n)]
        for i in range(n):
            concat = torch.zeros(e_v, dtype=torch.float64)
            for h in range(heads):
                logits = [s * float(q[i][h * d:(h + 1) * d] @ k[j][h * d:(h + 1) * d]) for j in range(n)]
                top = max(logits)
                exps = [math.exp(lg - top) for lg in logits]
                for j in range(n):
                    weights[b, h, i, j] = exps[j] / sum(exps)
                    concat[h * d_v:(h + 1) * d_v] += weights[b, h, i, j] * v[j][h * d_v:(h + 1) * d_v]
            out[b, i] = w_o @ concat + (b_o if b_o is not None else 0.0)
    return out, weights


def random_projections(d_in: int, e: int, e_v: int, d_out: int, seed: int, dtype=torch.float64, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    ws = (r(e, d_in), r(e, d_in), r(e_v, d_in), r(d_out, e_v))
    bs = (r(e), r(e), r(e_v), r(d_out)) if bias else (None,) * 4
    return ws, bs


def torch_mha(e: int, heads: int, dtype: torch.dtype, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(e, heads, batch_first=True, dtype=dtype)
    with torch.no_grad():  # non-zero biases, so they are checked too
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha.eval()


def mha_tensors(mha: nn.MultiheadAttention) -> tuple[torch.Tensor, ...]:
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    return w_q, w_k, w_v, mha.out_proj.weight, b_q, b_k, b_v, mha.out_proj.bias


# -- the core against its definition and torch ----------------------------------------------------
@pytest.mark.parametrize("e, e_v, heads", [(12, 12, 3), (8, 6, 2), (5, 7, 1)])
def test_equals_the_naive_loop_in_float64(e, e_v, heads):
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    (w_q, w_k, w_v, w_o), (b_q, b_k, b_v, b_o) = random_projections(5, e, e_v, 4, seed=e + e_v)
    ref_out, ref_w = naive_attention(x, w_q, w_k, w_v, w_o, heads, b_q, b_k, b_v, b_o)
    out, w = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, b_q, b_k, b_v, b_o)
    torch.testing.assert_close(out, ref_out, **NAIVE_TOL)
    torch.testing.assert_close(w, ref_w, **NAIVE_TOL)
    sdpa_out, _ = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, b_q, b_k, b_v, b_o, need_weights=False)
    torch.testing.assert_close(sdpa_out, ref_out, **NAIVE_TOL)
    row_out, row = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, b_q, b_k, b_v, b_o, query_index=4)
    torch.testing.assert_close(row_out, ref_out, **NAIVE_TOL)
    torch.testing.assert_close(row, ref_w[:, :, 4], **NAIVE_TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("e, heads, n", [(32, 4, 17), (24, 3, 5), (8, 1, 9)])
def test_equals_nn_multihead_attention(dtype, e, heads, n):
    mha = torch_mha(e, heads, dtype)
    x = torch.randn(2, n, e, dtype=dtype)
    with torch.no_grad():
        ref_out, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
        out, w = multi_head_attention(x, *mha_tensors(mha)[:4], heads, *mha_tensors(mha)[4:])
        sdpa_out, none = multi_head_attention(x, *mha_tensors(mha)[:4], heads, *mha_tensors(mha)[4:], need_weights=False)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(w, ref_w, **TOL[dtype])
    torch.testing.assert_close(sdpa_out, ref_out, **TOL[dtype])
    assert none is None


def test_module_equals_functional_and_nn_multihead_attention():
    mha = torch_mha(16, 4, torch.float64, seed=3)
    ours = MultiheadSelfAttention(16, 4, dtype=torch.float64)
    w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o = mha_tensors(mha)
    with torch.no_grad():
        for proj, w, b in ((ours.q_proj, w_q, b_q), (ours.k_proj, w_k, b_k), (ours.v_proj, w_v, b_v),
                           (ours.out_proj, w_o, b_o)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        x = torch.randn(3, 10, 16, dtype=torch.float64)
        out, w = ours(x)
        ref_out, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
        f_out, f_w = multi_head_attention(x, w_q, w_k, w_v, w_o, 4, b_q, b_k, b_v, b_o)
    torch.testing.assert_close(out, ref_out, **NAIVE_TOL)
    torch.testing.assert_close(w, ref_w, **NAIVE_TOL)
    assert torch.equal(out, f_out) and torch.equal(w, f_w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_scaled_dot_product_attention(dtype):
    torch.manual_seed(1)
    b, n, d_in, heads, d = 2, 11, 10, 2, 6
    x = torch.randn(b, n, d_in, dtype=dtype)
    w_q, w_k, w_v = (torch.randn(heads * d, d_in, dtype=dtype) for _ in range(3))
    w_o = torch.eye(heads * d, dtype=dtype)
    split = lambda t: t.view(b, n, heads, d).transpose(1, 2)  # noqa: E731
    q, k, v = split(x @ w_q.T), split(x @ w_k.T), split(x @ w_v.T)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    for need in (True, False):
        out, _ = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, scale=0.3, need_weights=need)
        torch.testing.assert_close(out, ref.transpose(1, 2).reshape(b, n, -1), **TOL[dtype])
        heads_out, _ = head_outputs(q, k, v, scale=0.3, need_weights=need)
        torch.testing.assert_close(heads_out, ref, **TOL[dtype])


def test_query_row_and_weights_without_output_match_the_full_matrix():
    torch.manual_seed(2)
    x = torch.randn(1, 40, 16)
    ws = [torch.randn(16, 16) for _ in range(4)]
    _, w = multi_head_attention(x, *ws, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4, 40))
    torch.testing.assert_close(attention_weights(x, ws[0], ws[1], 4), w)
    torch.testing.assert_close(attention_weights(x, ws[0], ws[1], 4, 7), w[:, :, 7], atol=1e-6, rtol=1e-6)
    angles = rotary_angles(5, 8, 2)
    _, w_rot = multi_head_attention(x, *ws, 4, rotary=angles)
    torch.testing.assert_close(attention_weights(x, ws[0], ws[1], 4, 7, rotary=angles), w_rot[:, :, 7],
                               atol=1e-6, rtol=1e-6)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"x \(4, 8\)"):
        multi_head_attention(torch.randn(4, 8), *[torch.randn(8, 8)] * 4, 2)
    with pytest.raises(ValueError, match="num_heads = 3"):
        multi_head_attention(torch.randn(1, 4, 8), *[torch.randn(8, 8)] * 4, 3)
    with pytest.raises(ValueError, match=r"E_v = 8.*w_o \(8, 6\)"):
        multi_head_attention(torch.randn(1, 4, 8), *[torch.randn(8, 8)] * 3, torch.randn(8, 6), 2)
    with pytest.raises(ValueError, match=r"\(2, 3\) need N = 4"):
        apply_rotary(torch.randn(1, 1, 4, 6), torch.randn(2, 3))


# -- gradients --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["weights", "sdpa", "row", "rotary"])
def test_gradcheck_float64(mode):
    """Output and weights with respect to the tokens and all eight projection tensors."""
    torch.manual_seed(4)
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    (w_q, w_k, w_v, w_o), (b_q, b_k, b_v, b_o) = random_projections(4, 6, 4, 3, seed=5)
    tensors = [t.requires_grad_(True) for t in (w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o)]
    rotary = rotary_angles(1, 5, 1).double() if mode == "rotary" else None
    kw = dict(need_weights=mode != "sdpa", query_index=2 if mode == "row" else None, rotary=rotary)

    def f(x, w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o):
        out, w = multi_head_attention(x, w_q, w_k, w_v, w_o, 2, b_q, b_k, b_v, b_o, **kw)
        return (out,) if w is None else (out, w)

    assert torch.autograd.gradcheck(f, (x, *tensors))


def test_gradcheck_logits_and_rollout_float64():
    torch.manual_seed(6)
    x = torch.randn(1, 6, 4, dtype=torch.float64, requires_grad=True)
    w_q, w_k = (torch.randn(4, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda *a: attention_logits(*a, 2, used_dims=1), (x, w_q, w_k))
    layers = [torch.softmax(torch.randn(5, 5, dtype=torch.float64), -1).requires_grad_(True) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda *a: attention_rollout(list(a)), tuple(layers))


# -- the used_dims shortcut -------------------------------------------------------------------------
def test_used_dims_leaves_out_only_zero_dims():
    """Heads of dim 6 whose last 2 dims of k are zero (as the position dims are without a
    position embedding): the scores over the first 4 dims are the full q.k / sqrt(6)."""
    torch.manual_seed(7)
    heads, d, d_in = 3, 6, 5
    x = torch.randn(2, 9, d_in, dtype=torch.float64)
    w_q = torch.randn(heads * d, d_in, dtype=torch.float64)
    w_k = torch.randn(heads * d, d_in, dtype=torch.float64)
    for h in range(heads):
        w_k[h * d + 4:(h + 1) * d] = 0.0
    full = attention_logits(x, w_q, w_k, heads)
    short = attention_logits(x, w_q, w_k, heads, used_dims=4)
    q = (x @ w_q.T).view(2, 9, heads, d).transpose(1, 2)
    k = (x @ w_k.T).view(2, 9, heads, d).transpose(1, 2)
    naive = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d)  # every dim, the full head's scale
    torch.testing.assert_close(short, naive, **NAIVE_TOL)
    torch.testing.assert_close(full, naive, **NAIVE_TOL)
    torch.testing.assert_close(attention_logits(x, w_q, w_k, heads, index=3, used_dims=4), naive[:, :, 3:4],
                               **NAIVE_TOL)
    w_k[4] = 1.0  # a non-zero dim left out: the shortcut no longer holds
    assert not torch.allclose(attention_logits(x, w_q, w_k, heads, used_dims=4), attention_logits(x, w_q, w_k, heads))


# -- entropy ----------------------------------------------------------------------------------------
def naive_entropy(weights: torch.Tensor) -> torch.Tensor:
    """-sum_j p_j log p_j / log N per row, one row at a time, with 0 log 0 = 0."""
    rows = weights.reshape(-1, weights.shape[-1])
    n = rows.shape[-1]
    out = [-sum(float(p) * math.log(float(p)) for p in row if p > 0) / math.log(n) for row in rows]
    return torch.tensor(out, dtype=torch.float64).view(weights.shape[:-1])


def test_entropy_is_zero_for_one_hot_and_one_for_uniform():
    w = torch.stack([torch.eye(8)[3], torch.full((8,), 1 / 8)])
    torch.testing.assert_close(attention_entropy(w), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("spread", [0.1, 5.0, 400.0])
def test_entropy_and_entropy_from_logits_equal_minus_sum_p_log_p(spread):
    """From near-uniform rows to rows whose weights underflow to zero. The logits path agrees to
    1e-9: lse is recovered as max l - log max w, exact up to rounding."""
    logits = torch.randn(3, 5, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * spread
    w = torch.softmax(logits, -1)
    expected = naive_entropy(w)
    torch.testing.assert_close(attention_entropy(w), expected, atol=1e-9, rtol=0)
    torch.testing.assert_close(entropy_from_logits(logits, w), expected, atol=1e-9, rtol=0)


# -- rollout ----------------------------------------------------------------------------------------
def naive_rollout(layers: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema (2020): per layer Â = 0.5 A + 0.5 I with every row renormalized to sum 1,
    and R = Â_L ... Â_1 (layer 1 first applied), by explicit loops in float64."""
    n = layers[0].shape[0]
    r = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for a in layers:
        hat = [[0.5 * float(a[i, j]) + (0.5 if i == j else 0.0) for j in range(n)] for i in range(n)]
        hat = [[v / sum(row) for v in row] for row in hat]
        r = [[sum(hat[i][m] * r[m][j] for m in range(n)) for j in range(n)] for i in range(n)]
    return torch.tensor(r, dtype=torch.float64)


def test_rollout_equals_the_papers_product_and_rows_sum_to_one():
    g = torch.Generator().manual_seed(8)
    stochastic = [torch.softmax(torch.randn(6, 6, generator=g, dtype=torch.float64) * 2, -1) for _ in range(3)]
    raw = [torch.rand(6, 6, generator=g, dtype=torch.float64) for _ in range(2)]  # rows not summing to 1
    for layers in (stochastic, raw):
        full = attention_rollout(layers)
        torch.testing.assert_close(full, naive_rollout(layers), **NAIVE_TOL)
        torch.testing.assert_close(full.sum(-1), torch.ones(6, dtype=torch.float64), **NAIVE_TOL)
        for i in range(6):
            torch.testing.assert_close(rollout_row(layers, i), full[i], **NAIVE_TOL)
    assert not torch.allclose(attention_rollout(stochastic), naive_rollout(stochastic[::-1]))  # order matters
    a = stochastic
    torch.testing.assert_close(attention_rollout(a, residual=False), a[2] @ a[1] @ a[0], **NAIVE_TOL)
    torch.testing.assert_close(rollout_row(a, 4, residual=False), (a[2] @ a[1] @ a[0])[4], **NAIVE_TOL)


def test_rollout_of_identity_is_identity():
    eye = torch.eye(6)
    torch.testing.assert_close(attention_rollout([eye, eye, eye]), eye)
    torch.testing.assert_close(rollout_row([eye, eye], 2), eye[2])
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        attention_rollout([torch.rand(4, 5)])


# -- position embeddings ----------------------------------------------------------------------------
def test_rotary_keeps_norms_and_depends_on_relative_position_only():
    torch.manual_seed(5)
    rows, cols, pairs = 6, 7, 5
    angles = rotary_angles(rows, cols, pairs, strength=1.3)
    t = torch.randn(1, 2, rows * cols, 2 * pairs + 1)
    rotated = apply_rotary(t, angles)
    torch.testing.assert_close(rotated.norm(dim=-1), t.norm(dim=-1))
    torch.testing.assert_close(rotated[..., -1], t[..., -1])
    q, k = torch.randn(2 * pairs), torch.randn(2 * pairs)
    qs = apply_rotary(q.expand(1, 1, rows * cols, -1), angles)[0, 0]
    ks = apply_rotary(k.expand(1, 1, rows * cols, -1), angles)[0, 0]
    at = lambda r, c: r * cols + c  # noqa: E731
    for (r0, c0), (r1, c1) in [((0, 0), (2, 3)), ((3, 1), (5, 4)), ((1, 2), (3, 5))]:  # the same offset (2, 3)
        torch.testing.assert_close(qs[at(r0, c0)] @ ks[at(r1, c1)], qs[0] @ ks[at(2, 3)], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(qs[0] @ ks[at(2, 3)], qs[0] @ ks[at(3, 2)])


def test_rotary_angles_turn_even_pairs_with_x_and_odd_pairs_with_y():
    angles = rotary_angles(3, 5, 4, strength=2.0, angle=0.1)  # rows 3 (y), cols 5 (x)
    token = 1 * 5 + 4  # row 1, column 4
    torch.testing.assert_close(angles[token], torch.tensor([4 * 0.2, 1 * 0.2, 4 * 0.1, 1 * 0.1]))


@pytest.mark.parametrize("kind", ["sinusoidal-1d", "sinusoidal-2d", "learned-random"])
def test_additive_position_embeddings_have_unit_rows(kind):
    pe = position_embedding(kind, 5, 9, seed=1)
    assert pe.shape == (45, 16)
    torch.testing.assert_close(pe.norm(dim=1), torch.ones(45))
    assert position_embedding("none", 5, 9) is None and position_embedding("rotary", 5, 9) is None
    assert set(POSITION_KINDS) == {"none", "rotary", "sinusoidal-1d", "sinusoidal-2d", "learned-random"}


def test_sinusoidal_similarity_depends_on_offset_only():
    pe = position_embedding("sinusoidal-1d", 1, 50)
    sim = pe @ pe.T
    torch.testing.assert_close(torch.diagonal(sim, 3), torch.full((47,), float(sim[0, 3])), atol=1e-6, rtol=1e-6)
    pe2 = position_embedding("sinusoidal-2d", 6, 7).view(6, 7, -1)
    torch.testing.assert_close(pe2[0, 0] @ pe2[2, 1], pe2[3, 4] @ pe2[5, 5], atol=1e-6, rtol=1e-6)


def test_sinusoidal_2d_gives_the_first_half_to_x():
    pe = position_embedding("sinusoidal-2d", 4, 6, dim=8).view(4, 6, 8)
    torch.testing.assert_close(pe[0, :, :4], pe[3, :, :4])  # the x half is the same down a column
    torch.testing.assert_close(pe[:, 0, 4:], pe[:, 5, 4:])  # the y half is the same along a row
