"""The self-attention operator: its interpretable heads against the Gaussian kernels they claim
to compute, the stack against the core and rollout, what the panels draw against an independent
float64 computation (on a non-square image with an asymmetric query, so a swapped x/y, a
transposed matrix or a column taken for a row changes the answer), and the settle contract."""

from __future__ import annotations

import pytest
import torch

from backends.features import TOKEN_GROUPS, make_tokens, pixel_features
from backends.functional.attention import (
    POSITION_KINDS,
    attention_logits,
    multi_head_attention,
    position_embedding,
    rollout_row,
)
from backends.layers import complete
from backends.ops.attention import (
    HEADS,
    SelfAttention,
    embed_tokens,
    interpretable_heads,
    run_stack,
    token_rotary,
)
from backends.params import is_active, validate

LAYERS = ("Head attention", "Rollout", "Attention entropy", "Position term", "Stack output", "Metrics")
PANEL_TOL = dict(atol=1e-4, rtol=1e-4)  # float32 operator against float64 logits of size ~10


def params_of(values: dict) -> dict:
    return validate(SelfAttention.spec.params, values)


# -- the heads --------------------------------------------------------------------------------------
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
                              rotary=token_rotary(5, 6, strength=2.0).double())[0]
    diagonal = torch.diagonal(logits, dim1=-2, dim2=-1)
    assert (logits <= diagonal[..., None] + 1e-9).all()
    assert not torch.allclose(logits, attention_logits(embed_tokens(f, None)[None], heads[0], heads[1], 4)[0])


def test_stack_layer_equals_the_core_output():
    """run_stack's shortcut mean_h(A_h) f is multi_head_attention's output for these weights."""
    torch.manual_seed(9)
    tokens = make_tokens(torch.rand(1, 11, 40, 40), 1.0, 8, 5, 5)
    heads = interpretable_heads((0.3, 0.4, 0.2, 0.1), 1.0)
    pe = position_embedding("sinusoidal-2d", 5, 5)
    out, _ = multi_head_attention(embed_tokens(tokens.f, pe)[None], *heads, len(HEADS))
    stack = run_stack(tokens, heads, pe, None, depth=1)
    torch.testing.assert_close(stack.mixed, 0.5 * tokens.f + 0.5 * out[0], atol=1e-5, rtol=1e-5)


def test_rollout_is_exact_for_the_stack():
    """The stack mixes f <- (f + A f) / 2, so rollout row i applied to f_0 is f_L at token i."""
    torch.manual_seed(10)
    tokens = make_tokens(torch.rand(1, 11, 48, 64), 1.0, 8, 6, 8)
    heads = interpretable_heads((0.3, 0.3, 0.3, 0.1), 0.0)
    stack = run_stack(tokens, heads, None, None, depth=3)
    for i in (0, 13, 47):
        torch.testing.assert_close(rollout_row(stack.means, i) @ tokens.f, stack.mixed[i], atol=1e-5, rtol=1e-5)


# -- what the panels draw ---------------------------------------------------------------------------
H, W, PATCH = 96, 165, 16  # 6 x 10 tokens; the right 5 columns of pixels are in no patch
QUERY = (130, 20)  # x, y: patch column 8, row 1, token 18 (x/y swapped it would be token 8 * 10 + 1)
PANEL_PARAMS = {"patch": PATCH, "temperature": 5.0, "position": "sinusoidal-2d", "pe_strength": 2.0, "depth": 2}


def reference(image: torch.Tensor):
    """The operator's model computed again in float64 from its definition: per head h,
    A_h = softmax_j(-|f_i - f_j|^2 / tau_h + s PE_i.PE_j) over the feature group of h; a stack
    f <- (f + mean_h(A_h) f) / 2; rollout R = Â_2 Â_1 with Â = (A + I) / 2, rows renormalized."""
    rows, cols = H // PATCH, W // PATCH
    pixels, scale = pixel_features(image)
    f = make_tokens(pixels, scale, PATCH, rows, cols).f.double()
    temps = [5.0 * t for t in (0.1, 0.1, 0.05, 0.05)]  # the global temperature times each head's default
    pe = position_embedding("sinusoidal-2d", rows, cols).double()
    bonus = 2.0 * pe @ pe.T
    layers, first = [], None
    for _ in range(PANEL_PARAMS["depth"]):
        per_head = torch.stack([torch.softmax(-torch.cdist(f[:, a:b], f[:, a:b]) ** 2 / t + bonus, -1)
                                for (a, b), t in zip(TOKEN_GROUPS.values(), temps)])
        first = per_head if first is None else first
        layers.append(per_head.mean(0))
        f = 0.5 * f + 0.5 * layers[-1] @ f
    eye = torch.eye(rows * cols, dtype=torch.float64)
    rollout = eye
    for a in layers:
        hat = 0.5 * a + 0.5 * eye
        rollout = (hat / hat.sum(-1, keepdim=True)) @ rollout
    return first, layers, rollout, pe


