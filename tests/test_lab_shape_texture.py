"""Texture against shape: the procedural data (deterministic, cues where they are said to be), the
shape-bias fraction against a hand count, the shipped networks' accuracies and shape-bias
fractions measured again on the full fixed sets against their manifest entries (and the ordering
texture-shuffled > plain), and the operator's panels against an independent forward pass."""

import math

import numpy as np
import pytest
import torch

from backends.data import shape_texture as data
from backends.imaging import center_square
from backends.layers import complete, materialize
from backends.models.shape_texture import (
    NETWORKS,
    TITLES,
    ShapeTextureCNN,
    manifest_entry,
    probabilities,
    shape_bias,
    weights_path,
)
from backends.models.weights import load_weights
from backends.params import ParamError, defaults, validate
from backends.registry import operator_class, spec_of

PROB_TOL = 1e-5  # float32, the same network run twice on the same 48x48 image
NOISE_TOL = 0.1  # the images' additive noise has sigma 0.02: 5 sigma
MIN_ACCURACY = 0.95


def _independent(name):
    """The shipped network built here from its file, outside the model cache."""
    model = ShapeTextureCNN()
    model.load_state_dict(load_weights(weights_path(name)))
    return model.eval()


def _run(image, **values):
    op = operator_class("lab_shape_texture")()
    params = validate(spec_of("lab_shape_texture").params, {**defaults(spec_of("lab_shape_texture").params), **values})
    with torch.no_grad():
        return materialize(complete(op.compute(image, params, None)))


def test_the_same_seed_gives_the_same_images_and_labels():
    a, ya, ia = data.sample(12, 5, texture_shuffle=0.5)
    b, yb, ib = data.sample(12, 5, texture_shuffle=0.5)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert a.shape == (12, 3, 48, 48) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, data.sample(12, 6)[0])


def test_consistent_images_pair_each_shape_with_its_texture_and_shuffling_breaks_it():
    _, y, info = data.sample(400, 1)
    assert np.array_equal(info["shape"], y.numpy()) and np.array_equal(info["texture"], y.numpy())
    _, y, info = data.sample(400, 1, texture_shuffle=1.0)
    assert np.array_equal(info["shape"], y.numpy())
    agree = np.mean(info["texture"] == y.numpy())
    kinds = data.K + len(data.FOREIGN)  # the class textures and the fills no class has
    assert abs(agree - 1 / kinds) < 0.06 and set(info["texture"]) == set(range(kinds))


def test_the_conflict_set_holds_every_pair_of_different_classes_equally():
    _, info = data.conflict_set(per_pair=3)
    pairs = np.stack([info["shape"], info["texture"]], 1)
    assert not np.any(pairs[:, 0] == pairs[:, 1])
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    assert len(uniq) == data.K * (data.K - 1) and set(counts) == {3}


def test_the_texture_fills_the_shape_only():
    mask = data.shape_mask(data.SHAPES.index("square"), 24.0, 24.0, 15.0, 0.0)
    fill = np.full((3, 48, 48), 0.5, np.float32)
    fill[0] = 0.9
    built = data.build(mask, fill, seed=3)
    inside, outside = mask > 0.99, mask < 0.01
    assert inside.sum() > 200 and outside.sum() > 200
    assert np.abs(built["input"][:, inside] - fill[:, inside]).max() < NOISE_TOL
    bg = np.median(built["input"][:, outside], axis=1)  # one plain colour outside
    assert np.abs(built["input"][:, outside] - bg[:, None]).max() < NOISE_TOL


def test_the_mask_cut_from_an_image_is_its_bright_part():
    image = torch.zeros(1, 3, 60, 80)
    image[:, :, 20:40, 30:50] = 1.0  # a bright square in the centre square's middle
    mask = data.image_mask(image)
    expected = np.zeros((48, 48), np.float32)  # the centre square is columns 10..70, scaled by 48 / 60
    expected[16:32, 16:32] = 1.0
    assert np.array_equal(mask, expected)


def test_shape_bias_against_a_hand_count():
    pred = np.array([0, 1, 2, 3, 1, 0])
    shape = np.array([0, 0, 2, 1, 1, 2])
    texture = np.array([1, 1, 0, 2, 3, 4])
    # by shape: items 0, 2, 4 (3); by texture: item 1 (1); neither: items 3, 5
    got = shape_bias(pred, shape, texture)
    assert got["shape_bias"] == 3 / 4 and got["other_decisions"] == 2 and got["images"] == 6
    assert math.isnan(shape_bias(np.array([4]), np.array([0]), np.array([1]))["shape_bias"])
    with pytest.raises(ValueError):
        shape_bias(np.array([0]), np.array([1]), np.array([1]))


@pytest.fixture(scope="module")
def networks():
    return {n: _independent(n) for n in NETWORKS}


def test_the_shipped_networks_reach_their_stated_accuracy(networks):
    x, y, _ = data.test_set()
    for name, model in networks.items():
        acc = float((probabilities(model, x).argmax(1) == y).float().mean())
        stated = manifest_entry(name)["test_accuracy"]
        assert acc >= MIN_ACCURACY and abs(acc - stated) <= 0.002, (name, acc, stated)


