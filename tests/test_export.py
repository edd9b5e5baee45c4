"""File > Export All: every file written reads back (PNG size through OpenCV equals the layer's
data size, .npy equals the layer's numbers computed here independently, the JSON has its keys);
and the A/B split: pixels left of the divider are A's, right of it B's."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch

from backends.layers import complete, materialize
from backends.registry import operator_class


def test_export_all_writes_every_panel_as_png_npy_and_a_manifest(app, qtbot, tmp_path):
    w = app.window
    with qtbot.waitSignal(w.exports.exported, timeout=60_000):
        assert w.exports.export(tmp_path)
    manifest = json.loads((tmp_path / "export.json").read_text())
    for key in ("format", "version", "operator", "params", "device", "image", "panels"):
        assert key in manifest
    assert manifest["operator"] == "dilated" and len(manifest["image"]["sha256"]) == 64
    pixels = torch.from_numpy(w.session.pixels).permute(2, 0, 1)[None]
    expected = materialize(complete(operator_class("dilated")().compute(pixels, w.session.params(), w.session.effective_query())))
    assert set(manifest["panels"]) == set(expected.names)
    for layer in expected.layers:
        entry = manifest["panels"][layer.name]
        assert entry["png"], layer.name  # a picture at data resolution, or the panel as drawn
        png = cv2.imread(str(tmp_path / entry["png"]))
        assert png is not None and png.size
        if layer.name == "Output":
            assert entry["png_resolution"] == "data" and png.shape[:2] == layer.image.shape[:2]
            np.testing.assert_allclose(np.load(tmp_path / entry["npy"]["image"]["file"]), layer.image, atol=1e-6)
        for info in entry["npy"].values():
            assert list(np.load(tmp_path / info["file"]).shape) == info["shape"]


def test_a_single_panel_exports_its_numbers(app, qtbot, tmp_path):
    w = app.window
    with qtbot.waitSignal(w.exports.exported, timeout=60_000):
        w.exports.export(tmp_path, only="Dilated kernel")
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert list(manifest["panels"]) == ["Dilated kernel"]


def test_the_split_shows_a_left_of_the_divider_and_b_right_of_it(app, qtbot):
    from widgets.stage import split_composite

    a = np.zeros((20, 40, 3), np.uint8)
    a[..., 0] = 255
    b = np.zeros((20, 40, 3), np.uint8)
    b[..., 2] = 255
    out = split_composite(a, b, 0.25)
    assert (out[:, :10] == a[:, :10]).all() and (out[:, 10:] == b[:, 10:]).all()

    stage = app.window.stage
    stage.pin(a)
    stage.compare_with(b)
    stage.set_mode("A|B")
    view = stage.split_view
    assert view.isVisible() and not stage.pinned.isVisible()
    qtbot.waitUntil(lambda: view.composite() is not None)  # the split fills once it has its size
    view.set_fraction(0.5)
    shot = view.grab().toImage().convertToFormat(view.grab().toImage().Format.Format_RGB888)
    rect = view.picture_rect()
    y = int(rect.center().y()) + 4  # below the labels
    left, right = shot.pixelColor(int(rect.left() + rect.width() * 0.2), y), shot.pixelColor(int(rect.left() + rect.width() * 0.8), y)
    assert (left.red(), left.blue()) == (255, 0) and (right.red(), right.blue()) == (0, 255)
    stage.set_mode("result")
