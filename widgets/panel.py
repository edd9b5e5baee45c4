"""The frame around every result view: a caption, the view, an optional colour bar, and a
context menu to export the panel as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6 import QtCore, QtGui, QtWidgets

from widgets.caption import Caption
from widgets.colorbar import ColorBar
from widgets.legend import CategoryLegend, OverlayControls
from widgets.save_png import save_png


class Panel(QtWidgets.QWidget):
    exported = QtCore.Signal(str)
    dataExportRequested = QtCore.Signal()  # "Export data…": the window writes the panel's numbers (explorer/export.py)

    def __init__(self, title: str, view: QtWidgets.QWidget, with_colorbar: bool = False,
                 with_legend: bool = False, with_overlay: bool = False,
                 parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.title = title
        self.view = view
        self.last_shown: Optional[tuple] = None  # (layer, input pixels) last drawn: redraws and A/B read it
        self.caption = Caption()
        self.colorbar: Optional[ColorBar] = ColorBar() if with_colorbar else None
        body = QtWidgets.QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(view, 1)
        if self.colorbar is not None:
            body.addWidget(self.colorbar)
            self.colorbar.setVisible(False)
        self.legend: Optional[CategoryLegend] = CategoryLegend() if with_legend else None
        if self.legend is not None:
            body.addWidget(self.legend)
        self.overlay: Optional[OverlayControls] = OverlayControls() if with_overlay else None
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        outer.setSpacing(2)
        outer.addLayout(body, 1)
        if self.overlay is not None:
            outer.addWidget(self.overlay)
        outer.addWidget(self.caption)
        self.setContextMenuPolicy(QtCore.Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._show_menu)
        view.setContextMenuPolicy(QtCore.Qt.ContextMenuPolicy.CustomContextMenu)
        view.customContextMenuRequested.connect(lambda pos: self._show_menu(view.mapTo(self, pos)))

    def set_caption(self, text: str) -> None:
        """The caption's height only grows: a caption that wrapped to fewer lines each other frame
        resized the view, and every dock in its column repainted."""
        if text == self.caption.text() and self.caption.isVisibleTo(self) == bool(text):
            return
        self.caption.setText(text)
        self.caption.setVisible(bool(text))
        needed = self.caption.heightForWidth(max(self.caption.width(), 1))
        if needed > self.caption.minimumHeight():
            self.caption.setMinimumHeight(needed)

    def set_colormap(self, colormap: Optional[str], levels: Optional[tuple[float, float]]) -> None:
        if self.colorbar is None:
            return
        visible = colormap is not None and levels is not None
        self.colorbar.setVisible(visible)
        if visible:
            self.colorbar.set_map(colormap, levels)

    def export_png(self, path: str | Path) -> bool:
        ok = save_png(self.grab(), path)
        if ok:
            self.exported.emit(str(path))
        return ok

    def _show_menu(self, pos: QtCore.QPoint) -> None:
        menu = QtWidgets.QMenu(self)
        menu.addAction("Export panel as PNG…", self._export_dialog)
        menu.addAction("Export data (PNG at data resolution, .npy)…", self.dataExportRequested.emit)
        menu.addAction("Copy panel to clipboard", lambda: QtGui.QGuiApplication.clipboard().setPixmap(self.grab()))
        for name, slot in (("Fit to panel", "fit"), ("Zoom 1:1", "one_to_one")):
            if hasattr(self.view, slot):
                menu.addAction(name, getattr(self.view, slot))
        menu.exec(self.mapToGlobal(pos))

    def _export_dialog(self) -> None:
        default = f"{self.title.lower().replace(' ', '_')}.png"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, f"Export {self.title}", default, "PNG image (*.png)")
        if path:
            if not path.lower().endswith(".png"):
                path += ".png"
            if not self.export_png(path):
                QtWidgets.QMessageBox.warning(self, "Export failed", f"Could not write {path}")
