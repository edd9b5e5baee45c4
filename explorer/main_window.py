"""The main window: canvas, operator picker, parameter form, result docks, menus, status bar.

It wires the session to the views and the scheduler's frames to the docks; it never computes
(the worker does) and never builds requests (the scheduler does)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from backends.imageio import DEFAULT_MAX_SIDE, LoadedImage
from backends.params import ParamError, inactive_reason, is_active
from backends.registry import families, spec_of
from backends.timing import elapsed_ms, now
from explorer import session_actions
from explorer.autosave import Autosave
from explorer.edits import EditActions
from explorer.export import Exports
from explorer.frame_pacing import DOCKS_PER_TURN, FramePacer, PaintTimed
from explorer.history import History
from explorer.image_inputs import ImageInputs
from explorer.layout_store import LayoutStore
from explorer.menus import WindowMenus
from explorer.messages import Failure, Frame, JobEnd, JobFrame
from explorer.result_docks import ResultDocks
from explorer.scheduler import Scheduler
from explorer.session import Session
from explorer.settings import make_settings
from widgets.actions_bar import ActionItem, ActionsBar
from widgets.image_canvas import ImageCanvas
from widgets.operator_picker import OperatorPicker
from widgets.param_form import ParamForm
from widgets.sketchpad import Sketchpad
from widgets.stage import Stage

Area = QtCore.Qt.DockWidgetArea
DEFAULT_SIZE = (1600, 1000)  # without a screen to measure
LARGEST_SIZE = (2560, 1600)  # on a larger screen the window stays a window, not a wall
SCREEN_SHARE = 0.96  # of the screen's available area, leaving room for the frame


def fitting_size(screen: Optional[QtGui.QScreen]) -> tuple[int, int]:
    """Most of the screen's available area (a 1366x768 laptop, a 1920x1080 desktop), capped."""
    if screen is None:
        return DEFAULT_SIZE
    area = screen.availableGeometry()
    return (min(LARGEST_SIZE[0], int(area.width() * SCREEN_SHARE)), min(LARGEST_SIZE[1], int(area.height() * SCREEN_SHARE)))


MOUSE_HELP = ("Click   set the query point", "Wheel   zoom, drag to pan", "Right-click a panel   export it",
              "Double-click a panel's title   show it in the centre")
BUSY_AFTER_MS = 150  # anything slower than a blink says so


