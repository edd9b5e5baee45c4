"""Position embedding cores: sinusoidal tables against a naive loop at any base (1e-12) and the
attention module's table at base 10000, translation invariance of sinusoidal similarity, rotary
scores against explicit 2 x 2 rotations and their dependence on the offset alone (shifting both
positions), the learned-random table from its seed, the relative bias lookup against a naive
loop and Swin's index construction, the distance profile, gradcheck, and the module twins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.attention import apply_rotary, position_embedding, sinusoidal_table
from backends.functional.position import (
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionEmbedding,
    distance_profile,
    distance_table,
    frequencies,
    grid_picture,
    relative_bias,
    relative_index,
    rope_angles,
    rotary_scores,
    similarity_row,
    sinusoidal,
    sinusoidal_1d,
    sinusoidal_2d,
    wavelengths,
)

NAIVE_TOL = 1e-12  # float64, the same sines
SHIFT_TOL = 1e-9  # float64 scores of shifted positions: angles up to ~100 rad lose a few digits


def naive_sinusoidal(n: int, dim: int, base: float) -> np.ndarray:
    out = np.zeros((n, dim))
    for p in range(n):
        for k in range(dim // 2):
            w = base ** (-2 * k / dim)
            out[p, 2 * k], out[p, 2 * k + 1] = math.sin(p * w), math.cos(p * w)
    return out


def naive_rotary_score(q: np.ndarray, k: np.ndarray, angles_m: np.ndarray, angles_n: np.ndarray) -> float:
    """Turn each pair of q by its angle at m and of k at n with explicit 2 x 2 matrices, then dot."""
    total = 0.0
    for j in range(len(angles_m)):
        rm = np.array([[math.cos(angles_m[j]), -math.sin(angles_m[j])], [math.sin(angles_m[j]), math.cos(angles_m[j])]])
        rn = np.array([[math.cos(angles_n[j]), -math.sin(angles_n[j])], [math.sin(angles_n[j]), math.cos(angles_n[j])]])
        total += float((rm @ q[2 * j: 2 * j + 2]) @ (rn @ k[2 * j: 2 * j + 2]))
    return total


@pytest.mark.parametrize("base", [10.0, 300.0, 10000.0])
def test_sinusoidal_equals_the_naive_loop(base):
    np.testing.assert_allclose(sinusoidal(torch.arange(23), 12, base, torch.float64).numpy(),
                               naive_sinusoidal(23, 12, base), atol=NAIVE_TOL)


def test_at_base_10000_it_is_the_attention_modules_table():
    torch.testing.assert_close(sinusoidal(torch.arange(50), 16), sinusoidal_table(torch.arange(50), 16), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["dot", "cosine"])
@pytest.mark.parametrize("base", [20.0, 10000.0])
def test_1d_sinusoidal_similarity_is_translation_invariant(kind, base):
    """sim(p, p + d) is the same at every p of the interior, for every offset d."""
    table = sinusoidal(torch.arange(60), 16, base, torch.float64)
    sim = torch.stack([similarity_row(table, p, kind) for p in range(60)])
    for d in (1, 3, 7, 19):
        values = torch.stack([sim[p, p + d] for p in range(10, 40)])
        assert float(values.max() - values.min()) < 1e-12
    assert float((sim[20, 21] - sim[20, 27]).abs()) > 1e-3  # it does depend on the offset


def test_2d_sinusoidal_similarity_depends_on_the_grid_offset_only():
    rows, cols = 6, 9
    table = sinusoidal_2d(rows, cols, 16, 50.0, torch.float64)
    sim = table @ table.T
    for (r, c), (dr, dc) in [((1, 2), (2, 3)), ((0, 0), (3, 5)), ((2, 1), (1, -1))]:
        a, b = r * cols + c, (r + dr) * cols + (c + dc)
        a2, b2 = (r + 1) * cols + c + 1, (r + dr + 1) * cols + c + dc + 1
        assert float(sim[a, b]) == pytest.approx(float(sim[a2, b2]), abs=1e-12)
    # x in the first half of the dims, y in the second
    torch.testing.assert_close(table[:, :8], sinusoidal(torch.arange(cols).repeat(rows), 8, 50.0, torch.float64))
    torch.testing.assert_close(table[:, 8:], sinusoidal(torch.arange(rows).repeat_interleave(cols), 8, 50.0, torch.float64))


def test_1d_table_numbers_tokens_in_raster_order():
    torch.testing.assert_close(sinusoidal_1d(3, 4, 8, 100.0), sinusoidal(torch.arange(12), 8, 100.0))


@pytest.mark.parametrize("two_d", [False, True])
def test_rotary_scores_equal_explicit_rotations(two_d):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    angles = rope_angles(3, 4, 8, 100.0, two_d, torch.float64)
    scores = rotary_scores(q, k, angles)
    for m, n in [(0, 0), (1, 5), (7, 2), (11, 3)]:
        expected = naive_rotary_score(q.numpy(), k.numpy(), angles[m].numpy(), angles[n].numpy())
        assert float(scores[m, n]) == pytest.approx(expected, abs=NAIVE_TOL)
    torch.testing.assert_close(rotary_scores(q, k, angles, index=5), scores[5])


def test_rotary_scores_depend_on_the_offset_only():
    """q_m . k_n == q_(m+s) . k_(n+s): shift both positions (1-D), or both grid cells (2-D)."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    s1 = rotary_scores(q, k, rope_angles(1, 40, 16, 30.0, False, torch.float64))
    for m, n, s in [(0, 5, 3), (10, 2, 17), (4, 4, 30)]:
        assert float(s1[m, n]) == pytest.approx(float(s1[m + s, n + s]), abs=SHIFT_TOL)
    assert float((s1[0, 5] - s1[5, 0]).abs()) > 1e-3  # separate q and k: not symmetric in the offset
    rows, cols = 5, 7
    s2 = rotary_scores(q, k, rope_angles(rows, cols, 16, 30.0, True, torch.float64))
    for (r, c), (r2, c2), (sr, sc) in [((0, 1), (3, 4), (1, 2)), ((2, 5), (0, 0), (2, 1))]:
        m, n = r * cols + c, r2 * cols + c2
        assert float(s2[m, n]) == pytest.approx(float(s2[m + sr * cols + sc, n + sr * cols + sc]), abs=SHIFT_TOL)


