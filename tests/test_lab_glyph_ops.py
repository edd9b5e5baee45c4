"""Model lab operators for the STN classifier and the deformable CNN: what the panels draw against
independent computations (F.affine_grid for the STN grid, one-hot deform_conv2d against a naive
bilinear read for the sampling points, autograd for the composed receptive field), and both
operators through compute on the shipped weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backends.data import cluttered_glyphs as cg
from backends.functional.deformable import deform_conv2d
from backends.models.glyph_deformable import WEIGHTS_PATH as DEFORM_PATH
from backends.models.glyph_deformable import GlyphDeformable
from backends.models.glyph_stn import CROP, GlyphSTN
from backends.models.glyph_stn import WEIGHTS_PATH as STN_PATH
from backends.ops._lab_deformable_panels import layers as deformable_layers
from backends.ops._lab_deformable_points import composed
from backends.ops._lab_stn_panels import Seen
from backends.ops._lab_stn_panels import layers as stn_layers
from backends.ops.lab_deformable import LabDeformable, trace
from backends.ops.lab_stn import LabSTN
from backends.params import validate

SIZE = (60, 84)  # (H, W): non-square, so x/y mix-ups and the centre-square offset show
POINT_TOL = 1e-4  # image pixels, float32
READ_TOL = 1e-5


def _image_to_view(points: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Written out here: the centre square (side min(h, w)) of the image holds the 48x48 view."""
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return (points - torch.tensor([x0, y0])) * (48 / side) + (48 / side - 1) / 2


def _bilinear(img: torch.Tensor, x: float, y: float) -> float:
    """Naive bilinear read, zero outside (torchvision's rule), float64."""
    h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(img[yy, xx])
    return total


def _wobbly_deformable() -> GlyphDeformable:
    """Random weights with offsets of a few grid pixels and varied masks (the trained ones may be small)."""
    torch.manual_seed(3)
    model = GlyphDeformable().eval()
    with torch.no_grad():
        for block in model.deform:
            block.predictor.weight.normal_(0.0, 0.3)
            block.predictor.bias.normal_(0.0, 1.0)
    return model


