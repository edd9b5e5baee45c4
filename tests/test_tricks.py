"""The tricks operator through compute, one trick at a time, and what its panels DRAW against
computations written out here: the estimators' means, histograms and variance curve from the
same seeded draws by their formulas (2 z, f(z) (z - mu) / sigma^2); the soft and hard argmax of a
peak on a non-square image against a softmax written here, the window box, and the soft argmax
reaching the hard one when cold; the soft crop's mask against its formula, its edge arrows
against the per-edge gradients and those against central differences; the blurred delta's
centre and gradient maps against finite differences. The cores are tested in
test_functional_tricks.py."""

import math
import re

import numpy as np
import pytest
import torch

from backends.functional.tricks import blurred_delta, gaussian_lut
from backends.layers import complete
from backends.ops.tricks import Tricks
from backends.params import is_active, validate

H, W = 80, 120  # non-square
FLOAT_TOL = 1e-4  # float32 panels against float64 arithmetic here


def _compute(image=None, query=(50, 30), **values):
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)) if image is None else image
    with torch.no_grad():  # as the worker runs it; complete: with the panels that settle
        return complete(Tricks().compute(image, validate(Tricks.spec.params, values), query))


def test_each_trick_draws_its_panels_and_metrics():
    expected = {
        "reparameterization": ("Gradient estimates", "Mean of the estimates", "Variance against draws",
                               "The function and the draws"),
        "soft argmax": ("Softmax weights", "Soft and hard argmax", "Scores", "Error against temperature", "Border bias"),
        "soft crop": ("Soft crop mask", "Edge gradients", "Mask across the box", "Soft crop against sharpness",
                      "Gradient per edge"),
        "blurred delta": ("Blurred delta", "Gradient of the delta", "Kernel profile", "Score as the point moves"),
    }
    for trick, names in expected.items():
        result = _compute(trick=trick)
        assert result.names == names + ("Metrics",), trick
        assert any(k.endswith(" ms") for k in result.layer("Metrics").values)
    assert Tricks.spec.primary == expected["reparameterization"][0]


# -- reparameterization ------------------------------------------------------------------------------

MU, SIGMA, N, SEED = 0.6, 0.8, 2000, 11


def _draws() -> torch.Tensor:
    return torch.randn(N, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)


