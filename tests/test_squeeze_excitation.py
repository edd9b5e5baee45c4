"""The squeeze-and-excitation operator: what its panels draw against an independent float64
computation (the bars against the excitation of the bank's channel means, the box and its
energy share on a non-square image with an asymmetric query), live training on the worker's
terms, and the interpretable feature bank it runs on."""

from __future__ import annotations

import math

import pytest
import torch

from backends.features import GABOR_ORIENTATIONS, feature_bank, orientation_histogram
from backends.functional.squeeze_excitation import se_init
from backends.imaging import luminance
from backends.ops.squeeze_excitation import (
    SqueezeExcitation,
    box_in,
    channel_energies,
    manual_weights,
    region_share,
)
from backends.params import is_active, validate

LAYERS = ("Features", "Recalibrated features", "Squeeze and excitation", "Recalibrated energy", "Training", "Metrics")
SQUEEZE, WEIGHT = "squeeze: channel mean", "excitation weight"  # the bars' series
BAR_TOL = dict(atol=1e-6, rtol=1e-5)  # float32 operator against a float64 MLP


def params_of(values: dict) -> dict:
    """Validated parameters, without importing every other operator module."""
    return validate(SqueezeExcitation.spec.params, values)


def stripes(height: int = 64, width: int = 64) -> torch.Tensor:
    """Left half: vertical black/white stripes, 8 px period; right half: flat orange."""
    xs = torch.arange(width, dtype=torch.float32)
    img = torch.empty(1, 3, height, width)
    img[..., :] = torch.tensor([0.9, 0.55, 0.2])[:, None, None]
    wave = 0.5 + 0.5 * torch.cos(2 * math.pi * xs / 8)
    img[..., : width // 2] = wave[: width // 2].expand(3, height, -1)
    return img


def share(value: str) -> float:
    return float(value.rstrip("%")) / 100


# -- what the panels draw ---------------------------------------------------------------------------
H, W = 191, 320  # the bank runs at 153 x 256, the mosaic at 76 x 128: no whole ratio
QUERY, REGION = (250, 40), 64  # x, y: the upper right, over the flat orange


def naive_excitation(z: torch.Tensor, w1, b1, w2, b2) -> torch.Tensor:
    """sigmoid(fc2(relu(fc1(z)))) for one squeeze (C,), unit by unit in float64."""
    z, w1, b1, w2, b2 = (t.double() for t in (z, w1, b1, w2, b2))
    hidden = [max(0.0, float(w1[k] @ z + b1[k])) for k in range(w1.shape[0])]
    return torch.tensor([1 / (1 + math.exp(-(sum(float(w2[c, k]) * hidden[k] for k in range(len(hidden)))
                                               + float(b2[c])))) for c in range(w2.shape[0])], dtype=torch.float64)


@pytest.fixture(scope="module")
def scene():
    torch.manual_seed(12)
    image = (0.8 * stripes(H, W) + 0.2 * torch.rand(1, 3, H, W)).clamp(0, 1)
    bank = feature_bank(image)
    return image, bank, bank.maps[0].double().mean((1, 2))  # the squeeze, from the bank's full maps


def test_bars_are_the_squeeze_and_the_excitation_of_the_seeded_mlp(scene):
    image, bank, z = scene
    with torch.no_grad():
        result = SqueezeExcitation().compute(image, params_of({"mode": "random", "seed": 5, "reduction": 3}), QUERY)
    bars = result.layer("Squeeze and excitation")
    assert bars.labels == bank.labels
    expected = naive_excitation(z, *se_init(24, 3, seed=5, gain=3.0))
    torch.testing.assert_close(torch.as_tensor(bars.series[SQUEEZE]).double(), z, **BAR_TOL)
    torch.testing.assert_close(torch.as_tensor(bars.series[WEIGHT]).double(), expected, **BAR_TOL)
    # The caption names the two channels kept most and the two damped most, in words.
    order = torch.argsort(expected, descending=True).tolist()
    kept, damped = bars.caption.split("kept most: ")[1].split("; damped most: ")
    assert kept.startswith(f"{bank.labels[order[0]]} ({float(expected[order[0]]):.2f}) and {bank.labels[order[1]]}")
    assert damped.startswith(f"{bank.labels[order[-1]]} ({float(expected[order[-1]]):.2f})")


def test_manual_bars_raise_the_named_orientation_at_every_octave(scene):
    image, bank, _ = scene
    with torch.no_grad():
        result = SqueezeExcitation().compute(image, params_of({"mode": "manual", "emphasis": "45° edges",
                                                               "strength": 1.0}), QUERY)
    weights = torch.as_tensor(result.layer("Squeeze and excitation").series[WEIGHT]).double()
    up = torch.tensor([label.startswith("45° diagonal, ") for label in bank.labels])
    assert int(up.sum()) == 4
    torch.testing.assert_close(weights[up], torch.full((4,), 1 / (1 + math.exp(-5.0)), dtype=torch.float64))
    torch.testing.assert_close(weights[~up], torch.full((20,), 1 / (1 + math.exp(5.0)), dtype=torch.float64))


def test_energy_panel_draws_the_energy_marks_the_box_and_states_the_box_share(scene):
    image, bank, _ = scene
    with torch.no_grad():
        result = SqueezeExcitation().compute(image, params_of({"mode": "random", "seed": 2, "region": REGION}), QUERY)
    weights = torch.as_tensor(result.layer("Squeeze and excitation").series[WEIGHT]).double()
    panel = result.layer("Recalibrated energy")
    # The box is REGION px centred on the query pixel's centre, grown outward to whole pixels.
    x0, y0 = math.floor(250.5 - 32), math.floor(40.5 - 32)
    assert panel.boxes == ((x0, y0, math.ceil(250.5 + 32) - x0, math.ceil(40.5 + 32) - y0),) == ((218, 8, 65, 65),)
    # The energy at the bank's resolution, placed on the whole input frame.
    energy = ((bank.maps[0].double() * weights[:, None, None]) ** 2).sum(0)
    torch.testing.assert_close(torch.as_tensor(panel.maps).double(), energy, rtol=1e-4, atol=1e-6)
    assert panel.extent == (0.0, 0.0, float(W), float(H))
    # The same box on the bank's 0.8-scale grid, and sum_c (w_c F_c)^2 inside it over everywhere.
    s = bank.maps.shape[-2] / H
    bx0, by0 = math.floor((250.5 - 32) * s), math.floor((40.5 - 32) * s)
    bx1, by1 = math.ceil((250.5 + 32) * s), math.ceil((40.5 + 32) * s)
    flat = (bank.maps[0].double() ** 2).sum(0)
    metrics = result.layer("Metrics").values
    assert share(metrics["box share after"]) == pytest.approx(float(energy[by0:by1, bx0:bx1].sum() / energy.sum()),
                                                              abs=5e-5)  # printed to 0.01 %
    assert share(metrics["box share before"]) == pytest.approx(float(flat[by0:by1, bx0:bx1].sum() / flat.sum()),
                                                               abs=5e-5)


def test_recalibrated_mosaic_is_features_times_weights():
    with torch.no_grad():
        result = SqueezeExcitation().compute(torch.rand(1, 3, 40, 52), params_of({"mode": "random", "seed": 5}), None)
    assert result.names == LAYERS
    feats = torch.as_tensor(result.layer("Features").maps)
    weights = torch.as_tensor(result.layer("Squeeze and excitation").series[WEIGHT])
    assert ((weights > 0) & (weights < 1)).all()
    torch.testing.assert_close(torch.as_tensor(result.layer("Recalibrated features").maps),
                               feats * weights[:, None, None])
    assert len(result.layer("Features").labels) == feats.shape[0] == 24
    assert result.layer("Recalibrated features").labels == result.layer("Features").labels


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in SqueezeExcitation.spec.params}
    manual = params_of({"mode": "manual"})
    assert [n for n in by_name if not is_active(by_name[n], manual)] == ["reduction", "seed", "init_gain", "steps", "lr"]
    random = params_of({"mode": "random"})
    assert [n for n in by_name if not is_active(by_name[n], random)] == ["emphasis", "strength", "steps", "lr"]
    assert all(is_active(spec, params_of({"mode": "learned"})) for n, spec in by_name.items()
               if n not in ("emphasis", "strength"))
    assert SqueezeExcitation.spec.primary == "Recalibrated features"


