"""The main window: canvas, operator picker, parameter form, result docks, menus, status bar.

It only wires the session to the views and to the worker; it never computes (the worker does)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from backends.imageio import DEFAULT_MAX_SIDE, ImageLoadError, LoadedImage, load_image, normalize_array
from backends.params import ParamError
from backends.registry import families, spec_of
from explorer import image_sources
from explorer.result_docks import ResultDocks
from explorer.session import Session
from explorer.settings import make_settings
from explorer.worker import ComputeWorker, Failure, Frame, JobFrame, Request, freeze
from widgets.image_canvas import ImageCanvas
from widgets.operator_picker import OperatorPicker
from widgets.param_form import ParamForm
from widgets.sketchpad import Sketchpad

Area = QtCore.Qt.DockWidgetArea
BANNER_STYLES = {
    "error": "background:#6b1d1d; color:#fff; padding:6px; border-radius:3px;",
    "notice": "background:#5a4a12; color:#fff; padding:6px; border-radius:3px;",
}


class MainWindow(QtWidgets.QMainWindow):
    frameApplied = QtCore.Signal(int)  # stamp
    frameFailed = QtCore.Signal(str)
    imageRejected = QtCore.Signal(str)

    def __init__(self, session: Session, worker: ComputeWorker, device_text: str,
                 max_side: int = DEFAULT_MAX_SIDE, restore_layout: bool = True) -> None:
        super().__init__()
        self.session = session
        self.worker = worker
        self.max_side = max_side
        self.settings = make_settings()
        self.recent = image_sources.RecentFiles(self.settings)
        self._stamp = 0
        self._submitted: dict[int, float] = {}
        self._pending_frame: Optional[Frame] = None
        self._settling = False  # the applied frame's pending layers are still to come
        self._applied_stamp = 0
        self._restored_ops: set[str] = set()
        self._restore_layout = restore_layout
        self.last_latency_ms = 0.0
        self._closed = False
        self._last_key: Optional[tuple] = None
        self._busy_timer = QtCore.QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.setInterval(150)
        self._busy_timer.timeout.connect(self._show_busy)
        self.last_compute_ms = 0.0
        self.last_apply_ms = 0.0
        self.setWindowTitle("OpScope")
        self.setObjectName("OpScopeMain")
        self.setAcceptDrops(True)
        self.setDockOptions(QtWidgets.QMainWindow.DockOption.AnimatedDocks | QtWidgets.QMainWindow.DockOption.AllowNestedDocks
                            | QtWidgets.QMainWindow.DockOption.AllowTabbedDocks)

        self._build_central()
        self._build_side_docks()
        self.docks = ResultDocks(self, self._wire_canvas)
        self.docks.docksChanged.connect(self._on_docks_changed)
        self._build_status_bar(device_text)
        self._build_menus()

        session.imageChanged.connect(self._on_image_changed)
        session.operatorChanged.connect(self._on_operator_changed)
        session.paramsChanged.connect(self._on_params_changed)
        session.queryChanged.connect(self._on_query_changed)
        worker.frameReady.connect(self._on_frame)
        worker.failed.connect(self._on_failure)
        worker.jobProgress.connect(self._on_job_progress)
        worker.jobEnded.connect(self._on_job_ended)
        worker.deviceChanged.connect(self._on_device_changed)

        self._show_operator_form()
        self.resize(1600, 1000)
        if restore_layout:
            geometry = self.settings.value("window/geometry")
            if geometry is not None:
                self.restoreGeometry(geometry)

    # -- construction --------------------------------------------------------------------------
    def _build_central(self) -> None:
        host = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(host)
        layout.setContentsMargins(2, 2, 2, 2)
        self.banner = QtWidgets.QLabel()
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.canvas = ImageCanvas()
        self._wire_canvas(self.canvas)
        layout.addWidget(self.banner)
        layout.addWidget(self.canvas, 1)
        self.setCentralWidget(host)

    def _build_side_docks(self) -> None:
        self.picker = OperatorPicker()
        self.picker.set_operators({
            fam: [(s.name, s.title, s.description) for s in specs] for fam, specs in families().items()
        })
        self.picker.operatorChosen.connect(self.session.set_operator)
        self.form = ParamForm()
        self.form.valueChanged.connect(self._on_form_value)
        self.form.resetRequested.connect(self.reset_operator)
        self.job_buttons: dict[str, QtWidgets.QPushButton] = {}
        form_scroll = QtWidgets.QScrollArea()
        form_scroll.setWidgetResizable(True)
        form_scroll.setWidget(self.form)
        self.picker_dock = self._side_dock("Operators", self.picker)
        self.params_dock = self._side_dock("Parameters", form_scroll)
        self.sketchpad = Sketchpad()
        self.sketchpad.sketched.connect(self._on_sketch)
        self.sketch_dock = self._side_dock("Sketchpad", self.sketchpad)
        self.addDockWidget(Area.LeftDockWidgetArea, self.picker_dock)
        self.addDockWidget(Area.LeftDockWidgetArea, self.params_dock)
        self.addDockWidget(Area.LeftDockWidgetArea, self.sketch_dock)
        self.splitDockWidget(self.picker_dock, self.params_dock, QtCore.Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.params_dock, self.sketch_dock)
        self.params_dock.raise_()
        self.resizeDocks([self.picker_dock, self.params_dock], [220, 700], QtCore.Qt.Orientation.Vertical)
        self.resizeDocks([self.picker_dock], [330], QtCore.Qt.Orientation.Horizontal)

    def _side_dock(self, title: str, widget: QtWidgets.QWidget) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(f"side:{title}")
        dock.setWidget(widget)
        return dock

    def _build_status_bar(self, device_text: str) -> None:
        bar = self.statusBar()
        self.device_label = QtWidgets.QLabel(f"device: {device_text}")
        self.image_label = QtWidgets.QLabel("no image")
        self.timing_label = QtWidgets.QLabel("")
        self.cursor_label = QtWidgets.QLabel("")
        self.cursor_label.setMinimumWidth(230)
        self.job_progress = QtWidgets.QProgressBar()
        self.job_progress.setMaximumWidth(180)
        self.job_progress.setVisible(False)
        for w in (self.cursor_label, self.timing_label, self.image_label, self.job_progress, self.device_label):
            bar.addPermanentWidget(w)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        self._action(file_menu, "&Open Image…", self.open_dialog, QtGui.QKeySequence.StandardKey.Open)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        samples_menu = file_menu.addMenu("&Samples")
        for name, path in image_sources.samples().items():
            samples_menu.addAction(name, lambda p=path: self.open_path(p))
        self._action(file_menu, "&Paste Image", self.paste_image, QtGui.QKeySequence.StandardKey.Paste)
        self._action(file_menu, "&Sketch…", self.show_sketchpad, "Ctrl+K")
        file_menu.addSeparator()
        self._action(file_menu, "&Export Window as PNG…", self.export_window_dialog, "Ctrl+E")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)

        edit_menu = mb.addMenu("&Edit")
        self._action(edit_menu, "&Reset Parameters", self.reset_operator, "Ctrl+R")
        self._action(edit_menu, "&Forget Learned State", self.forget_learned_state)

        self.view_menu = mb.addMenu("&View")
        self._fill_view_menu()

        ops_menu = mb.addMenu("&Operators")
        for fam, specs in families().items():
            sub = ops_menu.addMenu(fam)
            for spec in specs:
                sub.addAction(spec.title, lambda n=spec.name: self.session.set_operator(n))

        help_menu = mb.addMenu("&Help")
        self._action(help_menu, "&Keyboard Shortcuts", self._show_shortcuts, "F1")

    def _action(self, menu: QtWidgets.QMenu, text: str, slot, shortcut=None) -> QtGui.QAction:
        act = menu.addAction(text, slot)
        if shortcut is not None:
            act.setShortcut(QtGui.QKeySequence(shortcut))
        return act

    def _fill_view_menu(self) -> None:
        menu = self.view_menu
        menu.clear()
        self._action(menu, "&Fit to Window", self.canvas.fit, "Ctrl+0")
        self._action(menu, "Zoom &1:1", self.canvas.one_to_one, "Ctrl+1")
        self._action(menu, "Reset &Layout", self.reset_layout)
        menu.addSeparator()
        for dock in (self.picker_dock, self.params_dock, self.sketch_dock, *self.docks.docks.values()):
            menu.addAction(dock.toggleViewAction())

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        paths = self.recent.list()
        for path in paths:
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))
        if not paths:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear", self.recent.clear)

    def _wire_canvas(self, canvas: ImageCanvas) -> None:
        canvas.hovered.connect(self._on_hover)
        canvas.left.connect(self._on_leave)
        if canvas.frame_coords:
            canvas.clicked.connect(self.session.set_query)
            canvas.set_marker(self.session.effective_query())

    # -- images --------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = str(Path(self.recent.list()[0]).parent) if self.recent.list() else str(image_sources.SAMPLES_DIR)
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open image", start, image_sources.FILE_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> bool:
        """Loads ``path``; on failure shows why and keeps the current image."""
        try:
            loaded = load_image(path, self.max_side)
        except ImageLoadError as exc:
            self.reject_image(str(exc))
            return False
        self.recent.add(str(path))
        self.set_image(loaded, str(path))
        return True

    def set_image(self, loaded: LoadedImage, source: str) -> None:
        self.hide_banner()
        self.session.set_image(loaded, source)
        if loaded.notice:
            self.show_banner(loaded.notice, "notice")

    def reject_image(self, message: str) -> None:
        self.show_banner(f"Image not loaded: {message}. The current image is kept.", "error")
        self.statusBar().showMessage(message, 8000)
        self.imageRejected.emit(message)

    def show_sketchpad(self) -> None:
        self.sketch_dock.setVisible(True)
        self.sketch_dock.raise_()
        self._on_sketch(self.sketchpad.canvas.pixels())

    def _on_sketch(self, pixels: np.ndarray) -> None:
        """Each finished stroke (and the pen, throttled) becomes the working image."""
        self.set_image(normalize_array(pixels, "sketch", self.max_side), "sketch")

    def paste_image(self) -> None:
        self._load_mime(QtGui.QGuiApplication.clipboard().mimeData(), "clipboard")

    def _load_mime(self, mime: Optional[QtCore.QMimeData], source: str) -> None:
        if mime is None:
            self.reject_image(f"the {source} is empty")
            return
        try:
            loaded, path = image_sources.clipboard_image(mime, self.max_side)
        except ImageLoadError as exc:
            self.reject_image(str(exc))
            return
        if path is not None:
            self.open_path(path)
        else:
            self.set_image(loaded, source)

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        self._load_mime(event.mimeData(), "drop")
        event.acceptProposedAction()

    # -- session to views ----------------------------------------------------------------------
    def _on_image_changed(self) -> None:
        image = self.session.image
        self.canvas.set_image(image.pixels, (0.0, 1.0))
        self.canvas.fit()
        w, h = image.size
        ow, oh = image.original_size
        size = f"{w}x{h}" + (f" (of {ow}x{oh})" if (ow, oh) != (w, h) else "")
        self.image_label.setText(f"{image.name}  {size}")
        self.setWindowTitle(f"OpScope — {image.name}")
        self._on_query_changed(schedule=False)
        self.schedule()

    def _on_operator_changed(self, name: str) -> None:
        self._save_layout()
        self.worker.stop_job()
        self.docks.clear()
        self._show_operator_form()
        self.hide_banner()
        self.schedule()

    def _show_operator_form(self) -> None:
        spec = spec_of(self.session.operator)
        self.form.set_specs(spec.params, self.session.params(), spec.title, spec.description)
        self.picker.select(spec.name)
        self._build_job_buttons(spec)

    def _build_job_buttons(self, spec) -> None:
        box = self.form.actions_box
        while box.count():
            item = box.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.job_buttons.clear()
        for action in spec.actions:
            button = QtWidgets.QPushButton(action.title if action.instant else f"Start {action.title}")
            button.setToolTip(action.help)
            if action.instant:
                button.clicked.connect(lambda _=False, a=action.name: self.start_job(a))
            else:
                button.setCheckable(True)
                button.toggled.connect(lambda on, a=action.name: self.start_job(a) if on else self.worker.stop_job())
            box.addWidget(button)
            self.job_buttons[action.name] = button

    def reset_operator(self) -> None:
        """Defaults, and a clean slate: fitted or trained state is forgotten too."""
        self.worker.stop_job()
        self.worker.reset_operator(self.session.operator)
        self.session.reset_params()
        self.schedule(force=True)

    def forget_learned_state(self) -> None:
        self.worker.stop_job()
        self.worker.reset_operator(self.session.operator)
        self.schedule(force=True)

    def _on_form_value(self, name: str, value) -> None:
        try:
            self.session.set_param(name, value)
        except ParamError as exc:
            self.show_banner(f"Not applied: {exc}", "error")
            self.form.set_values(self.session.params())

    def _on_params_changed(self, name: str) -> None:
        if not name:
            self.form.set_values(self.session.params())
        self.schedule()

    def _on_query_changed(self, schedule: bool = True) -> None:
        q = self.session.effective_query()
        self.canvas.set_marker(q)
        for canvas in self.docks.canvases():
            canvas.set_marker(q)
        if schedule and spec_of(self.session.operator).uses_query:
            self.schedule()

    def _on_hover(self, x: float, y: float) -> None:
        point = (int(np.floor(x)), int(np.floor(y)))
        self.canvas.set_crosshair(point)
        for canvas in self.docks.canvases():
            canvas.set_crosshair(point)
        value = self.canvas.value_at(x, y)
        if value is None:
            self.cursor_label.setText("")
        else:
            self.cursor_label.setText(f"x {point[0]}  y {point[1]}  rgb " + " ".join(f"{v:.3f}" for v in value))

    def _on_leave(self) -> None:
        self.canvas.set_crosshair(None)
        for canvas in self.docks.canvases():
            canvas.set_crosshair(None)

    # -- scheduling ----------------------------------------------------------------------------
    def make_request(self) -> Optional[Request]:
        if self.session.pixels is None:
            return None
        self._stamp += 1
        return Request(
            stamp=self._stamp,
            operator=self.session.operator,
            params=freeze(self.session.params()),
            query=self.session.effective_query(),
            image_key=self.session.image_key,
            image=self.session.pixels,
        )

    def schedule(self, force: bool = False) -> Optional[int]:
        """Submits the session's current request, unless it is the one last submitted."""
        if self.session.pixels is None:
            return None
        key = (self.session.operator, freeze(self.session.params()), self.session.effective_query(), self.session.image_key)
        if key == self._last_key and not force:
            return None
        self._last_key = key
        request = self.make_request()
        self._submitted[request.stamp] = time.perf_counter()
        self.worker.submit(request, force=force)
        self._busy_timer.start()
        return request.stamp

    def _show_busy(self) -> None:
        """Anything slower than a blink says so, with how long it has taken so far."""
        pending = [t for s, t in self._submitted.items() if s > self._applied_stamp]
        if pending:
            waited = (time.perf_counter() - min(pending)) * 1e3
            self.timing_label.setText(f"computing… {waited:.0f} ms")
            self._busy_timer.start()

    def start_job(self, action: str) -> None:
        request = self.make_request()
        if request is None:
            return
        self.job_progress.setVisible(True)
        self.job_progress.setValue(0)
        self.worker.start_job(request, action)

    # -- results -------------------------------------------------------------------------------
    def frame_settled(self) -> bool:
        """Whether the newest request is drawn with every layer, settling ones included."""
        return self._applied_stamp >= self._stamp and not self._settling

    def _on_frame(self, frame: Frame) -> None:
        # Coalesce: if the UI is behind, only the newest frame is ever drawn.
        first = self._pending_frame is None
        if first or frame.stamp >= self._pending_frame.stamp:  # a settled frame replaces its fast one
            self._pending_frame = frame
        if first:
            QtCore.QTimer.singleShot(0, self._apply_pending)

    def _apply_pending(self) -> None:
        frame, self._pending_frame = self._pending_frame, None
        if self._closed or frame is None or frame.operator != self.session.operator or frame.stamp < self._applied_stamp:
            return
        t0 = time.perf_counter()
        self.docks.show(frame.result, self.session.pixels)
        self._on_query_changed(schedule=False)
        self.last_apply_ms = (time.perf_counter() - t0) * 1e3
        self._applied_stamp = frame.stamp
        self._settling = not frame.settled
        self.last_compute_ms = frame.compute_ms
        submitted = self._submitted.pop(frame.stamp, None)
        for stale in [s for s in self._submitted if s < frame.stamp]:
            del self._submitted[stale]
        if submitted is not None:
            self.last_latency_ms = (time.perf_counter() - submitted) * 1e3
        if self.banner.property("level") == "error":
            self.hide_banner()
        if frame.notice:
            self.show_banner(frame.notice, "notice")
        paint = max((c.last_paint_ms for c in self.docks.canvases()), default=0.0)
        self.timing_label.setText(f"compute {frame.compute_ms:.1f} ms · render {self.last_apply_ms + paint:.1f} ms")
        self.frameApplied.emit(frame.stamp)

    def _on_failure(self, failure: Failure) -> None:
        if failure.operator != self.session.operator:
            return
        self._submitted.pop(failure.stamp, None)
        self._settling = False
        self._last_key = None  # the same request may be retried
        self._busy_timer.stop()
        self.timing_label.setText("failed")
        self.show_banner(f"{spec_of(failure.operator).title} failed: {failure.message}. Showing the last good frame.", "error")
        self.frameFailed.emit(failure.message)

    def _on_job_progress(self, job: JobFrame) -> None:
        if job.operator != self.session.operator:
            return
        if job.progress is not None:
            self.job_progress.setRange(0, 1000)
            self.job_progress.setValue(int(job.progress * 1000))
        else:
            self.job_progress.setRange(0, 0)
        self.job_progress.setFormat(job.message or "%p%")
        if job.result is not None:
            self.docks.show(job.result, self.session.pixels)
        self.timing_label.setText(f"step {job.step_ms:.1f} ms · {job.message}")

    def _on_job_ended(self, operator: str, action: str, how: str) -> None:
        self.job_progress.setVisible(False)
        button = self.job_buttons.get(action)
        if button is not None:
            with QtCore.QSignalBlocker(button):
                button.setChecked(False)
        if how not in ("done", "stopped"):
            self.show_banner(f"{action} stopped with an error: {how}", "error")
        else:
            self.statusBar().showMessage(f"{action}: {how}", 5000)
        self.schedule(force=True)

    def _on_device_changed(self, description: str, notice: str) -> None:
        self.device_label.setText(f"device: {description}")
        self.show_banner(notice, "notice")

    # -- banner, layout, export ----------------------------------------------------------------
    def show_banner(self, text: str, level: str = "error") -> None:
        self.banner.setText(text)
        self.banner.setStyleSheet(BANNER_STYLES[level])
        self.banner.setProperty("level", level)
        self.banner.setVisible(True)

    def hide_banner(self) -> None:
        self.banner.setVisible(False)
        self.banner.setProperty("level", "")

    def _on_docks_changed(self) -> None:
        self._fill_view_menu()
        op = self.session.operator
        if self._restore_layout and op not in self._restored_ops:
            self._restored_ops.add(op)
            state = self.settings.value(f"window/state/{op}")
            if state is not None:
                self.restoreState(state)

    def reset_layout(self) -> None:
        self.settings.remove(f"window/state/{self.session.operator}")
        for dock in (self.picker_dock, self.params_dock, self.sketch_dock):
            dock.setFloating(False)
            dock.setVisible(True)
            self.addDockWidget(Area.LeftDockWidgetArea, dock)
        self.splitDockWidget(self.picker_dock, self.params_dock, QtCore.Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.params_dock, self.sketch_dock)
        self.params_dock.raise_()
        self.docks.arrange()

    def _save_layout(self) -> None:
        if self.docks.docks:
            self.settings.setValue(f"window/state/{self.session.operator}", self.saveState())

    def export_window_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export window", "opscope.png", "PNG image (*.png)")
        if path and not self.grab().save(path, "PNG"):
            self.show_banner(f"Could not write {path}", "error")

    def _show_shortcuts(self) -> None:
        lines = [
            "Ctrl+O  open image", "Ctrl+V  paste image", "Ctrl+E  export window as PNG", "Ctrl+R  reset parameters",
            "Ctrl+K  sketchpad (draw an input image)", "Ctrl+0  fit image", "Ctrl+1  zoom 1:1", "Ctrl+Q  quit",
            "Click   set the query point", "Wheel   zoom, drag to pan", "Right-click a panel  export it",
        ]
        QtWidgets.QMessageBox.information(self, "Keyboard shortcuts", "\n".join(lines))

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self._closed = True
        for signal, slot in ((self.worker.frameReady, self._on_frame), (self.worker.failed, self._on_failure),
                             (self.worker.jobProgress, self._on_job_progress), (self.worker.jobEnded, self._on_job_ended),
                             (self.worker.deviceChanged, self._on_device_changed)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        self._save_layout()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        super().closeEvent(event)
