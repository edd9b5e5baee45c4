"""The MTCNN lab operator: what each panel draws, against the detection pipeline and against P-Net
run by hand on the resized image; the no-face case says so; stages are reused across thresholds."""

import math

import pytest
import torch
import torch.nn.functional as F

from backends.imageio import load_image
from backends.layers import complete, materialize
from backends.models.mtcnn import load_mtcnn
from backends.models.mtcnn_detect import detect
from backends.params import ParamError
from backends.registry import operator_class, validated_params

TOL = 1e-5  # float32, the same network on the same pixels


def picture(name):
    return torch.from_numpy(load_image(f"assets/images/{name}.png").pixels).permute(2, 0, 1)[None].contiguous()


def run(image, op=None, **values):
    op = op or operator_class("lab_mtcnn")()
    with torch.no_grad():
        return complete(op.compute(image, validated_params("lab_mtcnn", values), None)), op


@pytest.fixture(scope="module")
def astronaut():
    image = picture("astronaut")
    result, op = run(image, rnet_threshold=0.6)
    return image, result, op


def test_faces_panel_draws_the_pipelines_boxes_and_landmarks(astronaut):
    image, result, _ = astronaut
    with torch.no_grad():
        want = detect(load_mtcnn(), image, 20, (0.6, 0.6, 0.7)).faces
    layer = materialize(result).layer("Faces")
    assert len(want) == 1 and len(layer.boxes) == 1
    x1, y1, x2, y2 = want.boxes[0].tolist()
    assert layer.boxes[0] == pytest.approx((x1, y1, x2 - x1, y2 - y1), abs=1e-4)
    drawn = torch.stack([torch.from_numpy(s.points[0]) for s in layer.sets])  # one set per landmark kind
    assert torch.allclose(drawn + 0.5, want.landmarks[0], atol=1e-4)  # point i's centre is at i: edges - 0.5
    assert [s.label for s in layer.sets] == ["left eye", "right eye", "nose", "left mouth corner", "right mouth corner"]
    assert "1 face found" in layer.caption


def test_heatmap_at_a_scale_equals_pnet_on_the_image_resized_by_hand():
    image = picture("chelsea")  # 451 x 300: sides scale differently once rounded
    h, w = image.shape[2:]
    result, _ = run(image, scale=3, min_face=24)
    layer = result.layer("P-Net heatmap")
    s = 12 / 24 * 0.709 ** 3
    size = (math.ceil(h * s), math.ceil(w * s))
    x = (F.interpolate(image, size=size, mode="area") * 255 - 127.5) / 128
    with torch.no_grad():
        logits = load_mtcnn()[0].conv4_1(load_mtcnn()[0].features(x)["conv3"])
    want = torch.softmax(logits, 1)[0, 1]
    assert layer.maps.shape == want.shape and torch.allclose(layer.maps, want, atol=TOL)
    sx, sy = size[1] / w, size[0] / h
    mh, mw = want.shape
    assert layer.extent == pytest.approx((5 / sx, 5 / sy, mw * 2 / sx, mh * 2 / sy))
    assert "scale 3" in layer.caption and f"{12 / s:.0f}-pixel face" in layer.caption


def test_every_scale_panel_places_each_cell_at_its_windows_centre(astronaut):
    image, result, op = astronaut
    layer = result.layer("P-Net at every scale")
    n, gh, gw = layer.maps.shape
    heat = result.layer("P-Net heatmap")  # scale 4 by default
    k = 4
    s = 0.6 * 0.709 ** k
    cells = heat.maps
    for v, u in ((40, 70), (100, 33), (gh - 30, gw - 20)):  # grid pixel (row v, column u)
        x, y = (u + 0.5) * 512 / gw, (v + 0.5) * 512 / gh
        sz = math.ceil(512 * s) / 512
        j, i = round((x * sz - 6) / 2), round((y * sz - 6) / 2)
        assert layer.maps[k, v, u] == cells[i, j]
    assert torch.isnan(layer.maps[k, 0, 0])  # no window centred in the corner
    assert layer.labels[0] == "20 px" and n == 10


def test_stage_panels_draw_the_stage_boxes(astronaut):
    image, result, _ = astronaut
    with torch.no_grad():
        d = detect(load_mtcnn(), image, 20, (0.6, 0.6, 0.7))
    for name, stage in (("After P-Net (+NMS)", d.proposals), ("After R-Net", d.refined)):
        drawn = torch.tensor(result.layer(name).boxes)
        b = stage.boxes
        assert torch.allclose(drawn, torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1), atol=1e-4)
    bars = result.layer("Boxes per stage")
    assert bars.series["boxes"].tolist() == [len(d.candidates), len(d.proposals), len(d.refined), len(d.faces)]


def test_filters_panel_shows_conv1_about_grey(astronaut):
    _, result, _ = astronaut
    grid = result.layer("P-Net conv1 filters").image  # (H, W, 3), 5 columns, 16 px per weight, 1-weight gaps
    wt = load_mtcnn()[0].conv1.weight
    f = 6  # second row, second column
    want = 0.5 + wt[f] / (2 * wt[f].abs().max())
    y0, x0 = 1 * (3 + 1) * 16, 1 * (3 + 1) * 16
    for r in range(3):
        for c in range(3):
            assert torch.allclose(grid[y0 + 16 * r + 8, x0 + 16 * c + 8], want[:, r, c], atol=1e-6)


def test_a_photo_without_a_face_says_so():
    result, _ = run(picture("brick"))
    layer = result.layer("Faces")
    assert layer.caption.startswith("No face found") and not layer.boxes and not layer.sets
    assert "no face found" in result.notes


def test_thresholds_reuse_the_pyramid_and_scale_beyond_the_last_says_so(astronaut):
    image, first, op = astronaut
    again, _ = run(image, op, rnet_threshold=0.6, onet_threshold=0.99, scale=15)
    assert again.layer("P-Net at every scale").maps is first.layer("P-Net at every scale").maps
    assert again.layer("After R-Net").boxes == first.layer("After R-Net").boxes
    assert "scale 15 asked; this image has 10 scales" in again.layer("P-Net heatmap").caption


def test_an_image_too_small_for_the_smallest_face_is_refused():
    with pytest.raises(ParamError, match="min_face"):
        run(torch.rand(1, 3, 30, 40), min_face=40)


def test_a_new_p_net_threshold_shows_p_nets_panels_first_and_the_cascade_when_it_settles():
    image = picture("camera")
    op = operator_class("lab_mtcnn")()
    with torch.no_grad():
        first = op.compute(image, validated_params("lab_mtcnn", {}), None)
        assert first.settle is None and first.names[0] == "Faces"  # a new image: every panel in the first frame
        fast = op.compute(image, validated_params("lab_mtcnn", {"pnet_threshold": 0.7}), None)
        assert set(fast.pending) == {"Faces", "After R-Net", "Boxes per stage"}
        assert not set(fast.pending) & set(fast.names) and "P-Net heatmap" in fast.names
        full = complete(fast)
        assert len(full.layer("Faces").boxes) == 1  # the cameraman
        # only O-Net's threshold moved: R-Net and O-Net are cached, the frame is complete at once
        again = op.compute(image, validated_params("lab_mtcnn", {"pnet_threshold": 0.7, "onet_threshold": 0.9}), None)
    assert again.settle is None and again.layer("After R-Net").boxes == full.layer("After R-Net").boxes