class MainWindow(PaintTimed, QtWidgets.QMainWindow):
    frameApplied = QtCore.Signal(int)  # stamp
    frameFailed = QtCore.Signal(str)
    imageRejected = QtCore.Signal(str)

    def __init__(self, session: Session, scheduler: Scheduler, device_text: str,
                 max_side: int = DEFAULT_MAX_SIDE, restore_layout: bool = True) -> None:
        super().__init__()
        self.session = session
        self.scheduler = scheduler
        self.settings = make_settings()
        self.layout_store = LayoutStore(self, self.settings, persist=restore_layout)
        self.images = ImageInputs(self.settings, max_side, self)
        self.history = History(session, self)
        self.autosave: Optional[Autosave] = None
        if restore_layout:  # a window that keeps the user's settings keeps their session too
            self.autosave = Autosave(self, Path(self.settings.fileName()).parent, self)
        self.images.loaded.connect(self.set_image)
        self.images.rejected.connect(self.reject_image)
        self.images.loading.connect(lambda name: self.banner.show_message(f"Loading {name}…", "notice"))
        self._closed = False
        self.last_apply_ms = 0.0
        self.pacer = FramePacer()
        self._busy_timer = QtCore.QTimer(self, singleShot=True, interval=BUSY_AFTER_MS)
        self._busy_timer.timeout.connect(self._show_busy)
        self.setWindowTitle("OpScope")
        self.setObjectName("OpScopeMain")
        self.setAcceptDrops(True)
        self.setDockOptions(QtWidgets.QMainWindow.DockOption.AnimatedDocks | QtWidgets.QMainWindow.DockOption.AllowNestedDocks
                            | QtWidgets.QMainWindow.DockOption.AllowTabbedDocks)

        self._build_central()
        self._build_side_docks()
        self.docks = ResultDocks(self, self.stage, self._wire_canvas)
        self.docks.docksChanged.connect(self._on_docks_changed)
        self._build_status_bar(device_text)
        self.edits, self.exports = EditActions(self), Exports(self)  # Image > Apply, Save Image, Export (menus.py)
        self._build_menus()

        session.imageChanged.connect(self._on_image_changed)
        session.operatorChanged.connect(self._on_operator_changed)
        session.paramsChanged.connect(self._on_params_changed)
        session.queryChanged.connect(self._on_query_changed)
        scheduler.frameReady.connect(self._apply_frame)
        scheduler.failed.connect(self._on_failure)
        scheduler.jobProgress.connect(self._on_job_progress)
        scheduler.jobEnded.connect(self._on_job_ended)
        scheduler.deviceChanged.connect(self._on_device_changed)

        self._show_operator_form()
        self.resize(*fitting_size(self.screen()))
        self.layout_store.restore_geometry()
        session_actions.offer_recovery(self)

    # -- construction --------------------------------------------------------------------------
    def _build_central(self) -> None:
        self.canvas = ImageCanvas()  # the input image
        self._wire_canvas(self.canvas)
        self.stage = Stage(self.canvas)
        self.banner = self.stage.banner
        self.setCentralWidget(self.stage)

    def _build_side_docks(self) -> None:
        self.picker = OperatorPicker()
        self.picker.set_operators({
            fam: [(s.name, s.title, s.description) for s in specs] for fam, specs in families().items()
        })
        self.picker.operatorChosen.connect(self.session.set_operator)
        self.form = ParamForm()
        self.form.valueChanged.connect(self._on_form_value)
        self.form.resetRequested.connect(self.reset_operator)
        self.actions_bar = ActionsBar()
        self.actions_bar.started.connect(self.start_job)
        self.actions_bar.stopRequested.connect(lambda _name: self.scheduler.stop_job())
        self.form.footer.addWidget(self.actions_bar)
        form_scroll = QtWidgets.QScrollArea()
        form_scroll.setWidgetResizable(True)
        form_scroll.setWidget(self.form)
        self.picker_dock = self._side_dock("Operators", self.picker)
        self.params_dock = self._side_dock("Parameters", form_scroll)
        self.sketchpad = Sketchpad()
        self.sketchpad.sketched.connect(self.images.from_sketch)
        self.sketch_dock = self._side_dock("Sketchpad", self.sketchpad)
        self._place_side_docks()
        self.resizeDocks([self.picker_dock, self.params_dock], [220, 700], QtCore.Qt.Orientation.Vertical)
        self.resizeDocks([self.picker_dock], [330], QtCore.Qt.Orientation.Horizontal)

    def _place_side_docks(self) -> None:
        for dock in (self.picker_dock, self.params_dock, self.sketch_dock):
            dock.setFloating(False)
            dock.setVisible(True)
            self.addDockWidget(Area.LeftDockWidgetArea, dock)
        self.splitDockWidget(self.picker_dock, self.params_dock, QtCore.Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.params_dock, self.sketch_dock)
        self.params_dock.raise_()

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
        widest = self.timing_label.fontMetrics().horizontalAdvance("compute 9999.9 ms · render 9999.9 ms  ")
        self.timing_label.setFixedSize(widest, self.timing_label.sizeHint().height())  # new text, no status bar layout
        self.job_progress = QtWidgets.QProgressBar()
        self.job_progress.setMaximumWidth(180)
        self.job_progress.setVisible(False)
        for w in (self.cursor_label, self.timing_label, self.image_label, self.job_progress, self.device_label):
            if isinstance(w, QtWidgets.QLabel):
                w.setTextFormat(QtCore.Qt.TextFormat.PlainText)
            bar.addPermanentWidget(w)

    def _build_menus(self) -> None:
        self.menus = WindowMenus(self)

    def shortcut_lines(self) -> list[str]:
        return self.menus.shortcut_lines() + list(MOUSE_HELP)

    def show_shortcuts(self) -> None:
        QtWidgets.QMessageBox.information(self, "Keyboard shortcuts", "\n".join(self.shortcut_lines()))

    def _wire_canvas(self, canvas: ImageCanvas) -> None:
        canvas.hovered.connect(self._on_hover)
        canvas.left.connect(self._on_leave)
        if canvas.frame_coords:
            canvas.clicked.connect(self.session.set_query)
            canvas.set_marker(self._marker())

    def _marker(self) -> Optional[tuple[int, int]]:
        """The query marker, drawn only for an operator that reads the query."""
        return self.session.effective_query() if spec_of(self.session.operator).uses_query else None

    # -- images --------------------------------------------------------------------------------
    def open_path(self, path) -> bool:
        """Loads ``path``; on failure shows why and keeps the current image."""
        return self.images.open_path(path)

    def set_image(self, loaded: LoadedImage, source: str) -> None:
        self.banner.clear_message()
        self.session.set_image(loaded, source)
        if loaded.notice:
            self.banner.show_message(loaded.notice, "notice")

    def reject_image(self, message: str) -> None:
        self.banner.show_message(f"Image not loaded: {message}. The current image is kept.", "error")
        self.statusBar().showMessage(message, 8000)
        self.imageRejected.emit(message)

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        self.images.from_mime(event.mimeData(), "drop")
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
        self.pacer.new_operator()
        if self.docks.docks:
            self.layout_store.save_operator(self._shown_operator)
        self.scheduler.stop_job()
        self.docks.clear()
        self._show_operator_form()
        self.banner.clear_message()
        self._on_query_changed(schedule=False)
        self.schedule()

    def _show_operator_form(self) -> None:
        spec = spec_of(self.session.operator)
        self._shown_operator = spec.name
        self.docks.configure(spec.primary, spec.tabs)
        self.form.set_specs(spec.params, self.session.params(), spec.title, spec.description)
        self._grey_inactive()
        self.picker.select(spec.name)
        self.actions_bar.set_actions([ActionItem(a.name, a.title, a.help, a.instant) for a in spec.actions])

    def reset_operator(self) -> None:
        """Defaults, and a clean slate: fitted or trained state is forgotten too."""
        self.scheduler.reset_operator()
        self.session.reset_params()
        self.schedule(force=True)

    def forget_learned_state(self) -> None:
        self.scheduler.reset_operator()
        self.schedule(force=True)

    def _on_form_value(self, name: str, value) -> None:
        try:
            self.session.set_param(name, value)
        except ParamError as exc:
            self.banner.show_message(f"Not applied: {exc}", "error")
            self.form.set_values(self.session.params())

    def _on_params_changed(self, name: str) -> None:
        if not name:
            self.form.set_values(self.session.params())
        self._grey_inactive()
        self.schedule()

    def _grey_inactive(self) -> None:
        """Parameters that do nothing in the current mode are disabled, from their specs."""
        values = self.session.params()
        self.form.set_active({spec.name: inactive_reason(spec) for spec in spec_of(self.session.operator).params
                              if not is_active(spec, values)})

    def _on_query_changed(self, schedule: bool = True) -> None:
        q = self._marker()
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
        self.cursor_label.setText("" if value is None else
                                  f"x {point[0]}  y {point[1]}  rgb " + " ".join(f"{v:.3f}" for v in value))

    def _on_leave(self) -> None:
        self.canvas.set_crosshair(None)
        for canvas in self.docks.canvases():
            canvas.set_crosshair(None)

    # -- scheduling ----------------------------------------------------------------------------
    def schedule(self, force: bool = False) -> Optional[int]:
        stamp = self.scheduler.schedule(force)
        if stamp is not None:
            self._busy_timer.start()
        return stamp

    def frame_settled(self) -> bool:
        return self.scheduler.frame_settled()

    def _show_busy(self) -> None:
        waited = self.scheduler.waiting_ms()
        if waited is not None:
            self.timing_label.setText(f"computing… {waited:.0f} ms")
            self._busy_timer.start()

    def start_job(self, action: str, args: Optional[dict] = None) -> None:
        if self.banner.level == "job":
            self.banner.clear_message()
        if self.scheduler.start_job(action, args):
            self.job_progress.setVisible(True)
            self.job_progress.setValue(0)

    # -- results -------------------------------------------------------------------------------
    def _apply_frame(self, frame: Frame) -> None:
        if self._closed:
            return
        t0 = now()
        split = self.pacer.frame_started(self.docks.docks_in_view(frame.result)) and not self.scheduler.worker.synchronous
        try:
            if self.docks.show(frame.result, self.session.pixels, staged=split):
                self.pacer.panels_changed()
        except Exception as exc:  # a frame that cannot be drawn is reported, and the window goes on
            self.scheduler.applied(frame)
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.banner.show_message(f"{spec_of(frame.operator).title}: a panel could not be drawn ({message}).", "error")
            self.frameFailed.emit(message)
            return
        self._finish_frame(frame, elapsed_ms(t0), first_turn=self.docks.has_staged())

    def _finish_frame(self, frame: Frame, spent_ms: float, first_turn: bool = False) -> None:
        """A split frame's docks, a few a turn after its first (frame_pacing.py); then it is drawn."""
        if self._closed:
            return
        t0 = now()
        if first_turn or self.docks.draw_staged(DOCKS_PER_TURN):
            spent_ms += elapsed_ms(t0)
            self.pacer.later(lambda: self._finish_frame(frame, spent_ms))
            return
        self._on_query_changed(schedule=False)
        if self.stage.has_pin:
            self.stage.compare_with(self.docks.centre_picture())
        self.last_apply_ms = spent_ms + elapsed_ms(t0)
        self.pacer.applied(self.last_apply_ms)
        self.scheduler.applied(frame)
        if self.banner.level == "error":
            self.banner.clear_message()
        if frame.notice:
            self.banner.show_message(frame.notice, "notice")
        self.timing_label.setText(f"compute {frame.compute_ms:.1f} ms · render {self.last_apply_ms + self.last_paint_ms:.1f} ms")
        self.frameApplied.emit(frame.stamp)

    def _on_failure(self, failure: Failure) -> None:
        self._busy_timer.stop()
        self.timing_label.setText("failed")
        self.banner.show_message(f"{spec_of(failure.operator).title} failed: {failure.message}. "
                                 "Showing the last good frame.", "error")
        self.frameFailed.emit(failure.message)

    def _on_job_progress(self, job: JobFrame) -> None:
        if job.progress is not None:
            self.job_progress.setRange(0, 1000)
            self.job_progress.setValue(int(job.progress * 1000))
        else:
            self.job_progress.setRange(0, 0)
        self.job_progress.setFormat(job.message or "%p%")
        if job.result is not None:
            self.docks.show(job.result, self.session.pixels)
        self.timing_label.setText(f"step {job.step_ms:.1f} ms · {job.message}")

    def _on_job_ended(self, end: JobEnd) -> None:
        self.job_progress.setVisible(False)
        self.actions_bar.set_running(end.action, False)
        title = next((a.title for a in spec_of(end.operator).actions if a.name == end.action), end.action)
        if end.failed:  # level "job": a frame that follows does not hide it
            self.banner.show_message(f"{title} stopped with an error: {end.how}", "job")
        else:
            self.statusBar().showMessage(f"{title}: {end.how}", 5000)
        if end.operator == self.session.operator:
            self.schedule(force=True)

    def _on_device_changed(self, description: str, notice: str) -> None:
        self.device_label.setText(f"device: {description}")
        self.banner.show_message(notice, "notice")

    # -- layout, export ------------------------------------------------------------------------
    def _on_docks_changed(self) -> None:
        self.menus.fill_view_menu()
        self.layout_store.restore_operator(self.session.operator)

    def reset_layout(self) -> None:
        self.layout_store.forget_operator(self.session.operator)
        self._place_side_docks()
        self.docks.arrange()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self._closed = True
        self.scheduler.close()
        self.images.wait(5.0)
        if self.autosave is not None:
            self.autosave.clean_exit()
        if self.docks.docks:
            self.layout_store.save_operator(self.session.operator)
        self.layout_store.save_geometry()
        super().closeEvent(event)