def test_drawn_sampling_points_are_where_deform_conv2d_reads():
    model = _wobbly_deformable()
    x, label, _ = cg.test_item(7)
    t = trace(model, x, label)
    inputs = [i.detach() for i in model.trace(x)["inputs"]]
    h, w = SIZE
    for cell in ((3, 8), (11, 0), (6, 6)):
        panel = dict(zip(*_names_and_layers(deformable_layers(t, cell, SIZE, {}))))["Sampling points"]
        for layer, point_set in enumerate(panel.sets[:2]):
            grid = (_image_to_view(torch.as_tensor(point_set.points), h, w) - 1.5) / 4  # view -> 12x12 grid
            assert grid.abs().max() > 0  # not vacuous
            offset, mask = t.offsets[layer], t.masks[layer]
            moved = (grid - torch.tensor([[cell[0] - 1 + j, cell[1] - 1 + i] for i in range(3) for j in range(3)])).norm(dim=1)
            assert float(moved.max()) > 0.05  # the offsets really move the taps
            for k in range(9):
                channel = (5 * k + layer) % inputs[layer].shape[1]
                weight = torch.zeros(1, inputs[layer].shape[1], 3, 3)
                weight[0, channel, k // 3, k % 3] = 1.0
                out = deform_conv2d(inputs[layer], offset, weight, padding=1, mask=mask)[0, 0, cell[1], cell[0]]
                naive = float(mask[0, k, cell[1], cell[0]]) * _bilinear(inputs[layer][0, channel].double(), *grid[k].tolist())
                assert abs(float(out) - naive) < READ_TOL, (cell, layer, k)
                assert abs(float(point_set.values[k]) - float(mask[0, k, cell[1], cell[0]])) < 1e-6


def test_composed_receptive_field_is_the_gradient_of_the_two_layers():
    """With unit weights and the offsets held, d(layer 2 at the cell)/d(layer 1's input) is the
    sum over composed points of weight x bilinear tent: the points and weights, checked by autograd."""
    model = _wobbly_deformable()
    x, label, _ = cg.test_item(11)
    t = trace(model, x, label)
    cell = (4, 7)
    pts, wts = composed(t.offsets, t.masks, cell)
    inp = torch.rand(1, 2, 12, 12, dtype=torch.float64, requires_grad=True)
    off = [o.double() for o in t.offsets]
    msk = [m.double() for m in t.masks]
    mid = deform_conv2d(inp, off[0], torch.ones(3, 2, 3, 3, dtype=torch.float64), padding=1, mask=msk[0])
    out = deform_conv2d(mid, off[1], torch.ones(1, 3, 3, 3, dtype=torch.float64), padding=1, mask=msk[1])
    (grad,) = torch.autograd.grad(out[0, 0, cell[1], cell[0]], inp)
    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    expected = torch.zeros(12, 12, dtype=torch.float64)
    for (px, py), wt in zip(pts.double().tolist(), wts.double().tolist()):
        expected += wt * (1 - (xs - px).abs()).clamp(min=0) * (1 - (ys - py).abs()).clamp(min=0)
    torch.testing.assert_close(grad[0, 0], 3 * expected, rtol=0, atol=1e-5)  # points are float32
    assert float(expected.sum()) > 0


def test_stn_grid_corners_are_theta_applied_to_the_crop_corners():
    torch.manual_seed(1)
    model = GlyphSTN().eval()
    fixed = torch.tensor([[[0.55, -0.2, 0.18], [0.25, 0.6, -0.3]]])
    model.localise = lambda x: fixed  # a turned, sheared, off-centre map (the trained one may be tame)
    x, label, item = cg.test_item(3)
    out = model.explain(x)
    panels = dict(zip(*_names_and_layers(stn_layers(Seen(x, label, item), out, SIZE, {}))))
    grid, outline = torch.as_tensor(panels["Sampling grid"].grid), torch.as_tensor(panels["Sampling grid"].outline)
    h, w = SIZE
    reads = F.affine_grid(out["theta"], [1, 1, CROP, CROP], align_corners=False)[0]  # normalized (x, y)
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2

    def to_image(n: torch.Tensor) -> torch.Tensor:
        return ((n + 1) * 48 / 2) * (side / 48) - 0.5 + torch.tensor([x0, y0])  # normalized -> view edges -> image

    for gi, ri in (((0, 0), (0, 0)), ((0, -1), (0, -1)), ((-1, 0), (-1, 0)), ((-1, -1), (-1, -1))):
        torch.testing.assert_close(grid[gi], to_image(reads[ri]), rtol=0, atol=POINT_TOL)
    theta = out["theta"][0].double()
    for cx, cy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        corner = to_image((theta @ torch.tensor([cx, cy, 1.0], dtype=torch.float64)).float())
        assert float((outline - corner).norm(dim=1).min()) < POINT_TOL
    torch.testing.assert_close(torch.as_tensor(panels["Class probabilities"].series["probability"]).sum(), torch.tensor(1.0))


def _names_and_layers(layers: tuple) -> tuple[list[str], list]:
    return [layer.name for layer in layers], list(layers)


@pytest.mark.skipif(not (STN_PATH.is_file() and DEFORM_PATH.is_file()), reason="shipped weights missing")
def test_operators_on_shipped_weights():
    image = torch.rand(1, 3, *SIZE)
    stn = LabSTN()
    result = stn.compute(image, validate(LabSTN.spec.params, {"source": "test sample", "sample": 4}), None)
    assert {"Sampling grid", "Rectified crop", "Class probabilities", "Network input", "Metrics"} <= set(result.names)
    metrics = result.layer("Metrics").values
    assert metrics["predicted"] == metrics["true class"]
    assert abs(float(result.layer("Class probabilities").series["probability"].sum()) - 1) < 1e-5
    deform = LabDeformable()
    params = validate(LabDeformable.spec.params, {"source": "test sample", "sample": 4})
    a = deform.compute(image, params, (10, 12))
    b = deform.compute(image, params, (70, 50))
    assert not torch.equal(torch.as_tensor(a.layer("Sampling points").sets[1].points),
                           torch.as_tensor(b.layer("Sampling points").sets[1].points))
    assert abs(float(a.layer("Class probabilities").series["probability"].sum()) - 1) < 1e-5
    assert a.layer("Metrics").values["predicted"] == a.layer("Metrics").values["true class"]
    drawn = deform.compute(image, validate(LabDeformable.spec.params, {"source": "image"}), None)
    cam = drawn.layer("Grad-CAM")
    x0, y0, side = cg.view_box(*SIZE)
    assert cam.maps.shape == (48, 48) and cam.extent == (x0, y0, side, side)  # the network's view, placed where it was read


def test_tap_positions_with_stride_dilation_and_groups():
    """tap_positions against one-hot deform_conv2d reads: stride 2, dilation 2, padding 1, two
    offset groups, a non-square input, offsets of several pixels."""
    from backends.functional.deformable import tap_positions

    torch.manual_seed(5)
    inp = torch.rand(1, 4, 9, 13, dtype=torch.float64)
    kh, kw = 3, 2
    ho, wo = (9 + 2 - 2 * (kh - 1) - 1) // 2 + 1, (13 + 2 - 2 * (kw - 1) - 1) // 2 + 1
    offset = torch.randn(1, 2 * 2 * kh * kw, ho, wo, dtype=torch.float64) * 2.5
    y, x = 2, 3
    points = tap_positions(offset, y, x, (kh, kw), 2, 1, 2)
    assert points.shape == (2, kh * kw, 2)
    for g, channel in ((0, 1), (1, 3)):  # channels 0-1 use group 0, 2-3 group 1
        for k in range(kh * kw):
            weight = torch.zeros(1, 4, kh, kw, dtype=torch.float64)
            weight[0, channel, k // kw, k % kw] = 1.0
            out = deform_conv2d(inp, offset, weight, stride=2, padding=1, dilation=2)[0, 0, y, x]
            assert abs(float(out) - _bilinear(inp[0, channel], *points[g, k].tolist())) < 1e-10


def test_every_cells_reads_at_once_equal_tap_positions_cell_by_cell():
    from backends.functional.deformable import tap_positions
    from backends.ops._lab_deformable_points import GRID, grid_taps

    offset = torch.randn(1, 18, GRID, GRID, generator=torch.Generator().manual_seed(3)) * 2
    every = grid_taps(offset)
    for x, y in [(0, 0), (5, 7), (11, 3), (11, 11)]:
        torch.testing.assert_close(every[y, x], tap_positions(offset, y, x, 3, 1, 1, 1)[0], atol=0, rtol=0)
