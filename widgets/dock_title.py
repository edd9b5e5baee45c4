"""A dock's title bar: the panel's name, float and close buttons, and a double-click that asks to
show the panel in the centre of the window (Qt's own bar would float the dock instead)."""

from __future__ import annotations

from typing import Optional

from PySide6 import QtCore, QtGui, QtWidgets


class ElidedLabel(QtWidgets.QLabel):
    """A one-line label that cuts its text with an ellipsis rather than widen its dock: a long
    title ("Receptive field: deformable convolution") set the dock's minimum width and pushed the
    window past a 1366 px screen."""

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setToolTip(f"{text}\nDouble-click to show this panel in the centre")  # whole, however cut

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(self.fontMetrics().horizontalAdvance("Wide…"), super().minimumSizeHint().height())

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), QtCore.Qt.TextElideMode.ElideRight, rect.width())
        painter.setPen(self.palette().color(QtGui.QPalette.ColorRole.WindowText))
        painter.drawText(rect, int(self.alignment() | QtCore.Qt.AlignmentFlag.AlignVCenter), text)

    def shown_text(self) -> str:
        """The title as drawn now."""
        return self.fontMetrics().elidedText(self.text(), QtCore.Qt.TextElideMode.ElideRight, self.contentsRect().width())


class DockTitleBar(QtWidgets.QWidget):
    doubleClicked = QtCore.Signal()

    def __init__(self, dock: QtWidgets.QDockWidget, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.label = ElidedLabel(dock.windowTitle())
        self.label.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.label.setText(dock.windowTitle())  # and its tooltip
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(6, 1, 2, 1)
        layout.setSpacing(2)
        layout.addWidget(self.label, 1)
        style = self.style()
        for icon, tip, slot in (
            (QtWidgets.QStyle.StandardPixmap.SP_TitleBarNormalButton, "Float", lambda: dock.setFloating(not dock.isFloating())),
            (QtWidgets.QStyle.StandardPixmap.SP_TitleBarCloseButton, "Close", dock.close),
        ):
            button = QtWidgets.QToolButton(autoRaise=True, toolTip=tip)
            button.setIcon(style.standardIcon(icon))
            button.setIconSize(QtCore.QSize(12, 12))
            button.clicked.connect(slot)
            layout.addWidget(button)

    def mouseDoubleClickEvent(self, event: QtGui.QMouseEvent) -> None:
        self.doubleClicked.emit()
        event.accept()