# -- helpers the panels and training share ----------------------------------------------------------
def test_manual_weights_follow_emphasis_and_strength():
    w = manual_weights(6, (1, 4), 1.0)
    assert ((w > 0) & (w < 1)).all()
    assert w[1] > 0.99 and w[4] > 0.99 and w[0] < 0.01
    assert torch.allclose(manual_weights(6, (1,), 0.0), torch.full((6,), 0.5))


def test_region_share_matches_the_energy_map():
    maps = torch.rand(1, 5, 20, 30)
    w = torch.rand(5)
    box = box_in((10, 8), 9, 30, 20)
    inside, total = channel_energies(maps, box)
    energy = ((maps[0] * w[:, None, None]) ** 2).sum(0)
    x0, y0, x1, y1 = box
    torch.testing.assert_close(region_share(w, inside, total), energy[y0:y1, x0:x1].sum() / energy.sum())


# -- the operator -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["learned", "random", "manual"])
def test_run_on_tiny_and_odd_images(mode):
    op = SqueezeExcitation()
    params = params_of({"mode": mode, "region": 8})
    with torch.no_grad():
        for h, w in ((1, 1), (5, 3), (17, 300)):
            assert op.compute(torch.rand(1, 3, h, w), params, (w + 5, -3)).names == LAYERS


