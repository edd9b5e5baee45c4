"""The feature statistics operator through compute: its layers, and what each panel draws against
computations written out here with numpy: the covariance panels (np.cov of the reduced image),
the aligned pixels (A (x - mu_s) + mu_t with A = C_t^(1/2) C_s^(-1/2) from numpy's eigh, which a
transposed A would miss), the CORAL distances from the drawn matrices, the identity at strength 0,
the target's own picture, and alignment to the very image the input is. The cores are tested in
test_functional_statistics.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.imaging import resize_long_side
from backends.ops.feature_statistics import BANK_NAMES, STATS_SIDE, TARGET_SIDE, FeatureStatistics, load_sample
from backends.params import validate

PIXEL_TOL = 2e-5  # float32 colours through a 3 x 3 map
COV_TOL = 1e-6  # float32 covariances of [0, 1] colours, which are about 1e-2


def _compute(image, **values):
    op = FeatureStatistics()
    with torch.no_grad():
        return op.compute(image, validate(FeatureStatistics.spec.params, values), None)


def _image(seed: int = 0, h: int = 96, w: int = 160) -> torch.Tensor:
    """Smooth colour ramps with unequal channel mixes: a full-rank colour covariance."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xs, ys, (xs * ys) ** 0.5])
    mix = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    noise = 0.05 * torch.rand(3, h, w, generator=g)
    return (torch.einsum("ij,jhw->ihw", mix, base) + noise).clamp(0, 1)[None]


def _np_root(c: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(c)
    return (vectors * values**power) @ vectors.T


def _stats(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and covariance (3, 3) of the image at the statistics side, by numpy."""
    small = resize_long_side(image, STATS_SIDE)[0].double().numpy().reshape(3, -1)
    return small.mean(1), np.cov(small)


def test_layers_and_metrics():
    result = _compute(_image())
    assert result.names == ("Aligned", "Target", "Input covariance", "Target covariance", "Aligned covariance", "Metrics")
    assert FeatureStatistics.spec.primary == "Aligned"
    metrics = result.layer("Metrics").values
    assert {"CORAL distance before", "CORAL distance after", "statistics ms", "align ms"} <= set(metrics)
    assert result.layer("Input covariance").row_labels == ("red", "green", "blue")
    assert result.layer("Input covariance").column_labels == ("red", "green", "blue")


def test_the_input_covariance_panel_is_np_cov_of_the_reduced_image():
    image = _image(1)
    drawn = np.asarray(_compute(image).layer("Input covariance").image)
    np.testing.assert_allclose(drawn, _stats(image)[1], atol=COV_TOL)


def test_the_aligned_pixels_are_the_coral_map_of_each_colour():
    """Night-blue target, no regularization: every pixel x becomes A (x - mu_s) + mu_t (clipped)."""
    image = _image(2)
    result = _compute(image, target="copy: night blue", regularization=0.0)
    mu_s, c_s = _stats(image)
    target = torch.from_numpy(np.asarray(result.layer("Target").image)).permute(2, 0, 1)[None]
    mu_t, c_t = _stats(target)
    a = _np_root(c_t, 0.5) @ _np_root(c_s, -0.5)
    assert np.abs(a - a.T).max() > 1e-2  # the transposed twin would draw other colours
    x = image[0].double().numpy().reshape(3, -1)
    expected = np.clip(a @ (x - mu_s[:, None]) + mu_t[:, None], 0, 1).T.reshape(image.shape[2], image.shape[3], 3)
    np.testing.assert_allclose(np.asarray(result.layer("Aligned").image), expected, atol=PIXEL_TOL)


def test_after_full_alignment_the_covariance_is_the_targets():
    result = _compute(_image(3), target="copy: sepia", regularization=0.0)
    aligned, target = (np.asarray(result.layer(n).image) for n in ("Aligned covariance", "Target covariance"))
    np.testing.assert_allclose(aligned, target, atol=COV_TOL)
    assert float(result.layer("Metrics").values["CORAL distance after"]) < 1e-10
    assert float(result.layer("Metrics").values["CORAL distance before"]) > 1e-6


def test_the_distances_are_the_formula_on_the_drawn_matrices():
    result = _compute(_image(4), target="copy: red and blue swapped")
    c_s, c_t, c_a = (np.asarray(result.layer(n).image, np.float64)
                     for n in ("Input covariance", "Target covariance", "Aligned covariance"))
    metrics = result.layer("Metrics").values
    assert float(metrics["CORAL distance before"]) == pytest.approx(((c_s - c_t) ** 2).sum() / 36, rel=1e-2)
    assert float(metrics["CORAL distance after"]) == pytest.approx(((c_a - c_t) ** 2).sum() / 36, rel=1e-2, abs=1e-12)


def test_strength_zero_keeps_the_input():
    image = _image(5)
    result = _compute(image, target="copy: sepia", strength=0.0)
    np.testing.assert_allclose(np.asarray(result.layer("Aligned").image), image[0].permute(1, 2, 0).numpy(), atol=1e-6)
    metrics = result.layer("Metrics").values
    assert metrics["CORAL distance before"] == metrics["CORAL distance after"]


def test_the_covariance_panels_share_one_symmetric_scale():
    result = _compute(_image(6), target="sample: coffee")
    levels = {result.layer(n).levels for n in ("Input covariance", "Target covariance", "Aligned covariance")}
    assert len(levels) == 1
    lo, hi = levels.pop()
    assert lo == -hi and hi == pytest.approx(max(float(np.abs(np.asarray(result.layer(n).image)).max())
                                                 for n in ("Input covariance", "Target covariance", "Aligned covariance")))


def test_a_sample_target_is_the_bundled_picture():
    drawn = np.asarray(_compute(_image(7), target="sample: chelsea").layer("Target").image)
    expected = resize_long_side(load_sample("chelsea"), TARGET_SIDE)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(drawn, expected, atol=1e-6)


def test_aligning_the_astronaut_to_its_own_sample_changes_nothing():
    image = load_sample("astronaut")
    result = _compute(image, target="sample: astronaut", regularization=0.0)
    assert float(result.layer("Metrics").values["CORAL distance before"]) < 1e-12
    np.testing.assert_allclose(np.asarray(result.layer("Aligned").image), image[0].permute(1, 2, 0).numpy(), atol=1e-4)


def test_filter_bank_features_label_24_channels_and_saturate_the_largest():
    result = _compute(_image(8), features="filter bank", target="sample: brick")
    layer = result.layer("Target covariance")
    assert layer.row_labels == BANK_NAMES and len(BANK_NAMES) == 24 == np.asarray(layer.image).shape[0]
    lo, hi = layer.levels
    assert lo == -hi and hi < float(np.abs(np.asarray(result.layer("Input covariance").image)).max())
    assert "saturate" in layer.caption
    assert result.layer("Metrics").values["features"].startswith("24 filter-bank")
