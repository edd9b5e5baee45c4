"""Squeeze-and-excitation: the block against a 1x1-conv reference (torchvision's layout) in
float64 at 1e-12, its parameter count, weights in (0, 1), live training on the worker's terms,
and the interpretable feature bank it runs on."""

import math

import pytest
import torch
from torch import nn

from backends.features import GABOR_ORIENTATIONS, feature_bank, luminance, orientation_histogram
from backends.ops.squeeze_excitation import (
    SqueezeExcitation,
    box_in,
    channel_energies,
    excitation,
    init_mlp,
    manual_weights,
    region_share,
    se_parameter_count,
    squeeze_excitation,
)
from backends.params import validate


def params_of(values: dict) -> dict:
    """Validated parameters, without importing every other operator module."""
    return validate(SqueezeExcitation.spec.params, values)


LAYERS = ("Features", "Recalibrated features", "Squeeze and excitation", "Recalibrated energy", "Training", "Metrics")


def reference_block(channels: int, hidden: int) -> nn.Sequential:
    """What torchvision.ops.SqueezeExcitation computes (pool, 1x1 conv, ReLU, 1x1 conv, sigmoid)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                         nn.Conv2d(hidden, channels, 1), nn.Sigmoid())


def stripes(size: int = 64) -> torch.Tensor:
    """Left half: vertical black/white stripes, 8 px period; right half: flat orange."""
    xs = torch.arange(size, dtype=torch.float32)
    img = torch.empty(1, 3, size, size)
    img[..., :] = torch.tensor([0.9, 0.55, 0.2])[:, None, None]
    wave = 0.5 + 0.5 * torch.cos(2 * math.pi * xs / 8)
    img[..., : size // 2] = wave[: size // 2].expand(3, size, -1)
    return img


@pytest.mark.parametrize("channels, r", [(24, 1), (24, 4), (24, 8), (16, 2), (64, 16)])
def test_parameter_count_is_2CC_over_r_plus_C_over_r_plus_C(channels, r):
    expected = 2 * channels * channels // r + channels // r + channels
    assert se_parameter_count(channels, r) == expected
    mlp = init_mlp(channels, r, seed=0)
    assert sum(t.numel() for t in mlp.tensors()) == expected
    assert sum(p.numel() for p in reference_block(channels, channels // r).parameters()) == expected


def test_block_equals_the_1x1_conv_reference_in_float64():
    torch.manual_seed(0)
    ref = reference_block(12, 3).double()
    x = torch.rand(2, 12, 9, 7, dtype=torch.float64)
    fc1, fc2 = ref[1], ref[3]
    y, s = squeeze_excitation(x, fc1.weight[:, :, 0, 0], fc1.bias, fc2.weight[:, :, 0, 0], fc2.bias)
    torch.testing.assert_close(y, x * ref(x), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(s, ref(x)[:, :, 0, 0], atol=1e-12, rtol=1e-12)


def test_output_is_input_times_its_channel_weight():
    x = torch.rand(1, 24, 10, 11)
    mlp = init_mlp(24, 4, seed=3, gain=4.0)
    y, s = squeeze_excitation(x, *mlp.tensors())
    assert s.shape == (1, 24)
    for c in range(24):
        torch.testing.assert_close(y[0, c], x[0, c] * s[0, c], atol=0, rtol=0)


def test_block_gradcheck_float64():
    torch.manual_seed(1)
    x = torch.rand(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    ws = [t.double().requires_grad_(True) for t in init_mlp(4, 2, seed=1, gain=2.0).tensors()]
    assert torch.autograd.gradcheck(lambda *a: squeeze_excitation(*a)[0], (x, *ws))


def test_shape_errors_name_both_shapes():
    mlp = init_mlp(8, 2, seed=0)
    with pytest.raises(ValueError, match=r"x \(1, 6, 4, 4\).*fc1 \(4, 8\)"):
        squeeze_excitation(torch.rand(1, 6, 4, 4), *mlp.tensors())


@pytest.mark.parametrize("seed, gain", [(0, 1.0), (1, 3.0), (2, 0.1)])
def test_random_weights_lie_in_open_unit_interval(seed, gain):
    """A sigmoid is in (0, 1); float32 rounds it to 0 or 1 past |logit| ~ 17, so the check uses
    squeezes in the bank's range [0, 1] and gains up to the default 3."""
    z = torch.rand(5, 24)
    s = excitation(z, init_mlp(24, 4, seed, gain))
    assert ((s > 0) & (s < 1)).all()


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
    expected = energy[y0:y1, x0:x1].sum() / energy.sum()
    torch.testing.assert_close(region_share(w, inside, total), expected)