def test_the_means_drawn_are_the_formulas_on_the_seeded_draws():
    result = _compute(trick="reparameterization", function="square", mu=MU, sigma=SIGMA, samples=N, seed=SEED)
    z = MU + SIGMA * _draws()
    reparam, score = 2 * z, z * z * (z - MU) / SIGMA**2
    bars = result.layer("Mean of the estimates")
    assert bars.labels == ("reparameterization", "score function", "closed form")
    np.testing.assert_allclose(bars.series["d/dmu E[f(z)]"], [float(reparam.mean()), float(score.mean()), 2 * MU],
                               rtol=1e-9)
    se = float(reparam.std()) / math.sqrt(N)
    assert abs(float(reparam.mean()) - 2 * MU) < 4 * se  # and unbiased, for this seed
    curve = result.layer("Variance against draws")
    sizes, var = curve.series["reparameterization"]
    assert list(sizes) == [2**k for k in range(len(sizes))] and sizes[-1] * 8 <= N
    for size, v in zip(sizes, var):
        means = reparam[: (N // int(size)) * int(size)].view(-1, int(size)).mean(1)
        assert v == pytest.approx(float(means.var()), rel=1e-9)


def test_the_histograms_hold_every_reparameterized_draw_and_mark_the_closed_form():
    result = _compute(trick="reparameterization", function="bump", mu=MU, sigma=SIGMA, samples=N, seed=SEED)
    series = result.layer("Gradient estimates").series
    _, reparam = series["reparameterization"]
    _, score = series["score function"]
    assert sum(reparam) == pytest.approx(100.0, abs=1e-6)
    assert 97.5 <= sum(score) <= 100.0 + 1e-9  # the outer 2% of the score function left out
    x, _ = series["closed form"]
    v = 1 + SIGMA**2  # E[exp(-z^2 / 2)] = exp(-mu^2 / 2v) / sqrt(v); its derivative in mu:
    truth = -MU / v * math.exp(-MU * MU / (2 * v)) / math.sqrt(v)
    assert x[0] == x[1] == pytest.approx(truth, rel=1e-9)


def test_a_step_leaves_the_reparameterized_estimator_flat():
    result = _compute(trick="reparameterization", function="step", mu=MU, sigma=SIGMA, samples=N, seed=SEED)
    bars = result.layer("Mean of the estimates").series["d/dmu E[f(z)]"]
    assert bars[0] == 0.0 and bars[2] > 0.3 and abs(bars[1] - bars[2]) < 0.1
    assert "reparameterization" not in result.layer("Variance against draws").series  # all 0: nothing on log axes
    centres, share = result.layer("Gradient estimates").series["reparameterization"]
    assert share.max() == pytest.approx(100.0) and abs(centres[int(share.argmax())]) <= np.diff(centres)[0]


# -- soft argmax ---------------------------------------------------------------------------------------

PEAK = (71, 24)  # x, y of the brightest pixel


def _peak_image() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((xs - PEAK[0]) ** 2 + (ys - PEAK[1]) ** 2) / (2 * 5.0**2))
    noise = torch.rand(H, W, generator=torch.Generator().manual_seed(3)) * 0.05
    return (0.9 * blob + noise).clamp(0, 1).expand(1, 3, H, W).contiguous()


def test_soft_and_hard_argmax_are_drawn_where_the_softmax_written_here_puts_them():
    image, t, query = _peak_image(), 0.1, (66, 30)
    result = _compute(image, query, trick="soft argmax", temperature=t, window=32)
    x0, y0 = 66 - 16, 30 - 16
    box = result.layer("Soft and hard argmax").boxes[0]
    assert box == (float(x0), float(y0), 32.0, 32.0)
    scores = image[0, 0, y0: y0 + 32, x0: x0 + 32].double().numpy()  # a grey image: luma = any channel
    weights = np.exp((scores - scores.max()) / t)
    weights /= weights.sum()
    ys, xs = np.mgrid[0:32, 0:32]
    soft = (x0 + (weights * xs).sum(), y0 + (weights * ys).sum())
    sets = result.layer("Soft and hard argmax").sets
    hard_drawn = np.asarray(sets[0].points)[0]
    soft_drawn = np.asarray(sets[1].points)[0]
    iy, ix = np.unravel_index(scores.argmax(), scores.shape)
    np.testing.assert_allclose(hard_drawn, [x0 + ix, y0 + iy])
    assert abs(hard_drawn[0] - PEAK[0]) <= 1 and abs(hard_drawn[1] - PEAK[1]) <= 1
    np.testing.assert_allclose(soft_drawn, soft, atol=FLOAT_TOL)


def test_cold_soft_argmax_reaches_the_hard_one():
    result = _compute(_peak_image(), (66, 30), trick="soft argmax", temperature=0.002, window=32)
    sets = result.layer("Soft and hard argmax").sets
    assert np.abs(np.asarray(sets[0].points) - np.asarray(sets[1].points)).max() < 0.05
    temps, gaps = result.layer("Error against temperature").series["|soft - hard| (px)"]
    assert gaps[0] < 0.01 and gaps[-1] > 1.0 and temps[0] < temps[-1]


def test_a_large_window_brings_the_temperature_sweep_when_it_settles():
    image = torch.rand(1, 3, 200, 210, generator=torch.Generator().manual_seed(5))
    op = Tricks()
    with torch.no_grad():
        first = op.compute(image, validate(Tricks.spec.params, {"trick": "soft argmax", "window": 512}), (100, 90))
        assert first.pending == ("Error against temperature",) and "Error against temperature" not in first.names
        full = complete(first)
        assert full.names[3] == "Error against temperature"
        warmer = op.compute(image, validate(Tricks.spec.params, {"trick": "soft argmax", "window": 512,
                                                                 "temperature": 0.3}), (100, 90))
    assert warmer.settle is None and "Error against temperature" in warmer.names  # the sweep is cached


def test_the_border_bias_pulls_a_peak_at_the_edge_inward():
    bias = _compute(trick="soft argmax", temperature=0.2, window=64).layer("Border bias").series
    for dist, err in bias.values():
        assert err[0] > 0 and abs(err[-1]) < 1e-6 and dist[0] == 0  # inward at the edge, none at the middle
    warm = [err[0] for _, err in bias.values()]
    assert warm[0] < warm[1] < warm[2]  # half, the chosen, twice the temperature


# -- soft crop ----------------------------------------------------------------------------------------

def test_the_mask_drawn_is_the_boxcar_formula_around_the_click():
    k, q = 0.7, (50, 30)
    result = _compute(None, q, trick="soft crop", box_width=40, box_height=24, sharpness=k)
    mask = np.asarray(result.layer("Soft crop mask").maps, np.float64)
    x0, y0, x1, y1 = 29.5, 17.5, 69.5, 41.5  # pixel centres 30..69 and 18..41 inside: 40 x 24 of them
    assert result.layer("Soft crop mask").boxes == ((30.0, 18.0, 40.0, 24.0),)

    def sig(v):
        return 1 / (1 + math.exp(-v))
    for y, x in ((30, 50), (18, 40), (31, 69), (5, 100), (41, 30)):
        expected = (sig(k * (x - x0)) - sig(k * (x - x1))) * (sig(k * (y - y0)) - sig(k * (y - y1)))
        assert mask[y, x] == pytest.approx(expected, abs=FLOAT_TOL)


def test_edge_arrows_add_up_to_the_edge_gradients_which_match_central_differences():
    result = _compute(None, (50, 30), trick="soft crop", box_width=40, box_height=24, sharpness=0.7)
    bars = result.layer("Gradient per edge")
    assert bars.labels == ("left edge", "top edge", "right edge", "bottom edge")
    np.testing.assert_allclose(bars.series["autograd"], bars.series["finite differences"], rtol=1e-3, atol=1e-7)
    arrows = result.layer("Edge gradients")
    origins, vectors = np.asarray(arrows.origins, np.float64), np.asarray(arrows.vectors, np.float64)
    per_edge = len(origins) // 4
    left, top, right, bottom = (slice(i * per_edge, (i + 1) * per_edge) for i in range(4))
    assert np.all(vectors[left, 1] == 0) and np.all(vectors[top, 0] == 0)
    assert np.ptp(origins[left, 0]) == 0 and np.ptp(origins[top, 1]) == 0
    assert origins[right, 0][0] - origins[left, 0][0] == pytest.approx(40.0)  # the box's width apart
    assert origins[bottom, 1][0] - origins[top, 1][0] == pytest.approx(24.0)
    sums = [vectors[left, 0].sum(), vectors[top, 1].sum(), vectors[right, 0].sum(), vectors[bottom, 1].sum()]
    np.testing.assert_allclose(sums, bars.series["autograd"], rtol=1e-4, atol=1e-8)


def test_the_soft_crop_mean_goes_to_the_hard_crop_mean():
    series = _compute(trick="soft crop", box_width=40, box_height=24).layer("Soft crop against sharpness").series
    sharp, means = series["soft crop mean"]
    hard = series["hard crop mean"][1][0]
    assert abs(means[-1] - hard) < 1e-4 < abs(means[0] - hard)


# -- blurred delta ------------------------------------------------------------------------------------

def test_the_blurred_delta_is_centred_on_the_sub_pixel_point():
    q = (50, 30)
    result = _compute(None, q, trick="blurred delta", blur_sigma=1.2, phases="32", subpixel_x=0.3, subpixel_y=0.7)
    layer = result.layer("Blurred delta")
    drawn = np.asarray(layer.maps, np.float64)
    ex, ey, ew, eh = layer.extent
    assert drawn.shape == (int(eh), int(ew))
    ys, xs = np.mgrid[0: drawn.shape[0], 0: drawn.shape[1]]
    centre = ((drawn * (ex + xs)).sum() / drawn.sum(), (drawn * (ey + ys)).sum() / drawn.sum())
    np.testing.assert_allclose(centre, (50.3, 30.7), atol=0.01)


def test_the_gradient_maps_are_finite_differences_of_the_drawing():
    q, sigma, phases, sx, sy = (50, 30), 1.0, 8, 0.41, 0.27
    layer = _compute(None, q, trick="blurred delta", blur_sigma=sigma, phases=str(phases), subpixel_x=sx,
                     subpixel_y=sy).layer("Gradient of the delta")
    maps = np.asarray(layer.maps, np.float64)
    assert layer.labels == ("d / d x", "d / d y")
    table, radius = gaussian_lut(sigma, phases)
    side = maps.shape[-1]
    local = torch.tensor([[radius + 3 + sx, radius + 3 + sy]], dtype=torch.float64)  # the point in the drawn patch
    h = 1e-5
    for i in range(2):
        d = torch.zeros(1, 2, dtype=torch.float64)
        d[0, i] = h
        numeric = (blurred_delta(local + d, side, side, table, phases, radius)
                   - blurred_delta(local - d, side, side, table, phases, radius))[0] / (2 * h)
        np.testing.assert_allclose(maps[i], numeric.numpy(), atol=1e-5)
    assert maps[0].max() > 0 > maps[0].min()  # a dipole


def test_the_score_gradient_matches_finite_differences_and_the_rounded_point_steps():
    result = _compute(trick="blurred delta", heatmap="brightness")
    rows = result.layer("Metrics").values

    def pair(text):
        return [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?", text)]
    np.testing.assert_allclose(pair(rows["score gradient (autograd)"]), pair(rows["score gradient (finite differences)"]),
                               rtol=1e-3, atol=1e-6)
    series = result.layer("Score as the point moves").series
    shifts, rounded = series["rounded point"]
    assert len(np.unique(np.round(rounded, 6))) <= 5  # steps: one value per nearest pixel
    _, smooth = series["blurred delta"]
    assert len(np.unique(np.round(smooth, 6))) > 100


def test_parameters_say_when_they_act():
    specs = {p.name: p for p in Tricks.spec.params}
    values = validate(Tricks.spec.params, {})
    for trick, own in (("reparameterization", "mu"), ("soft argmax", "temperature"), ("soft crop", "sharpness"),
                       ("blurred delta", "phases")):
        here = {**values, "trick": trick}
        assert is_active(specs[own], here)
        others = [n for n in ("mu", "temperature", "sharpness", "phases") if n != own]
        assert not any(is_active(specs[n], here) for n in others)
    assert is_active(specs["heatmap"], {**values, "trick": "blurred delta"})
    assert not is_active(specs["heatmap"], {**values, "trick": "soft crop"})