def test_rope_angles_and_wavelengths():
    angles = rope_angles(2, 3, 8, 100.0, False, torch.float64)
    torch.testing.assert_close(angles, torch.arange(6, dtype=torch.float64)[:, None] * frequencies(8, 100.0)[None])
    a2 = rope_angles(2, 3, 8, 100.0, True, torch.float64)
    torch.testing.assert_close(a2[:, :2], torch.tensor([0, 1, 2, 0, 1, 2.0], dtype=torch.float64)[:, None]
                               * frequencies(4, 100.0)[None])
    torch.testing.assert_close(wavelengths(8, 100.0), 2 * math.pi * 100.0 ** (torch.arange(4, dtype=torch.float64) / 4))


def test_learned_random_is_reproducible_from_the_seed():
    a, b = position_embedding("learned-random", 4, 5, 7, 16), position_embedding("learned-random", 4, 5, 7, 16)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, position_embedding("learned-random", 4, 5, 8, 16))
    raw = torch.randn((20, 16), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, raw / raw.norm(dim=1, keepdim=True))


def naive_relative_bias(table: np.ndarray, rows: int, cols: int) -> np.ndarray:
    n = rows * cols
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dy, dx = i // cols - j // cols, i % cols - j % cols
            out[i, j] = table[dy + rows - 1, dx + cols - 1]
    return out


@pytest.mark.parametrize("rows, cols", [(3, 5), (4, 2), (1, 6)])
def test_relative_bias_lookup_equals_a_naive_loop(rows, cols):
    table = torch.randn(2 * rows - 1, 2 * cols - 1, generator=torch.Generator().manual_seed(rows * 10 + cols),
                        dtype=torch.float64)
    full = relative_bias(table, rows, cols)
    np.testing.assert_array_equal(full.numpy(), naive_relative_bias(table.numpy(), rows, cols))
    for index in range(rows * cols):
        torch.testing.assert_close(relative_bias(table, rows, cols, index), full[index], atol=0, rtol=0)
    heads = torch.stack([table, 2 * table])
    torch.testing.assert_close(relative_bias(heads, rows, cols)[1], 2 * full)