def test_run_layers_and_recalibrated_equals_features_times_weights():
    op = SqueezeExcitation()
    params = params_of({"mode": "random", "seed": 5})
    with torch.no_grad():
        result = op.run(torch.rand(1, 3, 40, 52), params, None)
    assert result.names == LAYERS
    feats = result.layer("Features").maps
    recal = result.layer("Recalibrated features").maps
    bars = result.layer("Squeeze and excitation")
    weights = bars.series["weight"]
    torch.testing.assert_close(torch.as_tensor(bars.series["squeeze z (channel mean)"]),
                               torch.as_tensor(feats).mean((1, 2)), atol=0.02, rtol=0)  # mosaic is area-downscaled
    assert ((weights > 0) & (weights < 1)).all()
    torch.testing.assert_close(torch.as_tensor(recal), torch.as_tensor(feats) * torch.as_tensor(weights)[:, None, None])
    assert len(result.layer("Features").labels) == feats.shape[0] == 24


@pytest.mark.parametrize("mode", ["learned", "random", "manual"])
def test_run_on_tiny_and_odd_images(mode):
    op = SqueezeExcitation()
    params = params_of({"mode": mode, "region": 8})
    with torch.no_grad():
        for h, w in ((1, 1), (5, 3), (17, 300)):
            result = op.run(torch.rand(1, 3, h, w), params, (w + 5, -3))
            assert result.names == LAYERS


def test_training_raises_the_box_share_and_is_kept_as_state():
    op = SqueezeExcitation()
    image = stripes()
    params = params_of({"steps": 80, "lr": 0.05, "region": 24, "mode": "manual"})
    query = (16, 32)  # on the stripes
    torch.set_grad_enabled(False)  # as on the worker thread
    try:
        updates = list(op.start("train", image, params, query))
        assert not torch.is_grad_enabled(), "training must not leave grad mode on between steps"
    finally:
        torch.set_grad_enabled(True)
    assert updates[-1].progress == 1.0 and updates[-1].result is not None
    curve = updates[-1].result.layer("Training").series["box share %"][1] / 100
    assert len(curve) == 80
    assert curve[-1] > curve[0] + 0.05
    with torch.no_grad():
        learned = op.run(image, dict(params, mode="learned"), query)
        fresh = op.run(image, dict(params, mode="random"), query)
    share = float(learned.layer("Metrics").values["box share after"].rstrip("%")) / 100
    assert share == pytest.approx(curve[-1], abs=0.01)
    assert float(fresh.layer("Metrics").values["box share after"].rstrip("%")) / 100 < share - 0.05
    op.reset_state()
    with torch.no_grad():
        reset = op.run(image, dict(params, mode="learned"), query)
    assert "untrained" in reset.layer("Squeeze and excitation").caption


def test_unknown_action_is_an_error():
    with pytest.raises(ValueError, match="no action"):
        SqueezeExcitation().start("fit", torch.rand(1, 3, 8, 8), params_of({}), None)


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
    assert bank.maps.shape == (1, 24, 256, 171)
    assert (bank.maps >= 0).all() and bank.maps.max() <= 1.0 + 1e-6
    assert len(set(bank.labels)) == len(bank.short_labels) == len(bank.glyphs) == 24
    assert bank.labels[5] == "gabor 45° s2"
    assert {i for g in ("0° edges", "45° edges", "90° edges", "135° edges") for i in bank.groups[g]} == set(range(16))
