"""Bar charts, curves and metric tables for result panels."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets

from widgets.pgconfig import paints_every_pixel, pg
from widgets.plot_text import (
    AXIS_NOTE,
    KEY_MARGIN_PX,
    KEY_PT,
    LABEL_MARGIN_PX,
    bar_names_font,
    fit_axis_title,
    font_at,
    key_html,
    key_rows,
    note_rows,
)

SERIES_COLORS = ((90, 170, 255), (255, 150, 60), (120, 220, 120), (230, 90, 200), (240, 220, 80))


class FittedText:
    """A plot's key and axis titles, kept whole at the plot's size: the key wraps to the plot's
    width in pixels, an axis title shrinks and then is elided to its axis. Both are fitted
    again on every resize (a key wrapped by character count was cut in a narrow dock)."""

    def _init_text(self) -> None:
        self._key_entries: tuple = ((), ())
        self._axis_texts: dict[str, str] = {}
        self._moved: dict[str, str] = {}  # side -> a vertical axis's title shown in the title row instead
        self._fitted: dict = {}
        for side in ("left", "bottom", "right"):  # an axis is laid out after the plot's resize event
            self.getAxis(side).geometryChanged.connect(lambda side=side: self._fit_label(side))
        self.plotItem.vb.sigResized.connect(self._fit_key)  # the key is centred over the data's column

    def set_key(self, names: Sequence[str], colors: Sequence[tuple[int, int, int]]) -> None:
        """The series key in the title row, above the data; none for a single series."""
        self._key_entries = (tuple(names), tuple(colors))
        self._fit_key()

    def set_axis_label(self, side: str, text: str) -> None:
        self._axis_texts[side] = text
        self._fit_label(side)

    def axis_label(self, side: str) -> tuple[str, float]:
        """(text as shown, point size) of an axis title."""
        return self._fitted.get(side, ("", 0.0))

    def key_rows(self) -> list[list[str]]:
        """The key's text line by line, as wrapped now."""
        return [[text for index, text in row if index != AXIS_NOTE] for row in self._fitted.get("key", [])
                if row[0][0] != AXIS_NOTE]

    def title_notes(self) -> list[str]:
        """Axis titles too long for their axis, shown whole above the plot instead, as wrapped."""
        return [row[0][1] for row in self._fitted.get("key", []) if row[0][0] == AXIS_NOTE]

    def _fit_key(self) -> None:
        names, colors = self._key_entries
        notes = [MOVED_PREFIX[side] + text for side, text in self._moved.items()]
        if len(names) < 2 and not notes:
            self._fitted.pop("key", None)
            self.setTitle(None)
            return
        column = self.plotItem.vb.width()
        width = max((column if column >= 40 else self.width()) - KEY_MARGIN_PX, 40)  # the data's column
        rows = note_rows(notes, width, self.font()) + (key_rows(names, width, self.font()) if len(names) >= 2 else [])
        if rows == self._fitted.get("key") and self.plotItem.titleLabel.isVisible():
            return
        self._fitted["key"] = rows
        self.setTitle(key_html(colors, rows))
        height = int(len(rows) * QtGui.QFontMetricsF(font_at(self.font(), KEY_PT)).height()) + 10
        self.plotItem.titleLabel.setMaximumHeight(height)  # pyqtgraph fixes the row at 30 px, which cut a wrapped key
        self.plotItem.layout.setRowFixedHeight(0, height)

    def _fit_label(self, side: str) -> None:
        if side not in self._axis_texts or not shiboken6.isValid(self):
            return
        text = self._axis_texts[side]
        axis = self.getAxis(side)
        if not shiboken6.isValid(axis):  # a plot being torn down re-lays out its axes one by one
            return
        rect = axis.geometry()
        length = rect.width() if side in ("bottom", "top") else rect.height()
        if length < 40:  # not laid out yet: fitted when its geometry changes
            length = 1e6
        if (text, length) == self._fitted.get(side + " for"):
            return
        self._fitted[side + " for"] = (text, length)
        shown, points = fit_axis_title(axis, text, length - LABEL_MARGIN_PX, self.font())
        moved = side in MOVED_PREFIX and shown != text  # a short plot: whole above it, not cut on its axis
        if moved:
            axis.setLabel("")
        self._fitted[side] = ("", 0.0) if moved else (shown, points)
        if self._moved.get(side) != (text if moved else None):
            if moved:
                self._moved[side] = text
            else:
                self._moved.pop(side, None)
            self._fit_key()
        axis.resizeEvent()  # pyqtgraph centres the title only on a resize: centre the new text now

    def _fit_text(self) -> None:
        if not hasattr(self, "_fitted"):  # resize events come during construction too
            return
        self._fit_key()
        for side in self._axis_texts:
            self._fit_label(side)


