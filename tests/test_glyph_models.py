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
from backends.models.glyph_stn import CROP, START_SCALE, GlyphSTN, load_stn
from backends.models.glyph_stn import WEIGHTS_PATH as STN_PATH
from backends.models.weights import read_manifest
from backends.training import glyph_lab


def _randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()


def test_stn_starts_at_a_centred_zoomed_crop_and_reads_through_affine_transform():
    model = GlyphSTN().eval()
    x = torch.rand(3, 1, cg.SIZE, cg.SIZE)
    start = torch.tensor([[START_SCALE, 0.0, 0.0], [0.0, START_SCALE, 0.0]]).expand(3, 2, 3)
    torch.testing.assert_close(model.localise(x), start, rtol=0, atol=1e-6)
    assert START_SCALE**2 < 0.5 and CROP < cg.SIZE  # the crop starts zoomed in and is smaller than the input
    _randomise(model)
    theta = model.localise(x)
    assert not torch.allclose(theta, start)
    crop = affine_transform(x, theta, size=(CROP, CROP))
    assert torch.equal(model.rectify(x, theta), crop)
    torch.testing.assert_close(model(x), model.classifier(crop * 2 - 1), rtol=0, atol=1e-6)
    out = model.explain(x)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(3))


def test_stn_crop_centre_is_the_score_weighted_mean_of_cell_centres():
    """The translation the localisation predicts, written out: softmax of the 12x12 cell scores,
    cell centres in normalized coordinates (align_corners=False), their weighted mean."""
    model = GlyphSTN()
    _randomise(model)
    loc = model.localisation
    x = torch.rand(2, 1, cg.SIZE, cg.SIZE) * 2 - 1
    f = loc.features(x)
    weights = torch.softmax(loc.score(f).flatten(1).double(), 1).view(2, 12, 12)
    cells = (torch.arange(12, dtype=torch.float64) + 0.5) / 12 * 2 - 1
    expected = torch.stack([(weights.sum(1) * cells).sum(1), (weights.sum(2) * cells).sum(1)], 1)
    torch.testing.assert_close(loc(x)[:, :, 2].double(), expected, rtol=0, atol=1e-6)


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


STN_SUBSET = 300  # test items for the localisation check (a few seconds)
STN_CENTRE_BOUND_PX = 5.0  # median crop-centre distance to the digit's centre, 48x48 pixels (a centred crop: 10.4)
STN_AREA_BOUND = 0.6  # median fraction of the input the crop covers


def test_shipped_stn_finds_and_zooms_on_the_digit(shipped):
    """On the first test items, with the sampling grid from F.affine_grid: the crop's centre (mean
    of its pixels' reads) lies near the drawn digit's centre and the crop (the parallelogram of its
    outer edges) covers well under the input; the manifest states the medians over all 2000."""
    model = load_stn(STN_PATH)
    x, y, params = cg.test_set()
    x, y = x[:STN_SUBSET], y[:STN_SUBSET]
    out = model.explain(x)
    assert float((out["probs"].argmax(1) == y).float().mean()) >= 0.95
    grid = F.affine_grid(out["theta"].double(), [STN_SUBSET, 1, CROP, CROP], align_corners=False)
    centre = (grid.mean(dim=(1, 2)) + 1) * cg.SIZE / 2 - 0.5  # normalized -> 48x48 pixels
    distance = (centre - torch.from_numpy(params["centre"][:STN_SUBSET]).double()).norm(dim=1)
    stretch = CROP / (CROP - 1)  # pixel centres -> the crop's outer edges
    u = (grid[:, 0, -1] - grid[:, 0, 0]) * stretch
    v = (grid[:, -1, 0] - grid[:, 0, 0]) * stretch
    area = (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]).abs() / 4  # the input spans [-1, 1]^2
    centred = (torch.from_numpy(params["centre"][:STN_SUBSET]).double() - (cg.SIZE - 1) / 2).norm(dim=1)
    assert float(distance.median()) <= STN_CENTRE_BOUND_PX < float(centred.median()) / 2
    assert float(area.median()) <= STN_AREA_BOUND
    entry = shipped[STN_PATH.name]
    assert entry["crop_centre_error_px_median"] <= STN_CENTRE_BOUND_PX
    assert entry["crop_area_fraction_median"] <= STN_AREA_BOUND
