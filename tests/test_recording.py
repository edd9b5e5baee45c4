"""Sweeps and batches from the window: File > Record Sweep… writes an MP4 or a GIF with one frame
per value without blocking the window, Cancel leaves no file; File > Batch… processes a folder on
a thread, names an unreadable file and processes the rest, and Cancel stops early with the
manifest saying so."""

import json

import cv2
import numpy as np
import pytest
from PySide6 import QtCore

from explorer import batch_dialog, sweep_dialog
from explorer.batch import run_batch
from explorer.sweep import FrameWriter, sweep_values
from tests.test_batch import folder_with_a_broken_file

RECORD_TIMEOUT_MS = 60_000


def start_recording(app, out, panel="Dilated kernel", start=1, stop=7, count=4):
    dialog = sweep_dialog.show_dialog(app.window)
    dialog.param_box.setCurrentText("dilation")
    dialog.start_box.setValue(start)
    dialog.stop_box.setValue(stop)
    dialog.count_box.setValue(count)
    dialog.panel_box.setCurrentText(panel)
    dialog.path_edit.setText(str(out))
    return dialog, dialog.record()


def test_a_sweep_records_an_mp4_with_one_frame_per_value_without_blocking_the_window(app, qtbot, tmp_path):
    before = app.session.params()["dilation"]
    out = tmp_path / "sweep.mp4"
    dialog, recorder = start_recording(app, out)
    assert recorder is not None and recorder.running  # record() returned before the frames were made
    with qtbot.waitSignal(recorder.finished, timeout=RECORD_TIMEOUT_MS) as done:
        pass
    assert done.args[0] is True, done.args[1]
    video = cv2.VideoCapture(str(out))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    frames = [video.read()[1] for _ in range(4)]
    video.release()
    assert all(f is not None for f in frames)
    # dilations 1, 3, 5, 7 draw different kernels: no two frames alike
    assert all(np.abs(frames[i].astype(int) - frames[j]).mean() > 1 for i in range(4) for j in range(i))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.mp4"]  # no temporary file left
    assert app.session.params()["dilation"] == before  # the parameter is put back
    assert dialog.progress.value() == 4 and "4 frames" in dialog.status.text()


def test_a_sweep_records_a_gif_by_its_suffix(app, qtbot, tmp_path):
    from PIL import Image

    out = tmp_path / "sweep.gif"
    _, recorder = start_recording(app, out, count=3, stop=9)
    with qtbot.waitSignal(recorder.finished, timeout=RECORD_TIMEOUT_MS) as done:
        pass
    assert done.args[0] is True, done.args[1]
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
        assert gif.info["loop"] == 0


def test_cancel_leaves_no_file_and_puts_the_parameter_back(app, qtbot, tmp_path):
    before = app.session.params()["dilation"]
    out = tmp_path / "cancelled.mp4"
    dialog, recorder = start_recording(app, out, count=12, stop=12)
    qtbot.waitUntil(lambda: dialog.progress.value() >= 1, timeout=RECORD_TIMEOUT_MS)
    with qtbot.waitSignal(recorder.finished, timeout=RECORD_TIMEOUT_MS) as done:
        dialog.cancel()
    assert done.args == [False, "Cancelled: no file was written."]
    assert list(tmp_path.iterdir()) == []  # neither the video nor its temporary file
    assert app.session.params()["dilation"] == before
    assert dialog.record_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_a_bad_choice_is_said_in_the_dialog(app, tmp_path):
    _, recorder = start_recording(app, tmp_path / "missing" / "x.mp4")
    assert recorder is None
    dialog = sweep_dialog.show_dialog(app.window)
    assert "no folder" in dialog.status.text()
    dialog.path_edit.setText(str(tmp_path / "x.avi"))
    assert dialog.record() is None and ".mp4 or .gif" in dialog.status.text()


def test_choice_parameters_sweep_every_choice():
    from backends.registry import spec_of

    kernel = next(p for p in spec_of("dilated").params if p.name == "kernel")
    assert sweep_values("dilated", "kernel") == list(kernel.choices)
    assert sweep_values("dilated", "dilation", 1, 16, 16) == list(range(1, 17))


def test_the_frame_writer_aborts_without_a_trace(tmp_path):
    for name in ("a.gif", "a.mp4"):
        writer = FrameWriter(tmp_path / name)
        writer.add(np.zeros((10, 12, 3), np.uint8))
        writer.abort()
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="no frames"):
        FrameWriter(tmp_path / "b.mp4").close()


def test_the_batch_dialog_names_the_unreadable_file_and_processes_the_rest(app, qtbot, tmp_path):
    folder = folder_with_a_broken_file(tmp_path)
    app.session.set_param("dilation", 4)
    dialog = batch_dialog.show_dialog(app.window)
    dialog.in_edit.setText(str(folder))
    dialog.out_edit.setText(str(tmp_path / "out"))
    run = dialog.start()
    assert run is not None
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=RECORD_TIMEOUT_MS)
    assert [(i.file, i.status) for i in dialog.report.items] == [("broken.jpg", "failed"), ("chelsea.png", "done"),
                                                                 ("coins.png", "done")]
    text = dialog.status.toPlainText()
    assert text.startswith("Processed 2 of 3 images") and "broken.jpg: " in text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["failed"] == ["broken.jpg"] and manifest["cancelled"] is False
    assert manifest["params"]["dilation"] == 4 and manifest["operator"] == "dilated"
    assert dialog.progress.value() == 3 and dialog.run_button.isEnabled()


def test_a_cancelled_batch_stops_early_and_its_manifest_says_so(qtbot, tmp_path):
    import torch

    folder = folder_with_a_broken_file(tmp_path)
    run = batch_dialog.BatchRun(folder, tmp_path / "out", "dilated", {}, 512, torch.device("cpu"))
    # a direct connection runs on the batch's thread, before it asks whether to go on
    run.progressed.connect(lambda done, total, name: done == 1 and run.cancel(), QtCore.Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(run.finished, timeout=RECORD_TIMEOUT_MS) as done:
        run.start()
    run.wait()
    report = done.args[0]
    assert report.cancelled and report.total == 3 and [i.file for i in report.items] == ["broken.jpg"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cancelled"] is True and manifest["total"] == 3 and len(manifest["items"]) == 1
    assert "Cancelled after 1 of 3 images" in batch_dialog.summary(report, tmp_path / "out")


def test_run_batch_calls_progress_before_each_image_and_at_the_end(tmp_path):
    import torch

    calls = []
    run_batch(folder_with_a_broken_file(tmp_path), tmp_path / "out", "dilated", {}, 512, torch.device("cpu"),
              progress=lambda *a: calls.append(a))
    assert calls == [(0, 3, "broken.jpg"), (1, 3, "chelsea.png"), (2, 3, "coins.png"), (3, 3, "")]