def on_pixels(values: torch.Tensor) -> torch.Tensor:
    """Token values (K, rows * cols) painted on the H x W frame patch by patch; 0 outside patches."""
    cols = W // PATCH
    out = torch.zeros(values.shape[0], H, W, dtype=values.dtype)
    for t in range(values.shape[1]):
        r, c = divmod(t, cols)
        out[:, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = values[:, t, None, None]
    return out


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum(-1) / torch.log(torch.tensor(float(p.shape[-1]), dtype=p.dtype))


@pytest.fixture(scope="module")
def drawn():
    torch.manual_seed(11)
    image = torch.rand(1, 3, H, W)
    with torch.no_grad():
        result = complete(SelfAttention().compute(image, params_of(PANEL_PARAMS), QUERY))
    return result, reference(image)


def test_head_attention_draws_the_query_row_at_each_patch(drawn):
    result, (first, _, _, _) = drawn
    qi = (QUERY[1] // PATCH) * (W // PATCH) + QUERY[0] // PATCH
    rows = torch.cat([first[:, qi], first[:, qi].mean(0, keepdim=True)])  # the query's rows, and their mean
    others = torch.cat([rows[:, :qi], rows[:, qi + 1:]], 1).amax(1, keepdim=True)
    expected = on_pixels((rows / others).clamp(max=1.0))
    layer = result.layer("Head attention")
    assert layer.maps.shape == (5, H, W) and layer.background.shape[:2] == (H, W)  # one display pixel per pixel
    torch.testing.assert_close(torch.as_tensor(layer.maps).double(), expected, **PANEL_TOL)


def test_the_query_s_own_weights_are_in_the_metrics_not_the_caption(drawn):
    """Each head's weight on the clicked patch itself, off the maps' scale, as one metrics row
    (colour, edges, texture, position); the caption carries no list of numbers."""
    result, (first, _, _, _) = drawn
    qi = (QUERY[1] // PATCH) * (W // PATCH) + QUERY[0] // PATCH
    own = result.layer("Metrics").values["own weight (colour / edges / texture / position)"]
    assert own == " / ".join(f"{float(v):.2f}" for v in first[:, qi, qi])
    caption = result.layer("Head attention").caption
    assert f"token {qi} of 60" in caption and "self:" not in caption and "τ" not in caption
    assert result.layer("Head attention").labels == ("colour", "edges", "texture", "position", "mean")
    assert result.layer("Attention entropy").labels[-2:] == ("layer 1", "layer 2")  # each layer's head mean


def test_rollout_draws_the_query_row_of_the_product(drawn):
    result, (_, _, rollout, _) = drawn
    qi = (QUERY[1] // PATCH) * (W // PATCH) + QUERY[0] // PATCH
    layer = result.layer("Rollout")
    assert layer.extent == (0.0, 0.0, float(W // PATCH * PATCH), float(H))
    torch.testing.assert_close(torch.as_tensor(layer.maps).double(), rollout[qi].view(H // PATCH, W // PATCH),
                               atol=1e-6, rtol=1e-4)


def test_entropy_draws_every_querys_row_entropy(drawn):
    result, (first, layers, _, _) = drawn
    expected = on_pixels(torch.cat([entropy(first), entropy(layers[0])[None], entropy(layers[-1])[None]]))
    torch.testing.assert_close(torch.as_tensor(result.layer("Attention entropy").maps).double(), expected, **PANEL_TOL)


def test_position_term_draws_the_query_embeddings_similarity(drawn):
    result, (_, _, _, pe) = drawn
    qi = (QUERY[1] // PATCH) * (W // PATCH) + QUERY[0] // PATCH
    expected = (2.0 * pe @ pe[qi]).view(H // PATCH, W // PATCH)
    torch.testing.assert_close(torch.as_tensor(result.layer("Position term").maps).double(), expected, **PANEL_TOL)


# -- the operator -----------------------------------------------------------------------------------
def test_run_layer_names_and_maps():
    op = SelfAttention()
    image = torch.rand(1, 3, 100, 140)
    with torch.no_grad():
        result = complete(op.compute(image, params_of({"patch": 8}), (70, 30)))
    assert result.names == LAYERS
    heads = result.layer("Head attention")
    assert heads.maps.shape[0] == len(HEADS) + 1 == len(heads.labels)  # the heads and their mean
    assert heads.maps.shape[1:] == heads.background.shape[:2]
    assert (heads.maps[:, :, -1] == 0).all()  # 140 = 17 * 8 + 4 px that no patch covers
    assert float(heads.maps.max()) == 1.0
    rollout = result.layer("Rollout")
    assert rollout.maps.shape == (12, 17) and rollout.extent == (0.0, 0.0, 136.0, 96.0)
    assert float(rollout.maps.sum()) == pytest.approx(1.0, abs=1e-5)
    entropy_maps = torch.as_tensor(result.layer("Attention entropy").maps)
    assert entropy_maps.shape[0] == len(HEADS) + 2 and 0.0 <= float(entropy_maps.min()) <= float(entropy_maps.max()) <= 1.0
    assert {"query row ms", "stack + rollout ms"} <= set(result.layer("Metrics").values)


def test_the_full_matrix_panels_at_the_chosen_patch_say_nothing_of_another():
    with torch.no_grad():
        result = complete(SelfAttention().compute(torch.rand(1, 3, 64, 80), params_of({"patch": 8}), None))
    assert result.layer("Rollout").maps.shape == (8, 10)
    assert not any("not the chosen" in result.layer(n).caption for n in ("Rollout", "Attention entropy", "Stack output"))


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in SelfAttention.spec.params}
    assert not is_active(by_name["pe_strength"], params_of({"position": "none"}))
    assert is_active(by_name["pe_strength"], params_of({"position": "rotary"}))
    assert not is_active(by_name["seed"], params_of({"position": "sinusoidal-2d"}))
    assert is_active(by_name["seed"], params_of({"position": "learned-random"}))
    assert SelfAttention.spec.primary == "Head attention"


@pytest.mark.parametrize("kind", POSITION_KINDS)
def test_run_every_position_kind_and_depth(kind):
    op = SelfAttention()
    with torch.no_grad():
        for depth in (1, 4):
            result = complete(op.compute(torch.rand(1, 3, 64, 64), params_of({"position": kind, "depth": depth}), None))
            assert result.names == LAYERS


def test_run_on_tiny_images_and_large_grids():
    op = SelfAttention()
    with torch.no_grad():
        for h, w, patch in ((3, 5, 16), (1, 1, 4), (40, 33, 32)):
            result = complete(op.compute(torch.rand(1, 3, h, w), params_of({"patch": patch}), (w + 9, -4)))
            assert result.names == LAYERS
        result = complete(op.compute(torch.rand(1, 3, 256, 256), params_of({"patch": 4}), (10, 10)))
    assert result.layer("Position term").maps.shape == (64, 64)
    assert result.layer("Rollout").maps.shape == (32, 32)  # the full-matrix grid keeps to 1024 tokens
    for name in ("Rollout", "Attention entropy", "Stack output"):  # and says so in so many words
        assert result.layer(name).caption.startswith("at patch 8 (1024 tokens), not the chosen 4: its 4096 x 4096 "
                                                     "matrices would take seconds. ")
    assert result.layer("Metrics").values["full-matrix grid"] == "patch 8: 1024 tokens"


def test_full_matrix_panels_settle_after_the_query_rows_and_clicks_need_no_second_pass():
    """A temperature change first returns the clicked query's rows; the stack's panels come from
    the settle call. A click with the stack computed returns everything at once."""
    op = SelfAttention()
    image = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        fast = op.compute(image, params_of({"patch": 8, "temperature": 0.7}), (20, 20))
        assert fast.names == ("Head attention", "Position term", "Metrics")
        assert fast.pending == ("Rollout", "Attention entropy", "Stack output")
        settled = fast.settle()
        assert settled.names == LAYERS and settled.settle is None
        torch.testing.assert_close(torch.as_tensor(settled.layer("Head attention").maps),
                                   torch.as_tensor(fast.layer("Head attention").maps))
        clicked = op.compute(image, params_of({"patch": 8, "temperature": 0.7}), (60, 70))
        assert clicked.settle is None and clicked.names == LAYERS
        other = op.compute(torch.rand(1, 3, 96, 96), params_of({"patch": 8, "temperature": 0.7}), (60, 70))
    assert other.settle is not None  # another image: its stack is not the first one's


def test_a_repeated_frame_returns_the_same_background_arrays():
    """The memoized per-image stages hand back the very same arrays, so views skip redrawing them."""
    op = SelfAttention()
    image = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        a = complete(op.compute(image, params_of({}), (5, 5), image_key="img"))
        b = complete(op.compute(image, params_of({"temperature": 2.0}), (50, 40), image_key="img"))
    assert a.layer("Head attention").background is b.layer("Head attention").background
    assert a.layer("Attention entropy").background is b.layer("Attention entropy").background
