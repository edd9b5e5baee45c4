"""Procedural datasets: deterministic for a seed, right shapes and ranges, true factors that match
the pixels, crops that come from where their provenance says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.data import DATASET_NAMES, sampler
from backends.data.glyphs import CHARSET, FONTS, sample_glyphs
from backends.data.patches import HELD_OUT, image_names, pyramid, sample_patches
from backends.data.sprites import (
    FACTOR_NAMES,
    HALF_SIZE_PX,
    POS_MARGIN_PX,
    SHAPES,
    discretize_factors,
    hue_to_rgb,
    render_sprites,
    sample_sprites,
)

SAMPLERS = {"sprites": sample_sprites, "glyphs": sample_glyphs, "patches": sample_patches}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_deterministic_for_a_seed(name):
    a, info_a = SAMPLERS[name](16, 7)
    b, info_b = SAMPLERS[name](16, 7)
    c, _ = SAMPLERS[name](16, 8)
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert set(info_a) == set(info_b)
    for key in info_a:
        np.testing.assert_array_equal(info_a[key], info_b[key])
        assert len(info_a[key]) == 16
    assert not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_sampler_lookup():
    assert sampler("sprites") is sample_sprites
    assert "faces" in DATASET_NAMES
    with pytest.raises(ValueError, match="unknown dataset"):
        sampler("mnist")


def test_empty_batch():
    x, f = sample_sprites(0, 0)
    assert x.shape == (0, 3, 32, 32) and all(len(v) == 0 for v in f.values())
    assert sample_glyphs(0, 0)[0].shape == (0, 3, 32, 32)


def test_sprite_factors_are_returned_and_in_range():
    _, f = sample_sprites(500, 3)
    assert set(f) == set(FACTOR_NAMES)
    assert set(np.unique(f["shape"])) == set(range(len(SHAPES)))
    assert f["scale"].min() >= 0.5 and f["scale"].max() <= 1.0
    assert f["orientation"].min() >= -np.pi / 4 and f["orientation"].max() < np.pi / 4
    for k in ("pos_x", "pos_y"):
        assert 0 <= f[k].min() and f[k].max() <= 1
    d = discretize_factors(f)
    assert all(v.dtype == np.int64 and v.min() >= 0 for v in d.values())
    assert d["pos_x"].max() == 9


def test_sprite_pixels_follow_their_factors():
    x, f = sample_sprites(200, 11)
    assert torch.equal(render_sprites(f), x)
    mass = x.sum(1)  # (N, 32, 32)
    total = mass.sum((1, 2))
    grid = torch.arange(32, dtype=torch.float32) + 0.5
    cx = (mass.sum(1) * grid).sum(1) / total
    cy = (mass.sum(2) * grid).sum(1) / total
    span = 32 - 2 * POS_MARGIN_PX
    # The centroid of a heart sits a little off its frame centre; squares and ellipses are symmetric.
    sym = f["shape"] != 2
    np.testing.assert_allclose(cx.numpy()[sym], POS_MARGIN_PX + f["pos_x"][sym] * span, atol=0.3)
    np.testing.assert_allclose(cy.numpy()[sym], POS_MARGIN_PX + f["pos_y"][sym] * span, atol=0.3)
    # Area grows with the square of the scale: compare each shape kind at its own constant.
    area = (x.amax(1) > 0.5).sum((1, 2)).numpy().astype(float)
    for kind in range(len(SHAPES)):
        sel = f["shape"] == kind
        ratio = area[sel] / (f["scale"][sel] * HALF_SIZE_PX) ** 2
        assert ratio.std() / ratio.mean() < 0.15
    # Colour: the brightest channel of each sprite is the brightest channel of its hue.
    colour = x.sum((2, 3)) / total[:, None]
    assert (colour.argmax(1).numpy() == hue_to_rgb(f["hue"]).argmax(1)).mean() > 0.95


def test_rotation_turns_a_square_but_not_past_its_symmetry():
    base = {"shape": np.array([0, 0, 0]), "scale": np.ones(3, np.float32), "pos_x": np.full(3, 0.5, np.float32),
            "pos_y": np.full(3, 0.5, np.float32), "hue": np.zeros(3, np.float32),
            "orientation": np.array([0.0, np.pi / 4, np.pi / 2], np.float32)}
    x = render_sprites(base)
    assert float((x[0] - x[1]).abs().sum()) > 20.0
    assert float((x[0] - x[2]).abs().max()) < 0.02


def test_glyph_labels():
    x, lab = sample_glyphs(300, 5)
    for key in ("label", "font", "italic", "thickness", "angle", "shear", "scale", "shift_x", "shift_y", "clutter", "fg", "bg"):
        assert key in lab
    assert lab["label"].min() >= 0 and lab["label"].max() < len(CHARSET)
    assert lab["font"].max() < len(FONTS)
    assert np.abs(lab["angle"]).max() <= 20
    # The glyph is drawn in its colours: pixels lie between background and foreground.
    corner = x[:, :, 0, 0].numpy()
    assert np.abs(corner - lab["bg"]).mean() < 0.25


def test_patch_splits_and_provenance():
    names = image_names("train")
    assert not set(HELD_OUT) & set(names)
    assert image_names("test") == HELD_OUT
    x, info = sample_patches(20, 2, size=32)
    for i in range(20):
        src = pyramid(names[info["image"][i]])[info["level"][i]]
        crop = src[info["y"][i] : info["y"][i] + 32, info["x"][i] : info["x"][i] + 32]
        if info["flip"][i]:
            crop = crop[:, ::-1]
        np.testing.assert_allclose(x[i].permute(1, 2, 0).numpy(), crop / 255.0, atol=1e-6)
    big, _ = sample_patches(4, 2, size=64, split="test")
    assert big.shape == (4, 3, 64, 64)
    with pytest.raises(ValueError):
        image_names("validation")