def test_the_bank_is_computed_once_per_image():
    op = SqueezeExcitation()
    image = torch.rand(1, 3, 30, 40)
    with torch.no_grad():
        a = op.compute(image, params_of({"reduction": 2}), (3, 3), image_key="img")
        b = op.compute(image, params_of({"reduction": 6, "mode": "random"}), (30, 20), image_key="img")
    assert a.layer("Features").maps is b.layer("Features").maps


def test_training_raises_the_box_share_and_is_kept_as_state():
    op = SqueezeExcitation()
    image = stripes()
    params = params_of({"steps": 80, "lr": 0.05, "region": 24, "mode": "manual"})
    query = (16, 32)  # on the stripes
    torch.set_grad_enabled(False)  # a job must work whatever the caller's grad mode
    try:
        updates = list(op.start("train", image, params, query))
        assert not torch.is_grad_enabled(), "training must not leave grad mode on between steps"
    finally:
        torch.set_grad_enabled(True)
    assert updates[-1].progress == 1.0 and updates[-1].result is not None
    training = updates[-1].result.layer("Training")
    assert training.right == ("box share %",) and training.right_label == "box share %"  # its own axis
    curve = training.series["box share %"][1] / 100
    assert len(curve) == 80
    assert curve[-1] > curve[0] + 0.05
    with torch.no_grad():
        learned = op.compute(image, dict(params, mode="learned"), query)
        fresh = op.compute(image, dict(params, mode="random"), query)
    trained_share = share(learned.layer("Metrics").values["box share after"])
    assert trained_share == pytest.approx(curve[-1], abs=0.01)
    assert share(fresh.layer("Metrics").values["box share after"]) < trained_share - 0.05
    op.reset_state()
    with torch.no_grad():
        reset = op.compute(image, dict(params, mode="learned"), query)
    assert "untrained" in reset.layer("Squeeze and excitation").caption


def test_unknown_action_is_an_error():
    with pytest.raises(ValueError, match="no action"):
        SqueezeExcitation().start("fit", torch.rand(1, 3, 8, 8), params_of({}), None)


# -- the feature bank -------------------------------------------------------------------------------
@pytest.mark.parametrize("angle", GABOR_ORIENTATIONS)
def test_feature_bank_orientation_channels_answer_their_stripes(angle):
    """Stripes at ``angle`` on screen (counterclockwise from horizontal, y down in the array)."""
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    phi = math.radians(angle)
    u = xs * math.sin(phi) + ys * math.cos(phi)  # distance across the stripes
    image = (0.5 + 0.5 * torch.cos(2 * math.pi * u / 8))[None, None].repeat(1, 3, 1, 1)
    bank = feature_bank(image)
    energy = bank.maps[0, : len(GABOR_ORIENTATIONS) * 2].mean((1, 2)).view(2, -1).sum(0)
    assert GABOR_ORIENTATIONS[int(energy.argmax())] == angle
    hist = orientation_histogram(luminance(image)).mean((0, 2, 3))
    assert int(hist.argmax()) == angle * 8 // 180


def test_feature_bank_is_nonnegative_and_labelled():
    bank = feature_bank(torch.rand(1, 3, 300, 200))
    assert bank.maps.shape == (1, 24, 256, 171)  # the long side scaled to 256, area-averaged
    assert bank.scale == 256 / 300
    assert (bank.maps >= 0).all() and bank.maps.max() <= 1.0 + 1e-6
    assert len(set(bank.labels)) == len(set(bank.short_labels)) == 24
    assert bank.labels[5] == "45° diagonal, octave 2" and bank.short_labels[5] == "45° s2"
    assert bank.labels[:3] == ("horizontal, octave 1", "45° diagonal, octave 1", "vertical, octave 1")
    assert max(len(label) for label in bank.short_labels) <= 7  # mosaic tiles: no label runs into the next
    assert {i for g in ("0° edges", "45° edges", "90° edges", "135° edges") for i in bank.groups[g]} == set(range(16))


def test_feature_bank_never_upscales():
    assert feature_bank(torch.rand(1, 3, 40, 70)).maps.shape == (1, 24, 40, 70)
