"""A slim vertical colour bar with its value range, for every panel that maps values to colour."""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from widgets.colormaps import lookup_table

BAR_LEFT, BAR_PX = 4, 12
LABEL_PT = 8.0


class ColorBar(QtWidgets.QWidget):
    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._image: Optional[QtGui.QImage] = None
        self._levels = (0.0, 1.0)
        self._key: tuple = ()
        self.setFixedWidth(58)  # until the first map sets the width its labels need
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Fixed, QtWidgets.QSizePolicy.Policy.Expanding)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

    def set_map(self, colormap: str, levels: tuple[float, float]) -> None:
        key = (colormap, float(levels[0]), float(levels[1]))
        if key == self._key:
            return
        self._key = key
        self._image = _gradient(colormap)
        self._levels = (float(levels[0]), float(levels[1]))
        width = self._width_for(self._levels)
        if width > self.width():  # only grows: a bar that narrows and widens with its labels would
            self.setFixedWidth(width)  # re-lay its panel out, and repaint the picture, every frame
        self.update()

    def _width_for(self, levels: tuple[float, float]) -> int:
        """Room for the widest tick label, so no value is cut off."""
        font = self.font()
        font.setPointSizeF(LABEL_PT)
        metrics = QtGui.QFontMetrics(font)
        lo, hi = levels
        text = max((metrics.horizontalAdvance(_fmt(v)) for v in (lo, (lo + hi) / 2, hi)), default=0)
        return BAR_LEFT + BAR_PX + 6 + text + 4

    def tick_labels(self) -> list[str]:
        lo, hi = self._levels
        return [_fmt(hi), _fmt((lo + hi) / 2), _fmt(lo)]

    @property
    def levels(self) -> tuple[float, float]:
        return self._levels

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        p.fillRect(event.rect(), self.palette().window())  # opaque: Qt paints nothing under it first
        if self._image is None:
            return
        bar = QtCore.QRect(BAR_LEFT, 8, BAR_PX, max(10, self.height() - 16))
        p.drawImage(bar, self._image)
        p.setPen(QtGui.QColor(200, 200, 200))
        font = p.font()
        font.setPointSizeF(LABEL_PT)
        p.setFont(font)
        lo, hi = self._levels
        for frac, value in ((0.0, hi), (0.5, (lo + hi) / 2), (1.0, lo)):
            y = bar.top() + frac * bar.height()
            p.drawLine(bar.right() + 1, int(y), bar.right() + 4, int(y))
            p.drawText(QtCore.QRectF(bar.right() + 6, y - 8, self.width() - bar.right() - 6, 16),
                       QtCore.Qt.AlignmentFlag.AlignVCenter, _fmt(value))
        p.end()


@functools.lru_cache(maxsize=32)
def _gradient(colormap: str) -> QtGui.QImage:
    """The bar's picture, top high, made once per colour map in the raster engine's own format
    (an RGBA8888 picture was converted on every paint, and rebuilt on every change of levels)."""
    lut = lookup_table(colormap)[::-1]
    rgba = np.concatenate([lut, np.full((256, 1), 255, np.uint8)], axis=1)
    column = np.ascontiguousarray(np.repeat(rgba[:, None, :], BAR_PX, axis=1))
    image = QtGui.QImage(column.data, BAR_PX, 256, BAR_PX * 4, QtGui.QImage.Format.Format_RGBA8888)
    return image.convertToFormat(QtGui.QImage.Format.Format_RGB32)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.1e}"
    return f"{v:.3g}"
