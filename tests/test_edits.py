"""Image > Apply at the original's full resolution, its undo and the edit history, File > Save
Image, and sessions that keep an edited image.

The live view is downscaled (max_side 240 of a 960x640 image, 4x); a warp applied at full
resolution must equal the live result upscaled within WARP_TOL (mean absolute difference, on a
smooth image so that downscaling loses almost nothing) and WARP_MAX (the largest), both over the
pixels more than EDGE px from where the warped picture meets the zeros padding (upscaling blurs
that step). Measured: mean 0.0013, largest 0.013 (the live picture is 8-bit display form)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backends.imageio import load_image

FULL = (960, 640)  # (width, height) of the original
LIVE_SIDE = 240
WARP_TOL = 2e-3  # mean |full - upscaled live|, in [0, 1] units
WARP_MAX = 0.02  # largest
EDGE = 8  # px at full resolution


def inside_picture(full):
    """Pixels more than EDGE px from the zeros padding around the warped picture."""
    picture = (full.max(axis=2) > 0.02).astype(np.uint8)
    return cv2.erode(picture, np.ones((2 * EDGE + 1, 2 * EDGE + 1), np.uint8), borderValue=0).astype(bool)


def smooth_image(path):
    """Low-frequency colour waves: bilinear upscaling of its downscaled copy is nearly exact."""
    w, h = FULL
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([0.5 + 0.4 * np.sin(x / 97.0), 0.5 + 0.4 * np.cos(y / 71.0), 0.5 + 0.4 * np.sin((x + y) / 131.0)], -1)
    cv2.imwrite(str(path), np.round(rgb[..., ::-1] * 255).astype(np.uint8))
    return path


@pytest.fixture
def editor(qtbot, tmp_path):
    from explorer.app import build

    path = smooth_image(tmp_path / "waves.png")
    built = build(load_image(path, LIVE_SIDE), str(path), "spatial_transformer", max_side=LIVE_SIDE,
                  restore_layout=False, synchronous=True)
    qtbot.addWidget(built.window)
    built.window.show()
    qtbot.waitUntil(built.window.frame_settled, timeout=30_000)
    yield built.window
    built.window.edits.wait()
    built.close()


def live_picture(window):
    return window.docks.centre_picture().astype(np.float32) / 255.0


def upscaled(picture, size):
    return cv2.resize(picture, size, interpolation=cv2.INTER_LINEAR)


def test_a_warp_applied_at_full_resolution_equals_the_live_result_upscaled(editor):
    w = editor
    assert w.session.image.size == (240, 160) and w.session.image.original_size == FULL
    w.session.set_params({"rotate": 30.0, "scale": 0.8, "translate_x": 0.1})
    live = live_picture(w)
    assert w.edits.apply()
    image = w.session.image
    assert image.original_size == FULL and image.full.shape == (FULL[1], FULL[0], 3)
    diff = np.abs(image.full - upscaled(live, FULL))[inside_picture(image.full)]
    assert diff.size > 0.3 * FULL[0] * FULL[1]
    assert diff.mean() < WARP_TOL and diff.max() < WARP_MAX, (diff.mean(), diff.max())


def test_the_saliency_warp_upscales_its_grid(editor, qtbot):
    w = editor
    w.session.set_operator("saliency_sampling")
    qtbot.waitUntil(w.frame_settled)
    live = live_picture(w)
    assert w.edits.apply()
    full = w.session.image.full
    lh, lw = live.shape[:2]
    assert full.shape[:2] == (lh * 4, lw * 4)  # the output's size, by the original's scale
    diff = np.abs(full - upscaled(live, (lw * 4, lh * 4)))  # border padding: no edge to leave out
    assert diff.mean() < WARP_TOL and diff.max() < WARP_MAX, (diff.mean(), diff.max())


def test_undo_restores_the_previous_image_and_frame(editor, qtbot):
    w = editor
    before_image, before_key = w.session.image, w.session.image_key
    before_frame = w.docks.centre_picture().copy()
    w.edits.apply()
    assert w.session.image is not before_image and w.session.image_key != before_key
    assert len(w.edits.history.entries) == 2 and w.edits.history.current == 1
    w.history.stack.undo()
    qtbot.waitUntil(w.frame_settled)
    assert w.session.image is before_image and w.edits.history.current == 0
    np.testing.assert_array_equal(w.docks.centre_picture(), before_frame)
    w.history.stack.redo()
    assert w.edits.history.current == 1 and w.session.image.full is not None


def test_clicking_an_earlier_state_restores_it_as_a_step(editor):
    w = editor
    original = w.session.image
    w.edits.apply()
    w.edits.panel.restoreRequested.emit(0)
    assert w.session.image is original and w.edits.history.current == 0
    assert w.edits.panel.currentRow() == 0 and w.edits.panel.count() == 2
    w.history.stack.undo()  # the restore is undone: the edit is back
    assert w.edits.history.current == 1


def test_an_operator_whose_result_is_not_an_image_cannot_be_applied(editor, qtbot):
    w = editor
    w.session.set_operator("dilated")
    assert not w.edits.apply_action.isEnabled()
    assert "not a picture" in w.edits.apply_action.toolTip()
    key = w.session.image_key
    assert not w.edits.apply()
    assert w.session.image_key == key
    w.session.set_operator("feature_statistics")
    assert w.edits.apply_action.isEnabled()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff", ".webp", ".bmp"])
def test_save_image_writes_the_full_resolution_edit_in_the_format(editor, qtbot, tmp_path, suffix):
    w = editor
    w.edits.apply()
    target = tmp_path / f"out{suffix}"
    with qtbot.waitSignal(w.edits.saved, timeout=30_000):
        w.edits.write(target)
    back = cv2.imread(str(target))[..., ::-1].astype(np.float32) / 255.0
    assert back.shape == (FULL[1], FULL[0], 3)
    tol = 0.5 / 255 + 1e-6 if suffix in (".png", ".tiff", ".bmp") else 0.05  # lossless: rounding only
    assert np.abs(back - w.session.image.full).mean() < tol


def test_save_never_overwrites_without_asking(editor, qtbot, monkeypatch):
    from PySide6 import QtWidgets

    w = editor
    original = open(w.session.state.image_source, "rb").read()
    source = w.session.state.image_source
    w.edits.apply()
    qtbot.waitUntil(lambda: w.session.state.image_source == "edit", timeout=30_000)
    asked = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "question", lambda *a, **k: asked.append(a) or QtWidgets.QMessageBox.StandardButton.No)
    w.edits.save()  # Ctrl+S after an edit: the file the edits began from, which exists
    w.edits.wait()
    assert len(asked) == 1 and open(source, "rb").read() == original


def test_a_session_round_trips_an_edited_image_and_its_history(editor, qtbot, tmp_path):
    from explorer import session_actions

    w = editor
    w.edits.apply()
    edited = w.session.image.full.copy()
    assert session_actions.save_to(w, tmp_path / "s.opscope.json")
    w.open_path(w.edits.history.entries[0].source)  # another image: the history starts over
    assert len(w.edits.history.entries) == 1
    assert session_actions.open_from(w, tmp_path / "s.opscope.json")
    image = w.session.image
    assert image.original_size == FULL and image.size == (240, 160)
    assert np.abs(image.full - edited).max() <= 0.5 / 255 + 1e-6  # an 8-bit PNG inside the session
    titles = [e.title for e in w.edits.history.entries]
    assert titles == ["original: waves.png", "Spatial transformer"] and w.edits.history.current == 1
    assert w.edits.history.entries[0].image is None and w.edits.history.entries[0].thumbnail is not None
