"""The position embeddings operator through compute: its layers, and what each panel draws against
computations written out here with numpy, on a non-square grid with an asymmetric click (a
transposed grid or a swapped x and y would miss): the sinusoidal similarity at a base that is not
10000, the relative distance decay, rotary scores that move with the click, the learned table
from its seed, the distance curve, the frequencies and the table. The cores are tested in
test_functional_position.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backends.ops.position_embeddings import SCHEMES, PositionEmbeddings
from backends.params import is_active, validate

H, W, PATCH = 96, 160, 16  # a 6 x 10 grid
ROWS, COLS = H // PATCH, W // PATCH
CLICK = (7 * PATCH + 3, 2 * PATCH + 9)  # token in row 2, column 7
QI = 2 * COLS + 7


def _compute(query=CLICK, **values):
    op = PositionEmbeddings()
    torch.manual_seed(0)
    image = torch.rand(1, 3, H, W)
    with torch.no_grad():
        return op.compute(image, validate(PositionEmbeddings.spec.params, {"patch": PATCH, **values}), query)


def _sin_table(positions: np.ndarray, dim: int, base: float) -> np.ndarray:
    k = np.arange(dim // 2)
    angles = positions[:, None] * base ** (-2 * k / dim)[None]
    out = np.empty((len(positions), dim))
    out[:, 0::2], out[:, 1::2] = np.sin(angles), np.cos(angles)
    return out


def _similarity(name: str, **values) -> np.ndarray:
    return np.asarray(_compute(scheme=name, **values).layer("Similarity").maps, np.float64)


def test_layers_and_placement():
    result = _compute()
    assert result.names == ("Similarity", "All schemes", "Similarity vs distance", "Frequencies", "Embedding table",
                            "Metrics")
    assert PositionEmbeddings.spec.primary == "Similarity"
    sim = result.layer("Similarity")
    assert sim.maps.shape == (ROWS, COLS) and sim.extent == (0.0, 0.0, float(W), float(H)) and sim.focus is None
    assert sim.boxes == ((7 * PATCH, 2 * PATCH, float(PATCH), float(PATCH)),)
    assert result.layer("Metrics").values["clicked token"] == f"{QI} (row 2, column 7)"
    assert result.layer("All schemes").maps.shape[0] == len(SCHEMES)


def test_1d_sinusoidal_dot_products_at_a_base_of_300():
    table = _sin_table(np.arange(ROWS * COLS, dtype=np.float64), 16, 10 ** 2.5)
    drawn = _similarity("sinusoidal-1d", similarity="dot", dim="16", base_log10=2.5)
    np.testing.assert_allclose(drawn, (table @ table[QI]).reshape(ROWS, COLS), atol=1e-5)


def test_2d_sinusoidal_cosine_gives_x_and_y_each_half():
    ys, xs = np.divmod(np.arange(ROWS * COLS), COLS)
    table = np.concatenate([_sin_table(xs.astype(float), 16, 100.0), _sin_table(ys.astype(float), 16, 100.0)], 1)
    cos = table @ table[QI] / (np.linalg.norm(table, axis=1) * np.linalg.norm(table[QI]))
    np.testing.assert_allclose(_similarity("sinusoidal-2d", similarity="cosine", dim="32", base_log10=2.0),
                               cos.reshape(ROWS, COLS), atol=1e-5)


def test_relative_distance_decay_is_minus_slope_times_distance():
    ys, xs = np.mgrid[0:ROWS, 0:COLS]
    expected = -0.75 * np.hypot(xs - 7, ys - 2)
    np.testing.assert_allclose(_similarity("relative", slope=0.75), expected, atol=1e-5)


def test_rotary_maps_move_with_the_click():
    """Scores depend on the offset alone: the map from a click one row down and two columns right
    is the first map shifted by the same, where both are defined (separate q and k, 2-D)."""
    kw = dict(rotary_content="separate q and k", dim="16", base_log10=1.5)
    a = _similarity("rotary-2d", **kw)
    b = np.asarray(_compute(query=(9 * PATCH + 1, 3 * PATCH + 1), scheme="rotary-2d", **kw).layer("Similarity").maps)
    np.testing.assert_allclose(b[1:, 2:], a[:-1, :-2], atol=1e-4)
    assert np.abs(b - a).max() > 1e-2


def test_rotary_shared_content_is_a_weighted_sinusoid_of_the_offset():
    """q = k: q_m.k_n = sum over pairs of |q_pair|^2 cos((n - m) w_pair), 1-D over the raster index."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(16, generator=g).double().numpy()
    weights = q[0::2] ** 2 + q[1::2] ** 2
    w = 100.0 ** (-2 * np.arange(8) / 16)
    offsets = np.arange(ROWS * COLS) - QI
    expected = (weights[None] * np.cos(offsets[:, None] * w[None])).sum(1)
    drawn = _similarity("rotary-1d", similarity="dot", dim="16", base_log10=2.0, seed=4)
    np.testing.assert_allclose(drawn, expected.reshape(ROWS, COLS), atol=1e-4)


