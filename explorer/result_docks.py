"""One panel per named result layer: the primary one large in the centre, the others in docks
right of it, in two columns, tabbed by theme when there are many. Panels are created, reused and
removed as results change; a panel the user cannot see (a closed dock, a tab behind another)
does no display work until it is shown. Any dock's panel can be promoted to the centre."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from PySide6 import QtCore, QtWidgets

from backends.layers import (
    BarsLayer,
    CurveLayer,
    FeatureMapsLayer,
    HeatmapLayer,
    ImageLayer,
    Layer,
    MetricsLayer,
    Result,
)
from explorer import layer_views
from widgets.dock_title import DockTitleBar
from widgets.image_canvas import ImageCanvas
from widgets.panel import Panel
from widgets.stage import Stage

Area = QtCore.Qt.DockWidgetArea
UPDATING = "updating when the parameters rest…"
MAX_UNTABBED = 6  # more docks than this are grouped into tabs by theme
PRIMARY_DEFAULT = "Output"
COLUMN_SHARE = 0.2  # of the window's width, per dock column
COLUMN_MIN_PX = 220
PANEL_MIN = (200, 150)  # a docked panel is never smaller (Qt's layout honours it; tabs share it)


def theme(layer: Layer) -> str:
    """The default tab a layer joins when an operator names no groups."""
    if isinstance(layer, (BarsLayer, CurveLayer, MetricsLayer)):
        return "plots"
    if isinstance(layer, (ImageLayer, FeatureMapsLayer, HeatmapLayer)):
        return "maps"
    return "geometry"


class ResultDocks(QtCore.QObject):
    docksChanged = QtCore.Signal()

    def __init__(self, window: QtWidgets.QMainWindow, stage: Stage, on_canvas: Callable[[ImageCanvas], None]) -> None:
        super().__init__(window)
        self._window = window
        self._stage = stage
        self._on_canvas = on_canvas  # wires hover and click of each new frame canvas
        self.docks: dict[str, QtWidgets.QDockWidget] = {}  # every panel but the centre's
        self.panels: dict[str, Panel] = {}  # every panel, the centre's included
        self.centre: Optional[str] = None
        self._primary = PRIMARY_DEFAULT
        self._groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
        self._themes: dict[str, str] = {}
        self._deferred: dict[str, tuple[Layer, object]] = {}
        self._staged: dict[str, tuple[Layer, object]] = {}  # docks a split frame draws a turn later
        self._on_screen: dict[str, bool] = {}  # per dock, from Qt's visibilityChanged: a tab behind
        # another stays isVisible() (it is only moved off-screen), but is reported here

    def configure(self, primary: str, groups: Sequence[tuple[str, Sequence[str]]] = ()) -> None:
        """The operator's choice of centre panel and tab groups, before its first result."""
        self._primary = primary or PRIMARY_DEFAULT
        self._groups = tuple((title, tuple(names)) for title, names in groups)

    # -- results -------------------------------------------------------------------------------
    def show(self, result: Result, input_pixels=None, staged: bool = False) -> bool:
        """Shows each layer in its panel; returns True when the set of panels changed. With
        ``staged`` the docks in view are left for :meth:`draw_staged` (the centre and new panels
        are drawn now)."""
        leftover = {n: v for n, v in self._staged.items() if n not in result.names}
        self._staged = {}
        changed = False
        shape = None if input_pixels is None else input_pixels.shape[:2]
        if self.centre is None or (self.centre not in result.names and self.centre not in result.pending):
            self._set_centre_name(self._choose_centre(result))
        for layer in result.layers:
            panel = self.panels.get(layer.name)
            if panel is None or not layer_views.panel_fits(panel, layer, shape):
                if panel is not None:
                    self._remove(layer.name)
                self._add(layer, shape)
                changed = True
            self._themes[layer.name] = theme(layer)
            if self._hidden(layer.name):
                self._deferred[layer.name] = (layer, input_pixels)
            elif staged and layer.name in self.docks and not changed:
                self._staged[layer.name] = (layer, input_pixels)
            else:
                self._deferred.pop(layer.name, None)
                self._draw(layer.name, layer, input_pixels)
        self._staged = {**{n: v for n, v in leftover.items() if n in self.panels}, **self._staged}
        if not staged:
            self.draw_staged()  # a split frame's docks that a newer frame superseded before their turn
        for name in result.pending:  # kept as they are until the settled frame brings them
            if name in self.panels:
                self.panels[name].set_caption(UPDATING)
        for name in [n for n in self.panels if n not in result.names and n not in result.pending]:
            self._remove(name)
            changed = True
        if changed:  # settling layers arrive later: keep the operator's own order of panels
            order = [n for n in result.names + result.pending if n in self.docks]
            self.docks = {n: self.docks[n] for n in order + [n for n in self.docks if n not in order]}
            self.arrange()
            self.docksChanged.emit()
        return changed

    def docks_in_view(self, result: Result) -> int:
        """How many of ``result``'s layers go to docks the user sees."""
        return sum(1 for n in result.names if n in self.docks and not self._hidden(n))

    def has_staged(self) -> bool:
        """Whether docks wait for a later turn (frame_pacing.py)."""
        return bool(self._staged)

    def draw_staged(self, count: Optional[int] = None) -> bool:
        """Draws the docks a split frame left for this turn, ``count`` of them (all when None; a
        dock hidden since waits as usual); True while some are left for another turn."""
        names = list(self._staged)[:count]
        staged = {n: self._staged.pop(n) for n in names}
        for name, (layer, pixels) in staged.items():
            if name not in self.panels:
                continue
            if self._hidden(name):
                self._deferred[name] = (layer, pixels)
            else:
                self._draw(name, layer, pixels)
        return bool(self._staged)

    def clear(self) -> None:
        for name in list(self.panels):
            self._remove(name)
        self.centre = None
        self._deferred.clear()
        self._staged.clear()
        self.docksChanged.emit()

    def centre_picture(self) -> Optional[np.ndarray]:
        """The centre panel's picture as last drawn, (H, W, 3) uint8, or None (not a picture)."""
        panel = self.panels.get(self.centre) if self.centre else None
        shown = panel.last_shown if panel is not None else None
        return None if shown is None else layer_views.picture(shown[0])

    def canvases(self) -> Iterable[ImageCanvas]:
        return (p.view for p in self.panels.values() if isinstance(p.view, ImageCanvas))

    # -- the centre ----------------------------------------------------------------------------
    def _choose_centre(self, result: Result) -> Optional[str]:
        names = result.names
        if self._primary in names:
            return self._primary
        return next((lay.name for lay in result.layers if isinstance(lay, (ImageLayer, HeatmapLayer))), None)

    def _set_centre_name(self, name: Optional[str]) -> None:
        """A new centre: a panel already in a dock moves there; one still to come goes there
        when it is made."""
        if name is not None and name in self.docks:
            self.promote(name)
        else:
            self.centre = name

    def promote(self, name: str) -> None:
        """Shows panel ``name`` in the centre; the panel there takes its dock, in its place."""
        if name == self.centre or name not in self.docks:
            return
        dock = self.docks.pop(name)
        panel = self.panels[name]
        old_name, old_panel = self.centre, self.panels.get(self.centre) if self.centre else None
        panel.setParent(None)
        self._stage.set_result(panel, name)
        self.centre = name
        if old_panel is not None:
            self._name_dock(dock, old_name)
            dock.setWidget(old_panel)
            self.docks[old_name] = dock
        else:
            self._window.removeDockWidget(dock)
            dock.deleteLater()
        self._flush(name)
        self.docksChanged.emit()

    # -- layout --------------------------------------------------------------------------------
    def arrange(self) -> None:
        """The default layout: two columns right of the centre; many panels as tabs by theme."""
        names = list(self.docks)
        size = self._window.size()
        groups = [[n] for n in names] if len(names) <= MAX_UNTABBED else self._grouped(names)
        heads: list[QtWidgets.QDockWidget] = []
        columns: list[list[QtWidgets.QDockWidget]] = [[], []]
        for group in groups:
            for name in group:
                self.docks[name].setFloating(False)
                self.docks[name].setVisible(True)
        # Heads first: Qt adds a dock split off a tabbed one as one more tab, not beside it.
        for i, group in enumerate(groups):
            first = self.docks[group[0]]
            column = columns[i % 2]
            if i == 0:
                self._window.addDockWidget(Area.RightDockWidgetArea, first)
            elif i == 1:
                self._window.splitDockWidget(heads[0], first, QtCore.Qt.Orientation.Horizontal)
            else:
                self._window.splitDockWidget(column[-1], first, QtCore.Qt.Orientation.Vertical)
            heads.append(first)
            column.append(first)
        for head, group in zip(heads, groups):
            for name in group[1:]:
                self._window.tabifyDockWidget(head, self.docks[name])
            head.raise_()
        tops = [c[0] for c in columns if c]
        if tops:  # the centre keeps the larger share: each dock column gets a fifth of the window
            width = max(COLUMN_MIN_PX, int(size.width() * COLUMN_SHARE))
            self._window.resizeDocks(tops, [width] * len(tops), QtCore.Qt.Orientation.Horizontal)
        if self._window.size() != size:  # tabbing grows the window by its tab bars: keep it on the screen
            self._window.resize(size)

    def _grouped(self, names: list[str]) -> list[list[str]]:
        """The operator's groups in its order, then the rest by theme; the first of each in front."""
        out: list[list[str]] = []
        placed: set[str] = set()
        for _title, members in self._groups:
            group = [n for n in members if n in names and n not in placed]
            if group:
                out.append(group)
                placed.update(group)
        by_theme: dict[str, list[str]] = {}
        for n in names:
            if n not in placed:
                by_theme.setdefault(self._themes.get(n, "maps"), []).append(n)
        out.extend(by_theme.values())
        return out

    def dock_is_in_front(self, name: str) -> bool:
        """Whether the panel's dock is open and not behind another tab."""
        return name in self.docks and self.docks[name].isVisible() and self._on_screen.get(name, True)

    # -- panels and docks ----------------------------------------------------------------------
    def _hidden(self, name: str) -> bool:
        """A panel the user cannot see: its dock is closed or behind another tab."""
        return name in self.docks and self._window.isVisible() and not self.dock_is_in_front(name)

    def _on_visibility(self, name: str, visible: bool) -> None:
        self._on_screen[name] = visible
        if visible:
            self._flush(name)

    def _flush(self, name: str) -> None:
        """Draws the newest layer a hidden panel was given, now that it shows."""
        pending = self._deferred.pop(name, None)
        if pending is not None and name in self.panels:
            self._draw(name, *pending)

    def _draw(self, name: str, layer: Layer, input_pixels) -> None:
        """One panel; a layer it cannot draw says why in its caption, and the others go on."""
        try:
            layer_views.show(self.panels[name], layer, input_pixels)
        except Exception as exc:
            self.panels[name].set_caption(f"could not draw this panel: {type(exc).__name__}: {exc}".splitlines()[0])

    def _add(self, layer: Layer, input_shape=None) -> None:
        panel = layer_views.make_panel(layer, input_shape)
        self.panels[layer.name] = panel
        if isinstance(panel.view, ImageCanvas):
            self._on_canvas(panel.view)
        if layer.name == self.centre:
            self._stage.set_result(panel, layer.name)
            return
        dock = QtWidgets.QDockWidget(layer.name, self._window)
        title = DockTitleBar(dock)
        dock.setTitleBarWidget(title)
        self._name_dock(dock, layer.name)
        dock.setWidget(panel)
        dock.setFeatures(
            QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        panel.setMinimumSize(*PANEL_MIN)
        title.doubleClicked.connect(lambda d=dock: self.promote(d.property("layer")))
        dock.visibilityChanged.connect(lambda visible, d=dock: self._on_visibility(d.property("layer"), visible))
        self.docks[layer.name] = dock

    @staticmethod
    def _name_dock(dock: QtWidgets.QDockWidget, name: str) -> None:
        """(A promoted dock keeps its place and takes the old centre's name.)"""
        dock.setWindowTitle(name)
        dock.setObjectName(f"panel:{name}")
        dock.setProperty("layer", name)
        title = dock.titleBarWidget()
        if isinstance(title, DockTitleBar):
            title.label.setText(name)

    def _remove(self, name: str) -> None:
        panel = self.panels.pop(name)
        self._deferred.pop(name, None)
        self._staged.pop(name, None)
        self._themes.pop(name, None)
        self._on_screen.pop(name, None)
        dock = self.docks.pop(name, None)
        if dock is not None:
            self._window.removeDockWidget(dock)
            dock.deleteLater()
            return
        if self._stage.result is panel:  # the centre's panel (or the last centre's, not yet replaced)
            self._stage.set_result(None)
        panel.deleteLater()
