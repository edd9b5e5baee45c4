"""Menu actions that act on the window as a whole; kept out of the window class so that it only
wires the session, the scheduler and the views."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

from widgets.save_png import save_png

if TYPE_CHECKING:
    from explorer.main_window import MainWindow


def pin_result(w: MainWindow) -> None:
    """View > Pin Result: the centre's picture now becomes A; the live one is B."""
    if (live := w.docks.centre_picture()) is not None:
        w.stage.pin(live)


def show_history(w: MainWindow) -> None:
    """Edit > History: every step, the current one selected; clicking a step goes back to it."""
    dock = w.findChild(QtWidgets.QDockWidget, "side:History")
    if dock is None:
        dock = w._side_dock("History", QtWidgets.QUndoView(w.history.stack))
        w.addDockWidget(QtCore.Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        w.tabifyDockWidget(w.params_dock, dock)
    dock.setVisible(True)
    dock.raise_()


def show_sketchpad(w: MainWindow) -> None:
    w.sketch_dock.setVisible(True)
    w.sketch_dock.raise_()
    w.images.from_sketch(w.sketchpad.canvas.pixels())


def export_window_dialog(w: MainWindow) -> None:
    path, _ = QtWidgets.QFileDialog.getSaveFileName(w, "Export window", "opscope.png", "PNG image (*.png)")
    if path and not save_png(w.grab(), path):
        w.banner.show_message(f"Could not write {path}", "error")
