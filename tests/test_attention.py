"""Multi-head self-attention: the core against torch.nn.MultiheadAttention and
F.scaled_dot_product_attention (float32 at 1e-5, float64 at 1e-10), the interpretable heads
against the Gaussian kernels they claim to compute, rollout, rotary and sinusoidal position
embeddings, and the operator's layers."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backends.features import TOKEN_GROUPS
from backends.layers import complete
from backends.ops.attention import (
    HEADS,
    PE_DIM,
    POSITION_KINDS,
    SelfAttention,
    apply_rotary,
    attention_entropy,
    attention_logits,
    attention_rollout,
    attention_weights,
    embed_tokens,
    entropy_from_logits,
    interpretable_heads,
    make_tokens,
    multi_head_attention,
    position_embedding,
    rollout_row,
    rotary_angles,
    run_stack,
)
from backends.params import validate

LAYERS = ("Head attention", "Rollout", "Attention entropy", "Position term", "Stack output", "Metrics")
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def params_of(values: dict) -> dict:
    return validate(SelfAttention.spec.params, values)


def torch_mha(e: int, heads: int, dtype: torch.dtype, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(e, heads, batch_first=True, dtype=dtype)
    with torch.no_grad():  # non-zero biases, so they are checked too
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha.eval()


def our_weights(mha: nn.MultiheadAttention) -> tuple[torch.Tensor, ...]:
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    return w_q, w_k, w_v, mha.out_proj.weight, b_q, b_k, b_v, mha.out_proj.bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("e, heads, n", [(32, 4, 17), (24, 3, 5), (8, 1, 9)])
def test_equals_nn_multihead_attention(dtype, e, heads, n):
    mha = torch_mha(e, heads, dtype)
    x = torch.randn(2, n, e, dtype=dtype)
    with torch.no_grad():
        ref_out, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
        w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o = our_weights(mha)
        out, w = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, b_q, b_k, b_v, b_o)
        sdpa_out, none = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, b_q, b_k, b_v, b_o, need_weights=False)
        row_out, row = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, b_q, b_k, b_v, b_o, query_index=n // 2)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(w, ref_w, **TOL[dtype])
    torch.testing.assert_close(sdpa_out, ref_out, **TOL[dtype])
    torch.testing.assert_close(row_out, ref_out, **TOL[dtype])
    torch.testing.assert_close(row, ref_w[:, :, n // 2], **TOL[dtype])
    assert none is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_scaled_dot_product_attention(dtype):
    torch.manual_seed(1)
    b, n, d_in, heads, d = 2, 11, 10, 2, 6
    x = torch.randn(b, n, d_in, dtype=dtype)
    w_q, w_k, w_v = (torch.randn(heads * d, d_in, dtype=dtype) for _ in range(3))
    w_o = torch.eye(heads * d, dtype=dtype)
    split = lambda t: t.view(b, n, heads, d).transpose(1, 2)  # noqa: E731
    q, k, v = split(x @ w_q.T), split(x @ w_k.T), split(x @ w_v.T)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.3).transpose(1, 2).reshape(b, n, -1)
    for need in (True, False):
        out, _ = multi_head_attention(x, w_q, w_k, w_v, w_o, heads, scale=0.3, need_weights=need)
        torch.testing.assert_close(out, ref, **TOL[dtype])


def test_rows_sum_to_one_and_the_query_row_matches():
    torch.manual_seed(2)
    x = torch.randn(1, 40, 16)
    ws = [torch.randn(16, 16) for _ in range(4)]
    _, w = multi_head_attention(x, *ws, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4, 40))
    torch.testing.assert_close(attention_weights(x, ws[0], ws[1], 4), w)
    row = attention_weights(x, ws[0], ws[1], 4, 7)
    torch.testing.assert_close(row, w[:, :, 7], atol=1e-6, rtol=1e-6)
    angles = rotary_angles(5, 8, 2, 1.0)
    _, w_rot = multi_head_attention(x, *ws, 4, rotary=angles)
    torch.testing.assert_close(attention_weights(x, ws[0], ws[1], 4, 7, rotary=angles), w_rot[:, :, 7],
                               atol=1e-6, rtol=1e-6)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"x \(4, 8\)"):
        multi_head_attention(torch.randn(4, 8), *[torch.randn(8, 8)] * 4, 2)
    with pytest.raises(ValueError, match="num_heads = 3"):
        multi_head_attention(torch.randn(1, 4, 8), *[torch.randn(8, 8)] * 4, 3)


def test_permutation_equivariance_without_position_embedding():
    torch.manual_seed(3)
    f = torch.randn(30, 13)
    heads = interpretable_heads((0.3, 0.5, 0.3, 0.2), 2.0)
    perm = torch.randperm(30)
    out, w = multi_head_attention(embed_tokens(f, None)[None], *heads, len(HEADS))
    out_p, w_p = multi_head_attention(embed_tokens(f[perm], None)[None], *heads, len(HEADS))
    torch.testing.assert_close(out_p[0], out[0][perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w_p[0], w[0][:, perm][:, :, perm], atol=1e-6, rtol=1e-5)


def test_each_head_is_the_gaussian_kernel_of_its_feature_group():
    """softmax_j(-|f_i - f_j|^2 / tau_h + strength * PE_i.PE_j), per head, in float64."""
    torch.manual_seed(4)
    f = torch.randn(24, 13, dtype=torch.float64)
    temps, strength = (0.5, 0.8, 0.3, 0.1), 1.5
    pe = position_embedding("sinusoidal-2d", 4, 6).double()  # the same values enter both sides
    heads = interpretable_heads(temps, strength, torch.float64)
    _, w = multi_head_attention(embed_tokens(f, pe)[None], *heads, len(HEADS))
    for h, (a, b) in enumerate(TOKEN_GROUPS.values()):
        dist = torch.cdist(f[:, a:b], f[:, a:b]) ** 2
        expected = torch.softmax(-dist / temps[h] + strength * pe @ pe.T, -1)
        torch.testing.assert_close(w[0, h], expected, atol=1e-10, rtol=1e-8)


def test_rotary_heads_still_score_each_query_highest_on_itself():
    torch.manual_seed(6)
    f = torch.randn(30, 13, dtype=torch.float64)
    heads = interpretable_heads((0.5, 0.8, 0.3, 0.1), 0.0, torch.float64)
    logits = attention_logits(embed_tokens(f, None)[None], heads[0], heads[1], len(HEADS),
                              rotary=rotary_angles(5, 6, strength=2.0).double())[0]
    diagonal = torch.diagonal(logits, dim1=-2, dim2=-1)
    assert (logits <= diagonal[..., None] + 1e-9).all()
    assert not torch.allclose(logits, attention_logits(embed_tokens(f, None)[None], heads[0], heads[1], 4)[0])


def test_rollout_of_identity_is_identity_and_rows_agree():
    eye = torch.eye(6)
    torch.testing.assert_close(attention_rollout([eye, eye, eye]), eye)
    torch.testing.assert_close(rollout_row([eye, eye], 2), eye[2])
    a = [torch.softmax(torch.randn(6, 6), -1) for _ in range(3)]
    full = attention_rollout(a)
    for i in range(6):
        torch.testing.assert_close(rollout_row(a, i), full[i], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(full.sum(-1), torch.ones(6))
    manual = (0.5 * a[2] + 0.5 * eye) @ (0.5 * a[1] + 0.5 * eye) @ (0.5 * a[0] + 0.5 * eye)
    torch.testing.assert_close(full, manual, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(attention_rollout(a, residual=False), a[2] @ a[1] @ a[0], atol=1e-6, rtol=1e-6)


def test_stack_layer_equals_the_core_output():
    """run_stack's shortcut mean_h(A_h) f is multi_head_attention's output for these weights."""
    pixels = torch.rand(1, 11, 40, 40)
    tokens = make_tokens(pixels, 1.0, 8, 5, 5)
    heads = interpretable_heads((0.3, 0.4, 0.2, 0.1), 1.0)
    pe = position_embedding("sinusoidal-2d", 5, 5)
    out, _ = multi_head_attention(embed_tokens(tokens.f, pe)[None], *heads, len(HEADS))
    stack = run_stack(tokens, heads, pe, None, depth=1)
    torch.testing.assert_close(stack.mixed, 0.5 * tokens.f + 0.5 * out[0], atol=1e-5, rtol=1e-5)


def test_rollout_is_exact_for_the_stack():
    """The stack mixes f <- (f + A f) / 2, so rollout row i applied to f_0 is f_L at token i."""
    pixels = torch.rand(1, 11, 48, 64)
    tokens = make_tokens(pixels, 1.0, 8, 6, 8)
    heads = interpretable_heads((0.3, 0.3, 0.3, 0.1), 0.0)
    stack = run_stack(tokens, heads, None, None, depth=3)
    for i in (0, 13, 47):
        torch.testing.assert_close(rollout_row(stack.means, i) @ tokens.f, stack.mixed[i], atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("kind", ["sinusoidal-1d", "sinusoidal-2d", "learned-random"])
def test_additive_position_embeddings_have_unit_rows(kind):
    pe = position_embedding(kind, 5, 9, seed=1)
    assert pe.shape == (45, PE_DIM)
    torch.testing.assert_close(pe.norm(dim=1), torch.ones(45))
    assert position_embedding("none", 5, 9) is None and position_embedding("rotary", 5, 9) is None


def test_sinusoidal_similarity_depends_on_offset_only():
    pe = position_embedding("sinusoidal-1d", 1, 50)
    sim = pe @ pe.T
    torch.testing.assert_close(torch.diagonal(sim, 3), torch.full((47,), float(sim[0, 3])), atol=1e-6, rtol=1e-6)
    pe2 = position_embedding("sinusoidal-2d", 6, 7).view(6, 7, -1)
    torch.testing.assert_close(pe2[0, 0] @ pe2[2, 1], pe2[3, 4] @ pe2[5, 5], atol=1e-6, rtol=1e-6)


def test_entropy_is_zero_for_one_hot_and_one_for_uniform():
    w = torch.stack([torch.eye(8)[3], torch.full((8,), 1 / 8)])
    torch.testing.assert_close(attention_entropy(w), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("spread", [0.1, 5.0, 400.0])
def test_entropy_from_logits_equals_the_entropy_of_the_softmax(spread):
    """The stack's shortcut (lse - sum w l) agrees with -sum w log w to 1e-5, from near-uniform
    rows to rows whose weights underflow to zero."""
    logits = torch.randn(3, 64, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * spread
    w = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy_from_logits(logits, w), attention_entropy(w), atol=1e-5, rtol=0)


def test_run_layer_names_and_maps():
    op = SelfAttention()
    image = torch.rand(1, 3, 100, 140)
    with torch.no_grad():
        result = complete(op.run(image, params_of({"patch": 8}), (70, 30)))
    assert result.names == LAYERS
    heads = result.layer("Head attention")
    assert heads.maps.shape[0] == len(HEADS) + 1 == len(heads.labels)  # the heads and their mean
    assert heads.maps.shape[1:] == heads.background.shape[:2]
    assert (heads.maps[:, :, -1] == 0).all()  # 140 = 17 * 8 + 4 px that no patch covers
    assert float(heads.maps.max()) == 1.0
    rollout = result.layer("Rollout")
    assert rollout.maps.shape == (12, 17) and rollout.extent == (0.0, 0.0, 136.0, 96.0)
    assert float(rollout.maps.sum()) == pytest.approx(1.0, abs=1e-5)
    entropy = torch.as_tensor(result.layer("Attention entropy").maps)
    assert entropy.shape[0] == len(HEADS) + 2 and 0.0 <= float(entropy.min()) and float(entropy.max()) <= 1.0


@pytest.mark.parametrize("kind", POSITION_KINDS)
def test_run_every_position_kind_and_depth(kind):
    op = SelfAttention()
    with torch.no_grad():
        for depth in (1, 4):
            result = complete(op.run(torch.rand(1, 3, 64, 64), params_of({"position": kind, "depth": depth}), None))
            assert result.names == LAYERS


def test_run_on_tiny_images_and_large_grids():
    op = SelfAttention()
    with torch.no_grad():
        for h, w, patch in ((3, 5, 16), (1, 1, 4), (40, 33, 32)):
            assert complete(op.run(torch.rand(1, 3, h, w), params_of({"patch": patch}), (w + 9, -4))).names == LAYERS
        result = complete(op.run(torch.rand(1, 3, 256, 256), params_of({"patch": 4}), (10, 10)))
    assert result.layer("Position term").maps.shape == (64, 64)
    assert result.layer("Rollout").maps.shape == (32, 32)  # the full-matrix grid keeps to 1024 tokens


def test_full_matrix_panels_settle_after_the_query_rows_and_clicks_need_no_second_pass():
    """A temperature change first returns the clicked query's rows; the stack's panels come from
    the settle call. A click with the stack computed returns everything at once."""
    op = SelfAttention()
    image = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        fast = op.run(image, params_of({"patch": 8, "temperature": 0.7}), (20, 20))
        assert fast.names == ("Head attention", "Position term", "Metrics")
        assert fast.pending == ("Rollout", "Attention entropy", "Stack output")
        settled = fast.settle()
        assert settled.names == LAYERS and settled.settle is None
        torch.testing.assert_close(torch.as_tensor(settled.layer("Head attention").maps),
                                   torch.as_tensor(fast.layer("Head attention").maps))
        clicked = op.run(image, params_of({"patch": 8, "temperature": 0.7}), (60, 70))
    assert clicked.settle is None and clicked.names == LAYERS