def test_learned_random_is_reproducible_from_its_seed():
    a, b = _similarity("learned-random", seed=3), _similarity("learned-random", seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - _similarity("learned-random", seed=4)).max() > 1e-2


def test_the_distance_curve_is_the_map_grouped_by_distance():
    result = _compute(scheme="sinusoidal-2d")
    drawn = np.asarray(result.layer("Similarity").maps, np.float64)
    ys, xs = np.mgrid[0:ROWS, 0:COLS]
    dist = np.rint(np.hypot(xs - 7, ys - 2)).astype(int)
    curve = result.layer("Similarity vs distance")
    assert curve.x_label == "distance (tokens)"
    d, mean = curve.series["mean"]
    assert list(d) == sorted(set(dist.ravel()))
    np.testing.assert_allclose(mean, [drawn[dist == k].mean() for k in sorted(set(dist.ravel()))], atol=1e-5)
    np.testing.assert_allclose(curve.series["lowest"][1], [drawn[dist == k].min() for k in sorted(set(dist.ravel()))],
                               atol=1e-6)


def test_the_frequencies_are_the_wavelengths_of_each_pair():
    curve = _compute(dim="32", base_log10=3.0).layer("Frequencies")
    x, y = curve.series["1-D"]
    np.testing.assert_allclose(y, 2 * math.pi * 1000.0 ** (2 * np.arange(16) / 32), rtol=1e-6)
    np.testing.assert_allclose(curve.series["2-D (per axis)"][1], 2 * math.pi * 1000.0 ** (2 * np.arange(8) / 16),
                               rtol=1e-6)
    assert curve.log_y and list(curve.series["grid width"][1]) == [COLS, COLS]


def test_the_table_panel_draws_dims_by_position_or_the_bias_by_offset():
    table = np.asarray(_compute(scheme="sinusoidal-1d", dim="8", base_log10=2.0).layer("Embedding table").image)
    np.testing.assert_allclose(table, _sin_table(np.arange(ROWS * COLS, dtype=float), 8, 100.0).T, atol=1e-6)
    bias = _compute(scheme="relative", slope=1.0).layer("Embedding table")
    assert bias.image.shape == (2 * ROWS - 1, 2 * COLS - 1) and float(bias.image[ROWS - 1, COLS - 1]) == 0.0
    assert bias.axis_titles[0].startswith("offset dx")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_scales_its_mosaic_tile_to_0_1(scheme):
    result = _compute(scheme=scheme, similarity="dot")
    tiles = np.asarray(result.layer("All schemes").maps)
    assert tiles.min() >= 0.0 and tiles.max() <= 1.0 and tiles.reshape(len(SCHEMES), -1).max(1).min() == 1.0
    lo, hi = result.layer("Similarity").levels
    assert lo < hi


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in PositionEmbeddings.spec.params}
    rel = validate(PositionEmbeddings.spec.params, {"scheme": "relative"})
    assert not is_active(by_name["similarity"], rel) and not is_active(by_name["base_log10"], rel)
    assert is_active(by_name["slope"], rel) and not is_active(by_name["rotary_content"], rel)
    rot = validate(PositionEmbeddings.spec.params, {"scheme": "rotary-2d"})
    assert is_active(by_name["rotary_content"], rot) and is_active(by_name["seed"], rot)
    sin = validate(PositionEmbeddings.spec.params, {"scheme": "sinusoidal-1d"})
    assert not is_active(by_name["seed"], sin) and is_active(by_name["base_log10"], sin)
