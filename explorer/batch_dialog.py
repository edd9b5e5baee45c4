"""File > Batch…: the current operator and parameters applied to a folder of images, from the
window, with progress and Cancel.

The work is ``explorer.batch.run_batch`` (the command line's own), run on a thread of its own so
that the window stays live; its progress callback reports here by a queued signal and answers a
Cancel between images. The results and manifest.json are what ``--batch`` writes; an unreadable
file is listed by name and the rest are processed. With a Ray address (``local`` or
``ray://HOST:PORT``) each image is a Ray task (explorer/cluster.py), joined on the batch's thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from PySide6 import QtCore, QtWidgets

from backends.registry import spec_of
from explorer.batch import MANIFEST, BatchReport, run_batch
from widgets.dialogs import show_in_front


class BatchRun(QtCore.QObject):
    """One batch on a thread; ``progressed(done, total, name)`` and ``finished(report or message)``."""

    progressed = QtCore.Signal(int, int, str)
    finished = QtCore.Signal(object)  # BatchReport, or a str when the batch could not run at all

    def __init__(self, folder: Path, out: Path, operator: str, params: dict, max_side: int, device,
                 parent: Optional[QtCore.QObject] = None, ray_address: str = "") -> None:
        super().__init__(parent)
        self.args = (folder, out, operator, dict(params), max_side, device)
        self.ray_address = ray_address
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opscope-batch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stops before the next image; the images done stay written."""
        self._cancel.set()

    def wait(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _progress(self, done: int, total: int, name: str) -> bool:
        self.progressed.emit(done, total, name)
        return not self._cancel.is_set()

    def _run(self) -> None:
        try:
            executor = None
            if self.ray_address:
                from explorer.cluster import RayExecutor

                self.progressed.emit(0, 0, f"joining Ray at {self.ray_address}…")
                executor = RayExecutor(self.ray_address)
            outcome = run_batch(*self.args, progress=self._progress, executor=executor)
        except Exception as exc:  # no Ray, an unreachable cluster (ClusterError says which)  # an output folder that cannot be made, an operator that cannot load
            outcome = f"{type(exc).__name__}: {exc}"
        self.finished.emit(outcome)


def summary(report: BatchReport, out: Path) -> str:
    """What the batch did, as the dialog says it: counts, then each failed file by name."""
    done = len(report.items) - len(report.failed)
    head = f"Processed {done} of {report.total} images into {out} ({MANIFEST} lists each)."
    if report.cancelled:
        head = f"Cancelled after {len(report.items)} of {report.total} images: {done} written into {out}."
    return "\n".join([head, *(f"{item.file}: {item.error}" for item in report.failed)])


class BatchDialog(QtWidgets.QDialog):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window_ = window
        self.run: Optional[BatchRun] = None
        self.report: Optional[BatchReport] = None
        self.setWindowTitle("Batch")
        self.what = QtWidgets.QLabel()
        self.what.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.what.setWordWrap(True)
        self.in_edit, self.out_edit = QtWidgets.QLineEdit(), QtWidgets.QLineEdit()
        self.ray_edit = QtWidgets.QLineEdit()
        self.ray_edit.setPlaceholderText("this machine (or local, ray://HOST:PORT: each image a Ray task)")
        form = QtWidgets.QFormLayout()
        form.addRow(self.what)
        for label, edit in (("Images from", self.in_edit), ("Results to", self.out_edit)):
            row = QtWidgets.QHBoxLayout()
            row.addWidget(edit)
            browse = QtWidgets.QPushButton("Browse…")
            browse.clicked.connect(lambda _=False, e=edit: self._browse(e))
            row.addWidget(browse)
            form.addRow(label, row)
        form.addRow("Ray cluster", self.ray_edit)
        self.progress = QtWidgets.QProgressBar()
        self.status = QtWidgets.QPlainTextEdit()
        self.status.setReadOnly(True)
        self.status.setMaximumBlockCount(500)
        self.run_button, self.cancel_button = QtWidgets.QPushButton("Run"), QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        close = QtWidgets.QPushButton("Close")
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        close.clicked.connect(self.close)
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.run_button, self.cancel_button, close):
            buttons.addWidget(b)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.refresh()

    def refresh(self) -> None:
        session = self.window_.session
        values = ", ".join(f"{k}={v}" for k, v in session.params().items())
        self.what.setText(f"{spec_of(session.operator).title} with {values or 'its defaults'}")

    def _browse(self, edit: QtWidgets.QLineEdit) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if path:
            edit.setText(path)

    def start(self) -> Optional[BatchRun]:
        """Runs the batch with the current operator and parameters; bad folders are said here."""
        folder, out = Path(self.in_edit.text()).expanduser(), Path(self.out_edit.text()).expanduser()
        if not self.in_edit.text() or not folder.is_dir():
            self.status.setPlainText(f"Not started: no folder {folder}")
            return None
        if not self.out_edit.text() or out.resolve() == folder.resolve():
            self.status.setPlainText("Not started: choose a results folder other than the images' folder")
            return None
        session, w = self.window_.session, self.window_
        self.refresh()
        self.report = None
        self.run = BatchRun(folder, out, session.operator, session.params(), w.images.max_side,
                            w.scheduler.worker.device, self, self.ray_edit.text().strip())
        self.run.progressed.connect(self._on_progress)
        self.run.finished.connect(self._on_finished)
        self.status.setPlainText(f"Processing {folder}…")
        self._set_running(True)
        self.run.start()
        return self.run

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _on_progress(self, done: int, total: int, name: str) -> None:
        if total == 0:  # joining a cluster: no count yet, a busy bar and what it waits for
            self.progress.setRange(0, 0)
            self.status.setPlainText(name)
            return
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"%v of %m  {name}" if name else "%v of %m")

    def _on_finished(self, outcome) -> None:
        self.run.wait()
        self._set_running(False)
        if isinstance(outcome, BatchReport):
            self.report = outcome
            self.status.setPlainText(summary(outcome, Path(self.out_edit.text())))
            self.window_.statusBar().showMessage(self.status.toPlainText().splitlines()[0], 8000)
        else:
            self.status.setPlainText(f"The batch could not run: {outcome}")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.in_edit.setEnabled(not running)
        self.out_edit.setEnabled(not running)
        self.ray_edit.setEnabled(not running)

    def closeEvent(self, event) -> None:
        self.cancel()
        super().closeEvent(event)


def show_dialog(window) -> BatchDialog:
    """File > Batch…: one dialog per window, showing the operator and values it will apply."""
    dialog = window.findChild(BatchDialog)
    if dialog is None:
        dialog = BatchDialog(window)
    elif dialog.run is None or not dialog.run.running:
        dialog.refresh()
    show_in_front(dialog)
    return dialog