MOVED_PREFIX = {"left": "y: ", "right": "right y: "}  # how a vertical axis's title reads in the title row
HORIZONTAL_AFTER = (12, 9)  # bars turn horizontal past this many labels, or labels this long


PLOT_BACKGROUND = (24, 24, 28)


class GridAxis(pg.AxisItem):
    """An axis whose grid lines are opaque, each the colour pyqtgraph's translucent line would
    have over the plot's background, and drawn behind the data. The raster engine blends a
    translucent line pixel by pixel: a 900x600 plot's grid cost 16 ms a repaint, opaque 2 ms.
    Axes are not pixmap-cached: opaque, they replay in about 0.1 ms, while a cache the size of
    the grid cost a fill and a blend whenever a range moved (1 ms a frame on a moving plot)."""

    def __init__(self, orientation: str) -> None:
        super().__init__(orientation)
        self._fit_text_space = True

    def fit_text_space(self) -> None:
        """Let the tick labels' room shrink once, to the next labels drawn (new content)."""
        self._fit_text_space = True

    def _updateMaxTextSize(self, x: int) -> None:
        """The room for tick labels only grows while the content stays the same: pyqtgraph shrank
        it whenever the widest label got 10 px narrower, and each shrink re-laid out the whole
        plot (5-7 ms) in the middle of a drag. It fits again after :meth:`fit_text_space`."""
        self.style["autoReduceTextSpace"] = self._fit_text_space  # not setStyle: that re-lays out the axis
        self._fit_text_space = False
        super()._updateMaxTextSize(x)

    def _updateLabel(self) -> None:
        """pyqtgraph re-set the title's HTML and re-sized the axis on every range change (its SI
        prefix check), unchanged or not; only a new title or scale does that now."""
        state = (self.labelString(), self.autoSIPrefixScale)
        if state == getattr(self, "_label_state", None):
            return
        self._label_state = state
        super()._updateLabel()

    def generateDrawSpecs(self, p):
        specs = super().generateDrawSpecs(p)
        if specs is None:
            return None
        axis_spec, tick_specs, text_specs = specs
        return axis_spec, [(_over_background(pen), p1, p2) for pen, p1, p2 in tick_specs], text_specs


def _over_background(pen: QtGui.QPen) -> QtGui.QPen:
    color = pen.color()
    a = color.alphaF()
    if a >= 1.0:
        return pen
    r, g, b = (round(bg + (c - bg) * a) for c, bg in zip(color.getRgb()[:3], PLOT_BACKGROUND))
    opaque = QtGui.QPen(pen)
    opaque.setColor(QtGui.QColor(r, g, b))
    return opaque


class SteadyViewBox(pg.ViewBox):
    """Auto-range that holds still while the data stays inside the view and fills at least
    ``STEADY_FILL`` of it on each auto-ranged axis, and refits when it leaves or shrinks past that.
    pyqtgraph refitted on every new curve, so the axes' ticks, labels and grid were made again on
    every frame of a drag (about 0.5 ms an axis) and the scale jittered under the data."""

    def updateAutoRange(self) -> None:
        state = self.state
        plain = not (self._updatingRange or any(state["autoVisibleOnly"]) or any(state["autoPan"]))
        if plain and any(state["autoRange"]):
            bounds, view = self.childrenBounds(), self.viewRange()
            if all(_holds(view[ax], bounds[ax]) for ax in (0, 1) if state["autoRange"][ax] is not False):
                self._autoRangeNeedsUpdate = False  # as pyqtgraph's own does: checked again on the next change
                return
        super().updateAutoRange()


