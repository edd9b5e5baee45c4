"""A panel's caption: plain text wrapped at word boundaries to the panel's width.

A QLabel asks its parent to lay out again on every new text, even when the text still takes the
same lines; captions carry numbers, so every panel was laid out again on every frame (0.4-1 ms a
frame across a window's panels). This one repaints itself in place and asks for a layout only
when its height at its width changes."""

from __future__ import annotations

from typing import Optional

from PySide6 import QtCore, QtGui, QtWidgets

PAD_X, PAD_Y = 3, 1
COLOR = QtGui.QColor(0xBB, 0xBB, 0xBB)
FLAGS = QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.TextFlag.TextWordWrap


class Caption(QtWidgets.QWidget):
    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._height: tuple = ()  # (text, width, height) last measured: a text layout is not free
        policy = QtWidgets.QSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred, QtWidgets.QSizePolicy.Policy.Minimum)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent, True)  # it fills its own background

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        if text == self._text:
            return
        before = self.heightForWidth(self.width())
        self._text = text
        if self.heightForWidth(self.width()) != before:
            self.updateGeometry()  # more or fewer lines: the panel gives the caption its new height
        self.update()

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        if not self._text:
            return 0
        if self._height[:2] == (self._text, width):
            return self._height[2]
        room = QtCore.QRect(0, 0, max(width - 2 * PAD_X, 1), 1 << 20)
        height = self.fontMetrics().boundingRect(room, FLAGS, self._text).height() + 2 * PAD_Y
        self._height = (self._text, width, height)
        return height

    def changeEvent(self, event: QtCore.QEvent) -> None:
        if event.type() in (QtCore.QEvent.Type.FontChange, QtCore.QEvent.Type.StyleChange):
            self._height = ()  # another font (presentation mode): measured afresh
            self.updateGeometry()
        super().changeEvent(event)

    def sizeHint(self) -> QtCore.QSize:
        width = max(self.width(), 120)
        return QtCore.QSize(width, self.heightForWidth(width))

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(0, self.fontMetrics().height() + 2 * PAD_Y if self._text else 0)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        painter.fillRect(event.rect(), self.palette().window())  # so Qt paints nothing under it first
        painter.setPen(COLOR)
        painter.drawText(self.rect().adjusted(PAD_X, PAD_Y, -PAD_X, -PAD_Y), FLAGS, self._text)
