"""File > Record Sweep…: a parameter of the current operator swept over a range into an MP4 or an
animated GIF, filmed as the window (or one panel) draws it.

The recording never blocks the window: each value goes through the session, so the worker
computes it (as for a slider); when the frame is drawn with every layer the recorder grabs the
picture (a copy of pixels, on the UI thread), and a thread of its own encodes it. Cancel stops
at once and deletes the temporary file: no partial video is ever left under the chosen name.
At the end, or on Cancel, the parameter returns to the value it had.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from PySide6 import QtCore, QtWidgets

from backends.params import FloatParam, IntParam, ParamError
from explorer.sweep import FrameWriter, grab_rgb, panel_widget, set_shown_param, sweep_values, sweepable
from widgets.dialogs import show_in_front

WINDOW = "Whole window"
GRAB_DELAY_MS = 30  # docks finish their layout after the frame is drawn
MAX_FRAMES = 600


class _Encoder:
    """Encodes frames on a thread of its own, in order; ``finish`` or ``abort`` ends it and calls
    ``done(ok, message)`` from that thread."""

    def __init__(self, writer: FrameWriter, done) -> None:
        self.writer, self.done = writer, done
        self.error: Optional[str] = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="opscope-sweep-encoder", daemon=True)
        self._thread.start()

    def add(self, rgb) -> None:
        self._queue.put(("frame", rgb))

    def finish(self) -> None:
        self._queue.put(("finish", None))

    def abort(self) -> None:
        self._queue.put(("abort", None))

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            kind, rgb = self._queue.get()
            try:
                if kind == "frame":
                    if self.error is None:
                        self.writer.add(rgb)
                    continue
                if kind == "abort" or self.error is not None:
                    self.writer.abort()
                    self.done(False, self.error or "Cancelled: no file was written.")
                else:
                    frames = self.writer.close()
                    self.done(True, f"Wrote {self.writer.path} ({frames} frames).")
                return
            except (OSError, ValueError, RuntimeError) as exc:
                self.error = f"Could not write {self.writer.path.name}: {exc}"
                if kind != "frame":
                    self.writer.abort()
                    self.done(False, self.error)
                    return


class SweepRecorder(QtCore.QObject):
    """Drives one recording through the window; ``finished(ok, message)`` ends it."""

    progressed = QtCore.Signal(int, int)  # frames grabbed, frames in all
    finished = QtCore.Signal(bool, str)
    _encoded = QtCore.Signal(bool, str)  # from the encoder's thread

    def __init__(self, window, name: str, values: Sequence[Any], out: str | Path, panel: Optional[str] = None) -> None:
        super().__init__(window)
        self.window, self.name, self.values, self.panel = window, name, list(values), panel
        self.writer = FrameWriter(out)
        self.running = False
        self._index = 0
        self._waiting = False
        self._encoder: Optional[_Encoder] = None
        self._operator = window.session.operator
        self._before = window.session.params()[name]
        self._encoded.connect(self._on_encoded)

    def start(self) -> None:
        self.running = True
        self._encoder = _Encoder(self.writer, self._encoded.emit)
        self.window.frameApplied.connect(self._on_applied)
        self.window.frameFailed.connect(self._on_failed)
        self._next()

    def cancel(self) -> None:
        if self.running and self._encoder is not None:
            self._stop()
            self._encoder.abort()

    def _next(self) -> None:
        if not self.running:
            return
        if self._encoder.error is not None or self._index == len(self.values):
            self._stop()
            self.progressed.emit(self._index, len(self.values))
            self._encoder.finish()
            return
        if self.window.session.operator != self._operator:
            return self._fail("Stopped: the operator was switched during the recording.")
        self._waiting = True
        try:
            set_shown_param(self.window, self.name, self.values[self._index])
        except ParamError as exc:
            return self._fail(f"Stopped: {exc}")
        if self.window.frame_settled():  # the value was already set: no frame will come
            self._on_applied(0)

    def _on_applied(self, _stamp: int) -> None:
        if self._waiting and self.window.frame_settled():
            self._waiting = False
            QtCore.QTimer.singleShot(GRAB_DELAY_MS, self._grab)

    def _grab(self) -> None:
        if not self.running:
            return
        try:
            widget = self.window if self.panel is None else panel_widget(self.window, self.panel)
        except ParamError as exc:
            return self._fail(f"Stopped: {exc}")
        self._encoder.add(grab_rgb(widget))
        self._index += 1
        self.progressed.emit(self._index, len(self.values))
        self._next()

    def _on_failed(self, message: str) -> None:
        if self.running:
            self._fail(f"Stopped at {self.name} = {self.values[self._index]}: {message}")

    def _fail(self, message: str) -> None:
        self._encoder.error = message
        self.cancel()

    def _stop(self) -> None:
        """Stops listening and puts the parameter back as it was."""
        self.running = self._waiting = False
        self.window.frameApplied.disconnect(self._on_applied)
        self.window.frameFailed.disconnect(self._on_failed)
        if self.window.session.operator == self._operator:
            try:
                set_shown_param(self.window, self.name, self._before)
            except ParamError:
                pass

    def _on_encoded(self, ok: bool, message: str) -> None:
        self._encoder.join()
        self.finished.emit(ok, message)


class SweepDialog(QtWidgets.QDialog):
    """Choose the parameter, range, frame count, what to film and where; Record, Cancel."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window_ = window
        self.recorder: Optional[SweepRecorder] = None
        self.setWindowTitle("Record sweep")
        self.param_box = QtWidgets.QComboBox()
        self.start_box, self.stop_box = QtWidgets.QDoubleSpinBox(), QtWidgets.QDoubleSpinBox()
        self.count_box = QtWidgets.QSpinBox()
        self.count_box.setRange(2, MAX_FRAMES)
        self.count_box.setValue(16)
        self.panel_box = QtWidgets.QComboBox()
        self.path_edit = QtWidgets.QLineEdit()
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row = QtWidgets.QHBoxLayout()
        path_row.addWidget(self.path_edit)
        path_row.addWidget(browse)
        form = QtWidgets.QFormLayout()
        for label, field in (("Parameter", self.param_box), ("From", self.start_box), ("To", self.stop_box),
                             ("Frames", self.count_box), ("Film", self.panel_box), ("Save as (.mp4, .gif)", path_row)):
            form.addRow(label, field)
        self.progress = QtWidgets.QProgressBar()
        self.status = QtWidgets.QLabel("The window stays usable while it records; what you change shows in the video.")
        self.status.setWordWrap(True)
        self.status.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.record_button = QtWidgets.QPushButton("Record")
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        close = QtWidgets.QPushButton("Close")
        self.record_button.clicked.connect(self.record)
        self.cancel_button.clicked.connect(self.cancel)
        close.clicked.connect(self.close)
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.record_button, self.cancel_button, close):
            buttons.addWidget(b)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.param_box.currentIndexChanged.connect(self._on_param)
        self.refresh()

    def refresh(self) -> None:
        """Fills the choices from the current operator and its panels."""
        op = self.window_.session.operator
        self.param_box.blockSignals(True)
        self.param_box.clear()
        for spec in sweepable(op):
            self.param_box.addItem(spec.name, spec)
        self.param_box.blockSignals(False)
        self.panel_box.clear()
        self.panel_box.addItems([WINDOW, *self.window_.docks.panels])
        self._on_param()

    def _on_param(self) -> None:
        spec = self.param_box.currentData()
        self._enable_range()
        if isinstance(spec, (IntParam, FloatParam)):
            decimals = 0 if isinstance(spec, IntParam) else 3
            for box, value in ((self.start_box, spec.minimum), (self.stop_box, spec.maximum)):
                box.setDecimals(decimals)
                box.setRange(spec.minimum, spec.maximum)
                box.setValue(value)
        if spec is not None and not self.path_edit.text():
            self.path_edit.setText(str(Path.home() / f"{self.window_.session.operator}_{spec.name}.mp4"))

    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save sweep as", self.path_edit.text(),
                                                        "Video (*.mp4);;Animated GIF (*.gif)")
        if path:
            self.path_edit.setText(path)

    def record(self) -> Optional[SweepRecorder]:
        """Starts a recording with the dialog's choices; a bad choice is said in the dialog."""
        spec = self.param_box.currentData()
        try:
            if spec is None:
                raise ParamError("this operator has no parameter to sweep")
            values = sweep_values(self.window_.session.operator, spec.name, self.start_box.value(),
                                  self.stop_box.value(), self.count_box.value())
            out = Path(self.path_edit.text()).expanduser()
            if not out.parent.is_dir():
                raise ParamError(f"no folder {out.parent}")
            panel = None if self.panel_box.currentText() == WINDOW else self.panel_box.currentText()
            self.recorder = SweepRecorder(self.window_, spec.name, values, out, panel)
        except ParamError as exc:
            self.status.setText(f"Not recorded: {exc}")
            return None
        self.recorder.progressed.connect(self._on_progress)
        self.recorder.finished.connect(self._on_finished)
        self.progress.setRange(0, len(values))
        self.progress.setValue(0)
        self._set_running(True)
        self.status.setText(f"Recording {len(values)} frames of {spec.name}…")
        self.recorder.start()
        return self.recorder

    def cancel(self) -> None:
        if self.recorder is not None:
            self.recorder.cancel()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setValue(done)
        if done == total:
            self.status.setText(f"Writing {Path(self.path_edit.text()).name}…")

    def _on_finished(self, ok: bool, message: str) -> None:
        self._set_running(False)
        self.status.setText(message)
        if ok:
            self.window_.statusBar().showMessage(message, 8000)

    def _set_running(self, running: bool) -> None:
        self.record_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for box in (self.param_box, self.start_box, self.stop_box, self.count_box, self.panel_box, self.path_edit):
            box.setEnabled(not running)
        if not running:
            self._enable_range()

    def _enable_range(self) -> None:
        """A range for a number; a choice or a switch steps through all its values."""
        number = isinstance(self.param_box.currentData(), (IntParam, FloatParam))
        for box in (self.start_box, self.stop_box, self.count_box):
            box.setEnabled(number)

    def closeEvent(self, event) -> None:
        self.cancel()
        super().closeEvent(event)


def show_dialog(window) -> SweepDialog:
    """File > Record Sweep…: one dialog per window, its choices refreshed for the current operator."""
    dialog = window.findChild(SweepDialog)
    if dialog is None:
        dialog = SweepDialog(window)
    elif dialog.recorder is None or not dialog.recorder.running:
        dialog.refresh()
    show_in_front(dialog)
    return dialog