STEADY_FILL = 0.7  # a steady view refits when the data spans less than this share of it


def _holds(view: Sequence[float], data: Optional[Sequence[float]]) -> bool:
    """Whether a view range keeps data bounds: all inside, spanning at least STEADY_FILL of it."""
    if data is None:
        return True
    low, high = view
    span = high - low
    return span > 0 and low <= data[0] and data[1] <= high and (data[1] - data[0]) >= STEADY_FILL * span


def grid_axes() -> dict[str, GridAxis]:
    return {name: GridAxis(name) for name in ("left", "bottom", "right", "top")}


def fit_text_space(plot: pg.PlotWidget) -> None:
    """New content: every axis's tick labels may take less room than the last content's."""
    for name in ("left", "bottom", "right", "top"):
        axis = plot.getAxis(name)
        if isinstance(axis, GridAxis):
            axis.fit_text_space()


def grid_behind_data(plot: pg.PlotWidget) -> None:
    """Axes (and so their grid lines) behind the view box's items: an opaque line must not cross
    a curve or a bar. PlotItem sets its axes' z itself, and shows every axis it is handed, so
    this follows its construction and hides the top and right ones again."""
    for name in ("left", "bottom", "right", "top"):
        plot.getAxis(name).setZValue(-1)
    plot.hideAxis("top")
    plot.hideAxis("right")


class BarsView(FittedText, pg.PlotWidget):
    """One group of bars per label; several series side by side."""

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent, background=PLOT_BACKGROUND, axisItems=grid_axes(), viewBox=SteadyViewBox())
        paints_every_pixel(self)
        grid_behind_data(self)
        self.setMenuEnabled(False)
        self.showGrid(y=True, alpha=0.25)
        self._init_text()
        self._items: list[pg.BarGraphItem] = []
        self._key: tuple = ()
        self.horizontal = False
        self._y_range: object = ()
        self._labels: list[str] = []
        self._tick_step: tuple = ()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_text()
        self._update_ticks()

    def _update_ticks(self) -> None:
        """Every bar keeps its name while the names fit at some size of TICK_PT (horizontal bars
        stack theirs a row each, vertical ones side by side); only past the smallest size is
        every n-th named."""
        if not getattr(self, "_labels", None):  # resize events come during construction too
            return
        if self.horizontal:
            room, axis = self.plotItem.vb.height(), "left"
            font, step = bar_names_font(self.font(), len(self._labels), room, lambda m: m.height())
        else:
            longest = max(self._labels, key=len)
            room, axis = self.plotItem.vb.width(), "bottom"
            font, step = bar_names_font(self.font(), len(self._labels), room,
                                        lambda m: m.horizontalAdvance(longest + " "))
        if room < 20:  # not laid out yet
            return
        if (step, font.pointSizeF()) != self._tick_step:
            self._tick_step = (step, font.pointSizeF())
            self.getAxis(axis).setStyle(tickFont=font)
            self.getAxis(axis).setTicks([[(i, self._labels[i]) for i in range(0, len(self._labels), step)]])

    def tick_labels(self) -> list[str]:
        """The bar names the category axis shows now."""
        axis = self.getAxis("left" if self.horizontal else "bottom")
        ticks = axis._tickLevels or [[]]
        return [text for _pos, text in ticks[0]]

    def set_bars(self, labels: Sequence[str], series: Mapping[str, np.ndarray],
                 y_range: Optional[tuple[float, float]] = None, value_label: str = "",
                 horizontal: Optional[bool] = None) -> None:
        """Updates bars in place while the labels and series names stay the same (rebuilding
        the items cost about 9 ms a frame). Several series get a key above the plot."""
        labels = [str(v) for v in labels]
        if horizontal is None:
            horizontal = len(labels) > HORIZONTAL_AFTER[0] or max((len(t) for t in labels), default=0) > HORIZONTAL_AFTER[1]
        n = max(len(series), 1)
        width = 0.8 / n
        x = np.arange(len(labels), dtype=float)
        key = (tuple(labels), tuple(series), horizontal, value_label)
        if key != self._key:
            for item in self._items:
                self.removeItem(item)
            self._items.clear()
            self.horizontal = horizontal
            colors = [SERIES_COLORS[i % len(SERIES_COLORS)] for i in range(len(series))]
            for color in colors:
                item = pg.BarGraphItem(x=x, height=np.zeros(len(labels)), width=width,
                                       brush=pg.mkBrush(*color), pen=pg.mkPen(None))
                self.addItem(item)
                self._items.append(item)
            self.set_key(list(series), colors)
            self.getAxis("left" if horizontal else "bottom").setTicks(None)
            self.getAxis("bottom" if horizontal else "left").setTicks(None)
            self.getAxis("bottom" if horizontal else "left").setStyle(tickFont=None)
            self._axis_texts.clear()
            self.set_axis_label("bottom" if horizontal else "left", value_label)
            self.set_axis_label("left" if horizontal else "bottom", "")
            self.invertY(horizontal)  # the first bar on top, as it reads
            self.showGrid(x=horizontal, y=not horizontal, alpha=0.25)  # grid lines across the values, not the names
            self._labels = labels
            self._tick_step = ()
            self._update_ticks()
            if horizontal:
                self.setYRange(-0.6, len(labels) - 0.4, padding=0)
            else:
                self.setXRange(-0.6, len(labels) - 0.4, padding=0)
            self._key = key
            fit_text_space(self)
            self._y_range = ()
        for i, (item, values) in enumerate(zip(self._items, series.values())):
            centre = x - 0.4 + width * (i + 0.5)
            values = np.nan_to_num(np.asarray(values, float), nan=0.0, posinf=0.0, neginf=0.0)
            if horizontal:
                item.setOpts(x=None, x0=0, y=centre, width=values, height=width)
            else:
                item.setOpts(x=centre, height=values, width=width)
        if y_range != self._y_range:  # setting the same range again repaints the axes
            axis = "x" if horizontal else "y"
            if y_range is not None:
                (self.setXRange if horizontal else self.setYRange)(*y_range, padding=0.02)
            else:
                self.enableAutoRange(axis=axis)
            self._y_range = y_range


