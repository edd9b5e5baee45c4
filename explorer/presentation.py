"""Presentation mode (View > Presentation Mode, F11): the window for a projector.

Full screen, the application font scaled up (forms, captions, panel titles, plot axes and their
labels all follow it), the query marker of every canvas larger, and the control docks (operators,
parameters, sketchpad, history) hidden so that the centre stage and the result panels fill the
screen. F11 again, or Esc, puts back the window exactly as it was: its geometry and full-screen
state, every dock's place, size and visibility (``saveState``), and the font.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from PySide6 import QtCore, QtGui, QtWidgets

from explorer import tours

FONT_SCALE = 1.6  # read from the back of a lecture room
MARKER_SCALE = 2.2
RESTORE_AGAIN_MS = (0, 150)
RESULTS_SHARE = 0.3  # of the screen's width for the result docks beside the centre


@dataclass
class _Saved:
    geometry: QtCore.QRect  # the window's own rectangle, not saveGeometry's (which refits it to the screen)
    state: QtCore.QByteArray
    window_state: QtCore.Qt.WindowState
    font: QtGui.QFont


class Presentation(QtCore.QObject):
    """The mode's state, kept on the window as a child (one per window)."""

    toggled = QtCore.Signal(bool)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self._saved: Optional[_Saved] = None
        window.installEventFilter(self)  # a window closed in the mode saves its normal layout

    @property
    def active(self) -> bool:
        return self._saved is not None

    def toggle(self) -> None:
        self.leave() if self.active else self.enter()

    def enter(self) -> None:
        if self.active:
            return
        w, app = self.window, QtWidgets.QApplication.instance()
        self._saved = _Saved(QtCore.QRect(w.geometry()), w.saveState(), w.windowState(), QtGui.QFont(app.font()))
        font = QtGui.QFont(app.font())
        font.setPointSizeF(font.pointSizeF() * FONT_SCALE)
        app.setFont(font)
        for dock in control_docks(w):
            dock.hide()
        self._scale_markers()
        w.docks.docksChanged.connect(self._scale_markers)  # an operator switched to in the mode
        w.showFullScreen()
        QtCore.QTimer.singleShot(0, self._size_results)
        tours.refresh_caption(w)
        self.toggled.emit(True)

    def leave(self) -> None:
        if not self.active:
            return
        w, saved, self._saved = self.window, self._saved, None
        w.docks.docksChanged.disconnect(self._scale_markers)
        QtWidgets.QApplication.instance().setFont(saved.font)
        self._scale_markers()
        w.setWindowState(saved.window_state)  # out of full screen, back to normal or maximized
        self._restore(saved)
        tours.refresh_caption(w)
        # the smaller font shrinks the widgets' minimum sizes only once their layouts have run (in
        # the next event loop turns): restore again then, or a window narrower than the large-font
        # minimum would stay wider than it was
        for delay in RESTORE_AGAIN_MS:
            QtCore.QTimer.singleShot(delay, lambda: self._restore(saved))
        self.toggled.emit(False)

    def _restore(self, saved: _Saved) -> None:
        if not self.active:
            if not saved.window_state & (QtCore.Qt.WindowState.WindowMaximized | QtCore.Qt.WindowState.WindowFullScreen):
                self.window.setGeometry(saved.geometry)
            self.window.restoreState(saved.state)

    def _scale_markers(self) -> None:
        scale = MARKER_SCALE if self.active else 1.0
        for canvas in (self.window.canvas, *self.window.docks.canvases()):
            canvas.set_marker_scale(scale)

    def _size_results(self) -> None:
        """The centre takes most of the width; the result docks share the rest."""
        w = self.window
        shown = [d for d in w.docks.docks.values() if d.isVisible() and not d.isFloating()
                 and w.dockWidgetArea(d) == QtCore.Qt.DockWidgetArea.RightDockWidgetArea]
        if shown:
            columns = max(1, min(2, len(shown)))
            w.resizeDocks(shown, [int(w.width() * RESULTS_SHARE / columns)] * len(shown), QtCore.Qt.Orientation.Horizontal)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if watched is self.window and event.type() == QtCore.QEvent.Type.Close and self.active:
            self.leave()
        return False


def control_docks(window) -> list[QtWidgets.QDockWidget]:
    """The docks that steer rather than show: operators, parameters, sketchpad, history."""
    return [d for d in window.findChildren(QtWidgets.QDockWidget) if d.objectName().startswith("side:")]


def of(window) -> Presentation:
    """The window's presentation state, made on first use."""
    found = window.findChild(Presentation)
    return found if found is not None else Presentation(window)


def toggle(window) -> None:
    """View > Presentation Mode (F11)."""
    of(window).toggle()


def escape(window) -> None:
    """Esc: ends a running tour first, else leaves presentation mode; otherwise does nothing."""
    if tours.stop(window):
        return
    found = window.findChild(Presentation)
    if found is not None:
        found.leave()
