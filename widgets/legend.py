"""A legend of colour swatches with names, beside a picture whose colours are categories."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

SWATCH_PX = 12


class CategoryLegend(QtWidgets.QWidget):
    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._names: tuple[str, ...] = ()
        self._colors = np.zeros((0, 3), np.uint8)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Fixed, QtWidgets.QSizePolicy.Policy.Expanding)

    def set_categories(self, names: Sequence[str], colors: np.ndarray) -> None:
        """``colors`` (K, 3) floats in [0, 1] or uint8."""
        colors = np.asarray(colors)
        if colors.dtype != np.uint8:
            colors = np.clip(colors * 255 + 0.5, 0, 255).astype(np.uint8)
        if tuple(names) == self._names and np.array_equal(colors, self._colors):
            return
        self._names, self._colors = tuple(names), colors
        metrics = self.fontMetrics()
        width = max((metrics.horizontalAdvance(n) for n in self._names), default=0) + SWATCH_PX + 14
        width = min(max(width, 60), 180)
        if width > self.width() or not self.isVisible():  # only grows: a legend that narrows and widens
            self.setFixedWidth(width)  # as categories change would re-lay the panel out every frame
        self.update()

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        if not self._names:
            return
        p = QtGui.QPainter(self)
        row = max(SWATCH_PX + 3, self.fontMetrics().height())
        per_column = max(1, (self.height() - 8) // row)
        shown = self._names if len(self._names) <= per_column else self._names[: per_column - 1]
        for i, name in enumerate(shown):
            y = 4 + i * row
            r, g, b = (int(v) for v in self._colors[i % len(self._colors)])
            p.fillRect(QtCore.QRect(4, y + 1, SWATCH_PX, SWATCH_PX), QtGui.QColor(r, g, b))
            p.setPen(QtGui.QColor(220, 220, 220))
            p.drawText(QtCore.QRect(8 + SWATCH_PX, y, self.width() - SWATCH_PX - 10, row),
                       QtCore.Qt.AlignmentFlag.AlignVCenter, name)
        if len(shown) < len(self._names):
            p.setPen(QtGui.QColor(170, 170, 170))
            p.drawText(QtCore.QRect(4, 4 + len(shown) * row, self.width() - 6, row), QtCore.Qt.AlignmentFlag.AlignVCenter,
                       f"+{len(self._names) - len(shown)} more")
        p.end()


class OverlayControls(QtWidgets.QWidget):
    """The opacity of a map blended over a picture, and a 'map only' switch, so brightness under
    the map can be told from the map's value."""

    changed = QtCore.Signal()

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setToolTip("Opacity of the map over the picture")
        self.map_only = QtWidgets.QCheckBox("map only")
        self.map_only.setToolTip("Hide the picture under the map")
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(3, 0, 3, 0)
        label = QtWidgets.QLabel("opacity")
        label.setStyleSheet("color: #aaa;")
        layout.addWidget(label)
        layout.addWidget(self.opacity, 1)
        layout.addWidget(self.map_only)
        self._user = False
        self.opacity.valueChanged.connect(self._on_user)
        self.map_only.toggled.connect(lambda _on: self.changed.emit())

    def _on_user(self, _value: int) -> None:
        self._user = True
        self.changed.emit()

    def effective_opacity(self, default: float) -> float:
        """The user's opacity once they moved the slider, else the layer's own."""
        if not self._user:
            with QtCore.QSignalBlocker(self.opacity):
                self.opacity.setValue(int(round(default * 100)))
            return default
        return self.opacity.value() / 100.0
