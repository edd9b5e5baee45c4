"""The efficient attention operator through compute and its Measure job: its layers, and what each
panel draws against computations written out here from the tokens of ``backends.features`` on a
non-square grid with an asymmetric click: full attention's map as the softmax of -|f_i - f_j|^2 / T,
linear attention's implied weights, the window map confined to the clicked patch's block, zero
difference for a window that covers the grid, the channel matrix, the estimated and measured
cost curves (sizes over the memory budget skipped and said so), and the full-matrix panels
settling on large grids. The cores are tested in test_functional_efficient_attention.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.features import TOKEN_LABELS, make_tokens, pixel_features
from backends.functional.efficient_attention import multiply_adds
from backends.layers import complete
from backends.ops._efficient_attention_panels import COST_DIM, SIZES
from backends.ops.efficient_attention import EfficientAttention
from backends.params import validate

H, W, PATCH = 96, 176, 16  # a 6 x 11 grid
ROWS, COLS = H // PATCH, W // PATCH
CLICK = (8 * PATCH + 5, 1 * PATCH + 2)  # row 1, column 8
QI = 1 * COLS + 8


def _image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(1, 3, H, W)


def _compute(op=None, image=None, query=CLICK, **values):
    op = op or EfficientAttention()
    with torch.no_grad():
        return op.compute(_image() if image is None else image,
                          validate(EfficientAttention.spec.params, {"patch": PATCH, **values}), query)


def _tiles(layer) -> np.ndarray:
    """Each map of a multi-map panel at one value per token (the panel upscales tokens to blocks)."""
    maps = np.asarray(layer.maps)
    scale = maps.shape[1] // ROWS
    return maps[:, ::scale, ::scale].reshape(len(maps), -1)


def _features() -> np.ndarray:
    pixels, scale = pixel_features(_image())
    return make_tokens(pixels, scale, PATCH, ROWS, COLS).f.double().numpy()


def _others_max_scaled(w: np.ndarray, index: int) -> np.ndarray:
    return np.minimum(w / np.delete(w, index).max(), 1.0)


def test_layers_primary_and_metrics():
    result = _compute()
    assert result.names == ("Attention maps", "Difference from full", "Outputs", "Channel attention", "Cost vs tokens",
                            "Metrics")
    assert EfficientAttention.spec.primary == "Attention maps"
    metrics = result.layer("Metrics").values
    assert metrics["tokens"] == f"{ROWS} x {COLS} = {ROWS * COLS}"
    assert metrics["clicked token"] == f"{QI} (row 1, column 8)"
    assert {"linear: difference from full", "window: difference from full", "full softmax: weights memory"} <= set(metrics)


def test_the_full_map_is_the_gaussian_softmax_of_the_features():
    f = _features()
    for t in (0.5, 3.0):
        logits = -((f - f[QI]) ** 2).sum(1) / t
        w = np.exp(logits - logits.max())
        w /= w.sum()
        drawn = _tiles(_compute(temperature=t).layer("Attention maps"))[0]
        np.testing.assert_allclose(drawn, _others_max_scaled(w, QI), atol=2e-5)


def test_the_linear_map_is_its_implied_weights():
    f, t = _features(), 2.0
    c = 1 / np.sqrt(t)
    q = np.concatenate([2 * f, -np.ones((len(f), 1))], 1) * c
    k = np.concatenate([f, (f**2).sum(1, keepdims=True)], 1) * c

    def phi(x):
        return np.where(x > 0, x + 1, np.exp(x))

    s = phi(k) @ phi(q[QI])
    drawn = _tiles(_compute(temperature=t).layer("Attention maps"))[1]
    np.testing.assert_allclose(drawn, _others_max_scaled(s / s.sum(), QI), atol=2e-5)


def test_the_window_map_stays_inside_the_clicked_patchs_block():
    drawn = _tiles(_compute(window=4).layer("Attention maps"))[2].reshape(ROWS, COLS)
    inside = np.zeros((ROWS, COLS), bool)
    inside[0:4, 8:11] = True  # rows 0-3, columns 8-10: the block of (row 1, column 8), cut by the grid's edge
    assert (drawn[~inside] == 0).all() and (drawn[inside] > 0).all()


def test_a_window_covering_the_grid_makes_no_difference():
    result = _compute(window=16)
    diff = _tiles(result.layer("Difference from full"))
    assert diff[1].max() < 1e-5 and diff[0].max() > 1e-2
    assert result.layer("Metrics").values["window: difference from full"] == "0.0%"


def test_the_difference_panel_is_the_output_gap_over_full_attentions_size():
    f, t = _features(), 2.0
    logits = -((f[:, None] - f[None]) ** 2).sum(-1) / t
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    full = w @ f
    channel_logits = (f / np.linalg.norm(f, axis=0)).T @ (f / np.linalg.norm(f, axis=0)) / 0.1
    a = np.exp(channel_logits - channel_logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    channel = f @ a.T
    expected = np.linalg.norm(channel - full, axis=1) / np.linalg.norm(full, axis=1).mean()
    result = _compute(temperature=t, channel_temperature=0.1)
    np.testing.assert_allclose(_tiles(result.layer("Difference from full"))[2], expected, atol=1e-4)
    np.testing.assert_allclose(np.asarray(result.layer("Channel attention").image), a, atol=1e-5)


def test_the_channel_matrix_names_the_features():
    layer = _compute().layer("Channel attention")
    assert layer.row_labels == TOKEN_LABELS == layer.column_labels
    np.testing.assert_allclose(np.asarray(layer.image).sum(1), 1.0, atol=1e-5)


def test_before_measuring_the_cost_panel_is_the_estimate():
    curve = _compute(window=4).layer("Cost vs tokens")
    assert curve.log_x and curve.log_y and "estimated" in curve.y_label
    x, y = curve.series["full softmax"]
    np.testing.assert_array_equal(x, SIZES)
    np.testing.assert_allclose(y, [multiply_adds("full", n, COST_DIM) / 1e6 for n in SIZES])
    np.testing.assert_allclose(curve.series["window"][1], [multiply_adds("window", n, COST_DIM, 4) / 1e6 for n in SIZES])


def test_measure_times_every_method_and_skips_what_passes_the_budget():
    """A 16 MiB budget: full attention's 2048^2 x 4 bytes = 16 MiB fits, 4096 tokens' 64 MiB does
    not. The job is stopped (closed) once it has skipped, as Stop would."""
    op = EfficientAttention()
    image = _image()
    params = validate(EfficientAttention.spec.params, {"patch": PATCH, "memory_budget_mib": 16, "window": 4})
    job = op.start("measure", image, params, CLICK)
    updates = []
    for update in job:
        updates.append(update)
        if "skipped" in update.message:
            break
    job.close()
    progress = [u.progress for u in updates]
    assert progress == sorted(progress) and 0 < progress[-1] < 1
    assert updates[-1].message == "full softmax at 4,096 tokens skipped: 64 MiB of weights"
    assert any(u.result is not None for u in updates)
    with torch.no_grad():
        curve = complete(op.compute(image, params, CLICK)).layer("Cost vs tokens")
    assert curve.y_label == "time (ms)" and curve.log_x and curve.log_y
    measured = [n for n in SIZES if n <= 2048]
    assert list(curve.series["full softmax"][0]) == measured
    for name in ("linear", "window", "channel"):
        assert list(curve.series[name][0]) == measured and (curve.series[name][1] > 0).all()
    assert "Full softmax skipped from 4,096 tokens (64 MiB of weights, over the 16 MiB budget)" in curve.caption
    op.reset_state()
    with torch.no_grad():
        assert "estimated" in complete(op.compute(image, params, CLICK)).layer("Cost vs tokens").y_label


def test_large_grids_draw_the_maps_first_and_settle_the_outputs():
    op = EfficientAttention()
    image = torch.rand(1, 3, 280, 296)  # patch 8: 35 x 37 = 1295 tokens
    with torch.no_grad():
        first = _compute(op, image, (100, 60), patch=8)
        assert first.settle is not None and "Difference from full" in first.pending
        assert "Attention maps" in first.names and "Outputs" not in first.names
        done = complete(first)
        assert {"Difference from full", "Outputs", "Channel attention"} <= set(done.names)
        again = _compute(op, image, (40, 200), patch=8)  # a click: the outputs are cached
    assert again.settle is None and "Outputs" in again.names


@pytest.mark.parametrize("feature_map", ["elu+1", "relu"])
def test_outputs_are_colours_in_range(feature_map):
    image = np.asarray(_compute(feature_map=feature_map).layer("Outputs").image)
    assert image.min() >= 0 and image.max() <= 1 and image.shape[2] == 3


def test_sdpa_is_what_the_full_output_uses():
    """The full output the differences start from equals an explicit softmax(q k^T) v."""
    f = torch.from_numpy(_features())
    c = 1 / np.sqrt(2.0)
    q = torch.cat([2 * f, -torch.ones(len(f), 1, dtype=f.dtype)], 1)[None, None] * c
    k = torch.cat([f, (f**2).sum(1, keepdim=True)], 1)[None, None] * c
    explicit = torch.softmax(q @ k.transpose(-1, -2), -1) @ f[None, None]
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, f[None, None], scale=1.0), explicit)
