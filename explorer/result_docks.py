"""One dock per named result layer: created, reused and removed as results change, placed in
two columns right of the canvas, with layouts remembered per operator."""

from __future__ import annotations

from typing import Callable, Iterable

from PySide6 import QtCore, QtWidgets

from backends.layers import Layer, Result
from explorer import layer_views
from widgets.image_canvas import ImageCanvas
from widgets.panel import Panel

Area = QtCore.Qt.DockWidgetArea
UPDATING = "updating when the parameters rest…"


class ResultDocks(QtCore.QObject):
    docksChanged = QtCore.Signal()

    def __init__(self, window: QtWidgets.QMainWindow, on_canvas: Callable[[ImageCanvas], None]) -> None:
        super().__init__(window)
        self._window = window
        self._on_canvas = on_canvas  # wires hover and click of each new frame canvas
        self.docks: dict[str, QtWidgets.QDockWidget] = {}
        self.panels: dict[str, Panel] = {}

    def show(self, result: Result, input_pixels=None) -> bool:
        """Shows each layer in its panel; returns True when the set of docks changed."""
        changed = False
        shape = None if input_pixels is None else input_pixels.shape[:2]
        for layer in result.layers:
            panel = self.panels.get(layer.name)
            if panel is None or not layer_views.panel_fits(panel, layer, shape):
                if panel is not None:
                    self._remove(layer.name)
                self._add(layer, shape)
                changed = True
            layer_views.show(self.panels[layer.name], layer, input_pixels)
        for name in result.pending:  # kept as they are until the settled frame brings them
            if name in self.panels:
                self.panels[name].set_caption(UPDATING)
        for name in [n for n in self.docks if n not in result.names and n not in result.pending]:
            self._remove(name)
            changed = True
        if changed:  # settling layers arrive later: keep the operator's own order of panels
            order = [n for n in result.names + result.pending if n in self.docks]
            self.docks = {n: self.docks[n] for n in order + [n for n in self.docks if n not in order]}
            self.arrange()
            self.docksChanged.emit()
        return changed

    def clear(self) -> None:
        for name in list(self.docks):
            self._remove(name)
        self.docksChanged.emit()

    def canvases(self) -> Iterable[ImageCanvas]:
        return (p.view for p in self.panels.values() if isinstance(p.view, ImageCanvas))

    def arrange(self) -> None:
        """The default layout: two columns of docks right of the central canvas."""
        docks = list(self.docks.values())
        columns: list[list[QtWidgets.QDockWidget]] = [[], []]
        for i, dock in enumerate(docks):
            dock.setFloating(False)
            dock.setVisible(True)
            column = columns[i % 2]
            if i == 0:
                self._window.addDockWidget(Area.RightDockWidgetArea, dock)
            elif i == 1:
                self._window.splitDockWidget(docks[0], dock, QtCore.Qt.Orientation.Horizontal)
            else:
                self._window.splitDockWidget(column[-1], dock, QtCore.Qt.Orientation.Vertical)
            column.append(dock)

    def _add(self, layer: Layer, input_shape=None) -> None:
        panel = layer_views.make_panel(layer, input_shape)
        dock = QtWidgets.QDockWidget(layer.name, self._window)
        dock.setObjectName(f"panel:{layer.name}")
        dock.setWidget(panel)
        dock.setFeatures(
            QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.docks[layer.name] = dock
        self.panels[layer.name] = panel
        if isinstance(panel.view, ImageCanvas):
            self._on_canvas(panel.view)

    def _remove(self, name: str) -> None:
        dock = self.docks.pop(name)
        self.panels.pop(name)
        self._window.removeDockWidget(dock)
        dock.deleteLater()