def test_the_cue_only_accuracies_in_the_manifest_are_reproduced(networks):
    sets = data.cue_only_sets()
    assert set(sets) == {"shape only", "texture only", "shape with photo"}
    for name, model in networks.items():
        for cue, (x, y) in sets.items():
            acc = float((probabilities(model, x).argmax(1) == y).float().mean())
            stated = manifest_entry(name)[f"{cue.replace(' ', '_')}_accuracy"]
            assert abs(acc - stated) <= 0.004, (name, cue, acc, stated)  # two images in 500


def test_the_measured_shape_bias_is_reproduced_and_augmentation_raises_it(networks):
    x, info = data.conflict_set()  # the full fixed set, as the training script measured it
    measured = {}
    for name, model in networks.items():
        got = shape_bias(probabilities(model, x).argmax(1).numpy(), info["shape"], info["texture"])
        entry = manifest_entry(name)
        assert abs(got["shape_bias"] - entry["shape_bias"]) <= 0.005, (name, got, entry["shape_bias"])
        measured[name] = got["shape_bias"]
    assert measured["plain"] < 0.5 < measured["shuffled"]  # the plain one follows texture, the other shape


def test_the_drawn_probabilities_equal_an_independent_softmax(networks):
    torch.manual_seed(0)
    for values in ({}, {"shape_class": "star", "texture_class": "stripes", "seed": 7},
                   {"texture_from": "sample: brick"}, {"source": "input image as is"}):
        result = _run(torch.rand(1, 3, 50, 70), **values)
        x = torch.from_numpy(result.layer("Network input").image).permute(2, 0, 1)[None]
        bars = result.layer("Class probabilities")
        assert bars.labels == data.CLASS_NAMES
        for name, model in networks.items():
            with torch.no_grad():
                expected = torch.softmax(model(x), 1)[0].numpy()
            np.testing.assert_allclose(bars.series[TITLES[name]], expected, atol=PROB_TOL)


def test_the_shape_bias_bars_are_the_manifest_fractions():
    bars = _run(torch.rand(1, 3, 40, 40)).layer("Shape bias")
    assert bars.labels == tuple(TITLES[n] for n in NETWORKS)
    for i, name in enumerate(NETWORKS):
        f = manifest_entry(name)["shape_bias"]
        assert bars.series["shape"][i] == pytest.approx(f, abs=1e-6)
        assert bars.series["texture"][i] == pytest.approx(1 - f, abs=1e-6)


def test_the_builder_cuts_the_input_by_a_class_shape():
    torch.manual_seed(1)
    image = torch.rand(1, 3, 64, 96)
    result = _run(image, texture_from="input image", shape_class="cross", seed=4)
    grid = result.layer("Cue-conflict builder")
    assert grid.column_labels == ("shape", "texture", "input")
    x = result.layer("Network input").image.transpose(2, 0, 1)
    fill = center_square(image, 48)[0].numpy()
    rng = np.random.default_rng(4)
    cx, cy, radius, angle = data.placement(rng)
    mask = data.shape_mask(data.SHAPES.index("cross"), cx, cy, radius, angle)
    inside = mask > 0.99
    assert inside.sum() > 100
    assert np.abs(x[:, inside] - fill[:, inside]).max() < NOISE_TOL


def test_a_flat_colour_fill_leaves_the_shape_alone():
    x = _run(torch.rand(1, 3, 40, 40), texture_from="flat colour", shape_class="triangle",
             seed=2).layer("Network input").image.transpose(2, 0, 1)
    cx, cy, radius, angle = data.placement(np.random.default_rng(2))
    inside = data.shape_mask(data.SHAPES.index("triangle"), cx, cy, radius, angle) > 0.99
    assert inside.sum() > 100
    assert x[:, inside].std(axis=1).max() < 0.03  # one colour plus the images' noise (sigma 0.02)


def test_the_verdict_names_the_cue_followed():
    from backends.ops.lab_shape_texture import verdict

    params = {"source": "built image", "shape_from": "class", "shape_class": "circle",
              "texture_from": "class", "texture_class": "checks"}
    assert verdict(0, params) == "circle/stripes: the shape"
    assert verdict(2, params) == "square/checks: the texture"
    assert verdict(4, params) == "star/noise: neither cue"
    assert verdict(1, {**params, "shape_class": "triangle", "texture_class": "dots"}) == "triangle/dots (both cues)"
    assert verdict(2, {**params, "texture_from": "sample: brick"}) == "square/checks: not the shape"
    assert verdict(2, {**params, "shape_from": "input image"}) == "square/checks: the texture"
    assert verdict(3, {**params, "shape_from": "input image"}) == "cross/waves: not the texture"


def test_a_flat_input_has_no_shape_to_cut():
    with pytest.raises(ParamError, match="no bright region"):
        _run(torch.full((1, 3, 40, 40), 0.5), shape_from="input image")