def test_relative_index_is_swins_construction():
    """Swin Transformer's relative_position_index, written as in its WindowAttention."""
    rows, cols = 3, 4
    coords = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += rows - 1
    rel[:, :, 1] += cols - 1
    rel[:, :, 0] *= 2 * cols - 1
    torch.testing.assert_close(relative_index(rows, cols), rel.sum(-1))


def test_distance_table_is_minus_slope_times_offset_length():
    t = distance_table(3, 4, 0.5, torch.float64)
    assert t.shape == (5, 7) and float(t[2, 3]) == 0.0
    assert float(t[0, 0]) == pytest.approx(-0.5 * math.hypot(2, 3))
    assert float(t[4, 6]) == pytest.approx(-0.5 * math.hypot(2, 3))


def test_similarity_rows():
    v = torch.randn(9, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(similarity_row(v, 3, "dot"), v @ v[3])
    torch.testing.assert_close(similarity_row(v, 3, "cosine"), F.cosine_similarity(v, v[3:4], dim=1))


def test_distance_profile_equals_grouping_by_hand():
    rows, cols, index = 4, 6, 8
    values = torch.randn(rows * cols, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    groups: dict[int, list[float]] = {}
    for t in range(rows * cols):
        d = round(math.hypot(t // cols - index // cols, t % cols - index % cols))
        groups.setdefault(d, []).append(float(values[t]))
    d, mean, low, high = distance_profile(values, rows, cols, index)
    assert d.tolist() == sorted(groups)
    np.testing.assert_allclose(mean.numpy(), [np.mean(groups[k]) for k in sorted(groups)], atol=NAIVE_TOL)
    np.testing.assert_array_equal(low.numpy(), [min(groups[k]) for k in sorted(groups)])
    np.testing.assert_array_equal(high.numpy(), [max(groups[k]) for k in sorted(groups)])


def test_gradcheck_rotary_and_relative_bias():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    angles = rope_angles(2, 3, 4, 10.0, True, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: rotary_scores(a, b, angles), (q, k))
    table = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: relative_bias(t, 2, 3), (table,))


def test_modules_equal_the_functions():
    x = torch.randn(2, 12, 8)
    torch.testing.assert_close(SinusoidalPositionEmbedding(8, 100.0, two_d=True)(x, 3, 4), x + sinusoidal_2d(3, 4, 8, 100.0))
    q, k = torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    rq, rk = RotaryEmbedding(8, 100.0, two_d=False)(q, k, 3, 4)
    angles = rope_angles(3, 4, 8, 100.0, False)
    torch.testing.assert_close(rq, apply_rotary(q, angles))
    torch.testing.assert_close(rk, apply_rotary(k, angles))
    bias = RelativePositionBias(3, 4, heads=2, slope=0.25)
    torch.testing.assert_close(bias(), relative_bias(distance_table(3, 4, 0.25).expand(2, -1, -1), 3, 4))
    torch.testing.assert_close(bias(5), bias()[:, 5])


def test_grid_picture_covers_the_patched_part():
    image = torch.rand(1, 3, 50, 70)
    picture, scale = grid_picture(image, 3, 4, 16, side=64)
    assert scale == 16 and picture.shape == (48, 64, 3)
    torch.testing.assert_close(picture, image[0, :, :48, :64].permute(1, 2, 0))


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 7\).*\(4, 7\)"):
        relative_bias(torch.zeros(4, 7), 3, 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_2d(2, 2, 6)
    with pytest.raises(ValueError, match=r"q \(4,\), k \(6,\)"):
        rotary_scores(torch.zeros(4), torch.zeros(6), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\(1, 12, 6\)"):
        SinusoidalPositionEmbedding(8)(torch.zeros(1, 12, 6), 3, 4)
