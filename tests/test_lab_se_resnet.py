"""The shipped glyph SE-ResNet and its lab: the stated test accuracy, and what each panel draws
against a forward pass written out in the test (each SE block's sigmoid, Grad-CAM by hand)."""

import pytest
import torch
import torch.nn.functional as F

from backends.data.cluttered_glyphs import SIZE, from_image, test_set
from backends.layers import complete, materialize
from backends.models.glyph_se_resnet import load_glyph_se_resnet
from backends.models.weights import read_manifest
from backends.ops.lab_se_resnet import STATS_ITEMS
from backends.params import defaults
from backends.registry import operator_class, spec_of

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return load_glyph_se_resnet("cpu")


def _run(params, image):
    op = operator_class("lab_se_resnet")()
    with torch.no_grad():
        return materialize(complete(op.compute(image, {**defaults(spec_of("lab_se_resnet").params), **params}, (40, 30))))


def _image():
    torch.manual_seed(1)
    return torch.rand(1, 3, 91, 67)  # not square: the glyph is the centre square y 12..79


def _by_hand(model, x):
    """Each block's SE weights sigmoid(fc2(relu(fc1(channel means)))), the last maps and the logits."""
    h = model.stem(x * 2 - 1)
    weights = []
    for b in model.blocks:
        out = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(h)))))
        z = out.mean((2, 3))
        s = torch.sigmoid(b.se.fc2(F.relu(b.se.fc1(z))))
        weights.append(s)
        h = F.relu(out * s[:, :, None, None] + b.shortcut(h))
    return weights, h, model.fc(h.mean((2, 3)))


def test_shipped_se_resnet_reaches_its_stated_accuracy_on_the_test_set(model):
    x, y, _ = test_set()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    stated = read_manifest()["glyph_se_resnet.safetensors"]["test_accuracy"]
    assert acc >= 0.95
    assert abs(acc - stated) <= 0.005  # the manifest was measured before the float16 rounding


def test_excitation_bars_are_each_se_blocks_sigmoid_output(model):
    image = _image()
    result = _run({}, image)
    with torch.no_grad():
        weights, _, _ = _by_hand(model, from_image(image))
    for k, s in enumerate(weights):
        bars = result.layer(f"SE block {k + 1}")
        torch.testing.assert_close(torch.from_numpy(bars.series["this input"]), s[0], atol=TOL, rtol=TOL)
        assert bars.labels == tuple(str(c) for c in range(len(s[0])))


def test_test_set_means_and_the_by_class_table(model):
    x, y, _ = test_set()
    result = _run({"source": "test sample", "sample": 3, "block": 2}, _image())
    with torch.no_grad():
        weights, _, _ = _by_hand(model, x[:STATS_ITEMS])
    for k, s in enumerate(weights):
        torch.testing.assert_close(torch.from_numpy(result.layer(f"SE block {k + 1}").series["test-set mean"]),
                                   s.mean(0), atol=TOL, rtol=TOL)
    table = torch.from_numpy(result.layer("Excitations by class").image)
    assert table.shape == (11 * 4, 48)  # 10 classes and this input, each 4 pixels tall; block 2's channels
    assert (table.reshape(11, 4, 48) == table[::4, None]).all()
    table = table[::4]
    labels = y[:STATS_ITEMS]
    for c in (0, 6, 9):
        torch.testing.assert_close(table[c], weights[1][labels == c].mean(0), atol=TOL, rtol=TOL)
    torch.testing.assert_close(table[10], weights[1][3], atol=TOL, rtol=TOL)  # the last row: this input
    wide = _run({"source": "test sample", "sample": 3, "block": 3}, _image()).layer("Excitations by class").image
    assert wide.shape == (11 * 9, 96)  # 96 channels: rows 9 pixels tall, about square, so every row can be named


def test_grad_cam_is_relu_of_gradient_weighted_maps_upsampled(model):
    image = _image()
    result = _run({"target": "7"}, image)
    x = from_image(image)
    with torch.enable_grad():
        _, maps, logits = _by_hand(model, x)
        (g,) = torch.autograd.grad(logits[0, 7], maps)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * maps).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]
    layer = result.layer("Grad-CAM")
    torch.testing.assert_close(torch.from_numpy(layer.maps), expected.detach(), atol=1e-4, rtol=1e-4)
    assert layer.extent == (0.0, 12.0, 67.0, 67.0) and "class 7" in layer.caption


def test_probabilities_sum_to_one(model):
    result = _run({"source": "test sample", "sample": 11}, _image())
    probs = result.layer("Class probabilities").series["p"]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    x, _, _ = test_set()
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(probs), torch.softmax(model(x[11:12]), 1)[0], atol=TOL, rtol=TOL)


def test_the_test_set_pass_runs_once_for_fresh_slices_of_the_same_images():
    """A new Grad-CAM target must not rerun the 500-glyph pass: a fresh slice of the same test
    set is the same images (same storage and shape) and hits the cache; other images do not."""
    from backends.models.glyph_se_resnet import excitation_stats

    model = load_glyph_se_resnet(torch.device("cpu"))
    xs, ys = torch.rand(40, 1, SIZE, SIZE), torch.randint(0, 10, (40,))
    first = excitation_stats(model, xs[:20], ys[:20])
    assert excitation_stats(model, xs[:20], ys[:20]) is first
    other = excitation_stats(model, xs[20:], ys[20:])
    assert other is not first and not torch.equal(other.mean[0], first.mean[0])
