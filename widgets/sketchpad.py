"""A drawing surface as an image source: brush size and colour, eraser, clear, undo.

Emits the drawing as float RGB (H, W, 3) in [0, 1] when a stroke ends, and at most every
``live_interval_ms`` while it is drawn, so operators follow the pen without flooding the worker.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

UNDO_DEPTH = 30


class SketchCanvas(QtWidgets.QWidget):
    changed = QtCore.Signal()
    strokeFinished = QtCore.Signal()

    def __init__(self, size: tuple[int, int] = (256, 256), parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.image = QtGui.QImage(size[0], size[1], QtGui.QImage.Format.Format_RGB888)
        self.image.fill(QtGui.QColor("white"))
        self.brush_size = 8
        self.color = QtGui.QColor(20, 20, 20)
        self.erasing = False
        self._undo: list[QtGui.QImage] = []
        self._last: Optional[QtCore.QPointF] = None
        self.setMinimumSize(200, 200)
        self.setCursor(QtCore.Qt.CursorShape.CrossCursor)

    # -- geometry: the image is drawn scaled to fit, centred --------------------------------------
    def _target(self) -> QtCore.QRectF:
        w, h = self.image.width(), self.image.height()
        s = min(self.width() / w, self.height() / h)
        return QtCore.QRectF((self.width() - w * s) / 2, (self.height() - h * s) / 2, w * s, h * s)

    def _to_image(self, pos: QtCore.QPointF) -> QtCore.QPointF:
        t = self._target()
        return QtCore.QPointF((pos.x() - t.x()) * self.image.width() / t.width(),
                              (pos.y() - t.y()) * self.image.height() / t.height())

    # -- drawing ----------------------------------------------------------------------------------
    def draw_line(self, a: QtCore.QPointF, b: QtCore.QPointF) -> None:
        painter = QtGui.QPainter(self.image)
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        color = QtGui.QColor("white") if self.erasing else self.color
        pen = QtGui.QPen(color, self.brush_size, QtCore.Qt.PenStyle.SolidLine, QtCore.Qt.PenCapStyle.RoundCap,
                         QtCore.Qt.PenJoinStyle.RoundJoin)
        painter.setPen(pen)
        painter.drawLine(a, b)
        painter.end()
        self.update()
        self.changed.emit()

    def begin_stroke(self) -> None:
        self._undo.append(self.image.copy())
        del self._undo[:-UNDO_DEPTH]

    def undo(self) -> None:
        if self._undo:
            self.image = self._undo.pop()
            self.update()
            self.changed.emit()
            self.strokeFinished.emit()

    def clear(self) -> None:
        self.begin_stroke()
        self.image.fill(QtGui.QColor("white"))
        self.update()
        self.changed.emit()
        self.strokeFinished.emit()

    def pixels(self) -> np.ndarray:
        img = self.image.convertToFormat(QtGui.QImage.Format.Format_RGB888)
        w, h, stride = img.width(), img.height(), img.bytesPerLine()
        buf = np.frombuffer(img.constBits(), np.uint8, count=stride * h).reshape(h, stride)
        return buf[:, : w * 3].reshape(h, w, 3).astype(np.float32) / 255.0

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() == QtCore.Qt.MouseButton.LeftButton:
            self.begin_stroke()
            self._last = self._to_image(event.position())
            self.draw_line(self._last, self._last)

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._last is not None:
            p = self._to_image(event.position())
            self.draw_line(self._last, p)
            self._last = p

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._last is not None:
            self._last = None
            self.strokeFinished.emit()

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        painter.fillRect(self.rect(), QtGui.QColor(30, 30, 34))
        painter.drawImage(self._target(), self.image)
        painter.end()


class Sketchpad(QtWidgets.QWidget):
    """The canvas with its tools. ``sketched(pixels)`` carries the drawing."""

    sketched = QtCore.Signal(object)

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None, live_interval_ms: int = 80) -> None:
        super().__init__(parent)
        self.canvas = SketchCanvas()
        self._live_interval = live_interval_ms / 1000.0
        self._last_emit = 0.0
        tools = QtWidgets.QHBoxLayout()
        self.size_spin = QtWidgets.QSpinBox()
        self.size_spin.setRange(1, 64)
        self.size_spin.setValue(self.canvas.brush_size)
        self.size_spin.setPrefix("brush ")
        self.size_spin.valueChanged.connect(lambda v: setattr(self.canvas, "brush_size", v))
        self.color_button = QtWidgets.QPushButton("Colour…")
        self.color_button.clicked.connect(self._pick_color)
        self.eraser = QtWidgets.QToolButton()
        self.eraser.setText("Eraser")
        self.eraser.setCheckable(True)
        self.eraser.toggled.connect(lambda on: setattr(self.canvas, "erasing", on))
        undo = QtWidgets.QToolButton()
        undo.setText("Undo")
        undo.clicked.connect(self.canvas.undo)
        clear = QtWidgets.QToolButton()
        clear.setText("Clear")
        clear.clicked.connect(self.canvas.clear)
        for w in (self.size_spin, self.color_button, self.eraser, undo, clear):
            tools.addWidget(w)
        tools.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(tools)
        layout.addWidget(self.canvas, 1)
        self.canvas.changed.connect(self._live)
        self.canvas.strokeFinished.connect(self._emit)

    def _pick_color(self) -> None:
        color = QtWidgets.QColorDialog.getColor(self.canvas.color, self, "Brush colour")
        if color.isValid():
            self.canvas.color = color

    def _live(self) -> None:
        if time.perf_counter() - self._last_emit >= self._live_interval:
            self._emit()

    def _emit(self) -> None:
        self._last_emit = time.perf_counter()
        self.sketched.emit(self.canvas.pixels())
