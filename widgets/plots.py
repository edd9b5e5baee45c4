"""Bar charts, curves and metric tables for result panels."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from PySide6 import QtCore, QtWidgets

from widgets.pgconfig import pg

SERIES_COLORS = ((90, 170, 255), (255, 150, 60), (120, 220, 120), (230, 90, 200), (240, 220, 80))


def cache_axes(plot: pg.PlotWidget) -> None:
    """Paints each axis from a pixmap cache: replaying an axis's tick labels cost 3-5 ms a
    frame, and bars or curves that change do not change the axes most of the time."""
    for name in ("left", "bottom", "right", "top"):
        plot.getAxis(name).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)


class BarsView(pg.PlotWidget):
    """One group of bars per label; several series side by side."""

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent, background=(24, 24, 28))
        self.setMenuEnabled(False)
        self.showGrid(y=True, alpha=0.25)
        cache_axes(self)
        self._items: list[pg.BarGraphItem] = []
        self._legend = self.addLegend(offset=(-10, 10))
        self._key: tuple = ()
        self._y_range: object = ()
        self._labels: list[str] = []
        self._tick_step = 0

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._update_ticks()

    def _update_ticks(self) -> None:
        """Labels every n-th bar, n as small as lets the labels sit side by side at this width."""
        if not getattr(self, "_labels", None):  # resize events come during construction too
            return
        char_px = self.fontMetrics().averageCharWidth()
        label_px = (max(len(t) for t in self._labels) + 1) * char_px
        width = max(self.plotItem.vb.width(), 1.0)
        step = max(1, -(-int(label_px * len(self._labels)) // int(width)))
        if step != self._tick_step:
            self._tick_step = step
            self.getAxis("bottom").setTicks([[(i, self._labels[i]) for i in range(0, len(self._labels), step)]])

    def set_bars(self, labels: Sequence[str], series: Mapping[str, np.ndarray],
                 y_range: Optional[tuple[float, float]] = None) -> None:
        """Updates bars in place while the labels and series names stay the same (rebuilding
        the items and legend cost about 9 ms a frame)."""
        n = max(len(series), 1)
        width = 0.8 / n
        x = np.arange(len(labels), dtype=float)
        key = (tuple(labels), tuple(series))
        if key != self._key:
            for item in self._items:
                self.removeItem(item)
            self._items.clear()
            self._legend.clear()
            for i, name in enumerate(series):
                color = SERIES_COLORS[i % len(SERIES_COLORS)]
                item = pg.BarGraphItem(x=x, height=np.zeros(len(labels)), width=width,
                                       brush=pg.mkBrush(*color), pen=pg.mkPen(None))
                self.addItem(item)
                if len(series) > 1:  # one series needs no legend over its bars
                    self._legend.addItem(item, name)
                self._items.append(item)
            self._labels = [str(v) for v in labels]
            self._tick_step = 0
            self._update_ticks()
            self.setXRange(-0.6, len(labels) - 0.4, padding=0)
            self._key = key
        for i, (item, values) in enumerate(zip(self._items, series.values())):
            item.setOpts(x=x - 0.4 + width * (i + 0.5), height=np.asarray(values, float), width=width)
        if y_range != self._y_range:  # setting the same range again repaints the axes
            if y_range is not None:
                self.setYRange(*y_range, padding=0.02)
            else:
                self.enableAutoRange(axis="y")
            self._y_range = y_range


class CurveView(pg.PlotWidget):
    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent, background=(24, 24, 28))
        self.setMenuEnabled(False)
        self.showGrid(x=True, y=True, alpha=0.25)
        cache_axes(self)
        self._legend = self.addLegend(offset=(-10, 10))
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._axes_key: tuple = ()
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._empty = False

    def set_curves(self, series: Mapping[str, tuple[np.ndarray, np.ndarray]], x_label: str = "", y_label: str = "",
                   log_y: bool = False) -> None:
        if (x_label, y_label, log_y) != self._axes_key:  # re-setting them repaints the axes
            self.setLogMode(y=log_y)
            self.setLabel("bottom", x_label)
            self.setLabel("left", y_label)
            self._axes_key = (x_label, y_label, log_y)
        for name in list(self._curves):
            if name not in series:
                self.removeItem(self._curves.pop(name))
                self._data.pop(name, None)
        for i, (name, (x, y)) in enumerate(series.items()):
            if name not in self._curves:
                color = SERIES_COLORS[i % len(SERIES_COLORS)]
                self._curves[name] = self.plot(name=name, pen=pg.mkPen(*color, width=2))
            xs, ys = np.asarray(x, float), np.asarray(y, float)
            last = self._data.get(name)
            if last is not None and np.array_equal(last[0], xs) and np.array_equal(last[1], ys):
                continue  # the same curve again: no repaint
            self._data[name] = (xs, ys)
            self._curves[name].setData(xs, ys)
        empty = all(len(np.asarray(x)) < 2 for x, _ in series.values())
        if empty != self._empty:  # no line yet: a plain 0..1 frame, not auto-range's -400..400
            self._empty = empty
            if empty:
                self.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            else:
                self.enableAutoRange()


class MetricsView(QtWidgets.QTableWidget):
    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["metric", "value"])
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)

    def set_values(self, values: Mapping[str, object]) -> None:
        self.setRowCount(len(values))
        for row, (name, value) in enumerate(values.items()):
            text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
            for col, cell in enumerate((name, text)):
                item = self.item(row, col)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.setItem(row, col, item)
                item.setText(cell)
                if col == 1:
                    item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)

    def value(self, name: str) -> Optional[str]:
        for row in range(self.rowCount()):
            if self.item(row, 0).text() == name:
                return self.item(row, 1).text()
        return None
