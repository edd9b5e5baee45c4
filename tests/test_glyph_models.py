"""The model lab's STN classifier and deformable-v2 CNN: built on the project's functional cores,
and the shipped weights reach the accuracy their manifest states on the fixed test set."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backends.data import cluttered_glyphs as cg
from backends.functional.affine import affine_transform
from backends.functional.deformable import deform_conv2d
from backends.models.glyph_deformable import TAPS, GlyphDeformable, load_deformable
from backends.models.glyph_deformable import WEIGHTS_PATH as DEFORM_PATH
from backends.models.glyph_stn import CROP, GlyphSTN, load_stn
from backends.models.glyph_stn import WEIGHTS_PATH as STN_PATH
from backends.models.weights import read_manifest
from backends.training import glyph_lab


def _randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()


def test_stn_starts_at_identity_and_reads_through_affine_transform():
    model = GlyphSTN().eval()
    x = torch.rand(3, 1, cg.SIZE, cg.SIZE)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(3, 2, 3)
    assert torch.equal(model.localise(x), identity)
    _randomise(model)
    theta = model.localise(x)
    assert not torch.allclose(theta, identity)
    crop = affine_transform(x, theta, size=(CROP, CROP))
    assert torch.equal(model.rectify(x, theta), crop)
    torch.testing.assert_close(model(x), model.classifier(crop * 2 - 1), rtol=0, atol=1e-6)
    out = model.explain(x)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(3))


def test_deformable_block_is_deform_conv2d_v2():
    model = GlyphDeformable()
    _randomise(model)
    block = model.deform[0]
    h = torch.rand(2, block.predictor.in_channels, 12, 12)
    raw = F.conv2d(h, block.predictor.weight, block.predictor.bias, padding=1)
    offset, mask = raw[:, : 2 * TAPS], torch.sigmoid(raw[:, 2 * TAPS:])
    expected = F.relu(block.norm(deform_conv2d(h, offset, block.conv.weight, None, 1, 1, 1, mask)))
    torch.testing.assert_close(block(h), expected, rtol=0, atol=1e-6)
    trace = model.trace(torch.rand(2, 1, cg.SIZE, cg.SIZE))
    assert [tuple(o.shape) for o in trace["offsets"]] == [(2, 18, 12, 12)] * 2
    assert [tuple(m.shape) for m in trace["masks"]] == [(2, 9, 12, 12)] * 2


def test_fresh_deformable_layers_are_half_weighted_plain_convolutions():
    """Zero-initialised predictors: a regular grid and masks of 0.5, so the layer is F.conv2d / 2."""
    model = GlyphDeformable().eval()
    block = model.deform[1]
    h = torch.rand(2, block.predictor.in_channels, 12, 12)
    torch.testing.assert_close(block.conv(h, *block.offsets_and_mask(h)), F.conv2d(h, block.conv.weight, padding=1) / 2,
                               rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def shipped() -> dict:
    return read_manifest(STN_PATH.parent)


@pytest.mark.parametrize("path, load", [(STN_PATH, load_stn), (DEFORM_PATH, load_deformable)], ids=["stn", "deformable"])
def test_shipped_network_reaches_its_stated_accuracy(shipped, path, load):
    """On the whole fixed test set (2000 images): the manifest's accuracy, at least 95%."""
    entry = shipped[path.name]
    assert entry["test_accuracy"] >= 0.95
    accuracy = glyph_lab.test_accuracy(load(path))
    assert accuracy >= 0.95 and abs(accuracy - entry["test_accuracy"]) < 0.003