class CurveView(FittedText, pg.PlotWidget):
    """Named curves; those named ``right`` against a second axis (another unit), with a key of
    every curve above the plot, never over the data."""

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent, background=PLOT_BACKGROUND, axisItems=grid_axes(), viewBox=SteadyViewBox())
        paints_every_pixel(self)
        grid_behind_data(self)
        self.setMenuEnabled(False)
        self.showGrid(x=True, y=True, alpha=0.25)
        self._init_text()
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._axes_key: tuple = ()
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._empty = False
        self._legend_key: tuple = ()
        self.right_view: Optional[pg.ViewBox] = None

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_text()

    def set_curves(self, series: Mapping[str, tuple[np.ndarray, np.ndarray]], x_label: str = "", y_label: str = "",
                   log_y: bool = False, right: Sequence[str] = (), right_label: str = "", log_x: bool = False) -> None:
        right = tuple(n for n in right if n in series)
        if (x_label, y_label, log_y, log_x, right, right_label) != self._axes_key:  # re-setting them repaints the axes
            self.setLogMode(x=log_x, y=log_y)
            for axis, log in (("bottom", log_x), ("left", log_y)):  # log axes: decades only, no crowded minor labels
                self.getAxis(axis).setStyle(maxTickLevel=0 if log else 1)
            self.set_axis_label("bottom", x_label)
            self.set_axis_label("left", y_label)
            self._set_right_axis(bool(right), right_label, log_x)
            self._axes_key = (x_label, y_label, log_y, log_x, right, right_label)
            fit_text_space(self)
            for item in self._curves.values():  # a curve may move between the axes
                if item.getViewBox() is not None:
                    item.getViewBox().removeItem(item)
            self._curves.clear()
            self._data.clear()
        for name in list(self._curves):
            if name not in series:
                item = self._curves.pop(name)
                item.getViewBox().removeItem(item)
                self._data.pop(name, None)
        for i, (name, (x, y)) in enumerate(series.items()):
            if name not in self._curves:
                color = SERIES_COLORS[i % len(SERIES_COLORS)]
                item = pg.PlotDataItem(pen=pg.mkPen(*color, width=2, style=QtCore.Qt.PenStyle.DashLine if name in right
                                                    else QtCore.Qt.PenStyle.SolidLine))
                if name in right:
                    item.setLogMode(log_x, False)
                    self.right_view.addItem(item)
                else:
                    self.addItem(item)
                self._curves[name] = item
            xs, ys = np.asarray(x, float), np.asarray(y, float)
            last = self._data.get(name)
            if last is not None and np.array_equal(last[0], xs) and np.array_equal(last[1], ys):
                continue  # the same curve again: no repaint
            self._data[name] = (xs, ys)
            self._curves[name].setData(xs, ys, connect="finite")  # gaps where values are NaN or infinite
        names = tuple(series)
        if (names, right) != self._legend_key:
            self._legend_key = (names, right)
            colors = [SERIES_COLORS[i % len(SERIES_COLORS)] for i in range(len(names))]
            shown = [f"{n} (right)" if n in right else n for n in names]
            self.set_key(shown, colors)
        empty = all(len(np.asarray(x)) < 2 for x, _ in series.values())
        if empty != self._empty:  # no line yet: a plain 0..1 frame, not auto-range's -400..400
            self._empty = empty
            if empty:
                self.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            else:
                self.enableAutoRange()
        if self.right_view is not None and not empty:
            self.right_view.enableAutoRange(axis="y")

    def _set_right_axis(self, on: bool, label: str, log_x: bool) -> None:
        """A second y axis on the right, with a view box of its own sharing the x axis."""
        if on and self.right_view is None:
            self.right_view = SteadyViewBox(enableMenu=False)
            self.plotItem.scene().addItem(self.right_view)
            self.plotItem.getAxis("right").linkToView(self.right_view)
            self.right_view.setXLink(self.plotItem)
            self.plotItem.vb.sigResized.connect(self._sync_right)
        self.plotItem.showAxis("right", on)
        if on:
            self.set_axis_label("right", label)
            self.plotItem.getAxis("right").setGrid(False)  # the left axis's lines are the grid: one set, not two
            self._sync_right()

    def _sync_right(self) -> None:
        if self.right_view is not None:
            self.right_view.setGeometry(self.plotItem.vb.sceneBoundingRect())
            self.right_view.linkedViewChanged(self.plotItem.vb, self.right_view.XAxis)

    def curve_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """What curve ``name`` draws."""
        return self._data[name]

    def axis_of(self, name: str) -> str:
        """'left' or 'right': which axis curve ``name`` is read against."""
        return "right" if self.right_view is not None and self._curves[name].getViewBox() is self.right_view else "left"


class MetricsView(QtWidgets.QTableWidget):
    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["metric", "value"])
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Fixed)  # sized in _fit_values
        self.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)

    def set_values(self, values: Mapping[str, object]) -> None:
        if self.rowCount() != len(values):
            self.setRowCount(len(values))
        for row, (name, value) in enumerate(values.items()):
            text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
            for col, cell in enumerate((name, text)):
                item = self.item(row, col)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.setItem(row, col, item)
                if item.text() != cell:  # an unchanged cell set again still repaints the table
                    item.setText(cell)
                    if col == 1:
                        item.setToolTip(cell)
                if col == 1:
                    item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        self._fit_values()

    def _fit_values(self) -> None:
        """The value column as wide as its longest value, but never more than 45% of the table:
        names stay readable and a long value is elided in the middle (its tooltip has it all)."""
        wanted = self.sizeHintForColumn(1) + 8
        width = int(min(wanted, 0.45 * max(self.viewport().width(), 1)))
        if width != self.columnWidth(1):
            self.setColumnWidth(1, max(width, 40))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_values()

    def value(self, name: str) -> Optional[str]:
        for row in range(self.rowCount()):
            if self.item(row, 0).text() == name:
                return self.item(row, 1).text()
        return None
