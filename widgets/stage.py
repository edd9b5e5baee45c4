"""The centre of the window: the operator's primary result large, the input one keystroke away
(shown instead, or side by side), a pinned result to compare with the live one (A/B side by side,
their difference, or one picture split by a draggable divider), and a banner above them for
errors and notices."""

from __future__ import annotations

from typing import Optional

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from widgets.banner import Banner

MODES = ("result", "input", "side by side", "A/B", "A-B", "A|B")
PINNED_MODES = ("A/B", "A-B", "A|B")


class Stage(QtWidgets.QWidget):
    modeChanged = QtCore.Signal(str)

    def __init__(self, input_view: QtWidgets.QWidget, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.input_view = input_view
        self.result: Optional[QtWidgets.QWidget] = None
        self.mode = "result"
        self.banner = Banner()
        self.title = QtWidgets.QLabel()
        self.title.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.title.setStyleSheet("color: #ddd; font-weight: bold; padding: 0 4px;")
        self.buttons: dict[str, QtWidgets.QToolButton] = {}
        header = QtWidgets.QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.title, 1)
        group = QtWidgets.QButtonGroup(self)
        for mode in MODES:
            button = QtWidgets.QToolButton(text=mode[0].upper() + mode[1:], checkable=True, autoRaise=True)
            button.clicked.connect(lambda _=False, m=mode: self.set_mode(m))
            group.addButton(button)
            header.addWidget(button)
            self.buttons[mode] = button
        self._split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self._split.setChildrenCollapsible(False)
        self._split.addWidget(input_view)
        self.pinned = QtWidgets.QLabel(alignment=QtCore.Qt.AlignmentFlag.AlignCenter)  # A: the pinned picture
        self.pinned.setMinimumSize(120, 90)
        self.pinned.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Ignored)
        self._pinned_image: Optional[np.ndarray] = None  # A, (H, W, 3) uint8
        self._live: Optional[np.ndarray] = None  # B, as last drawn
        self._split.insertWidget(0, self.pinned)
        self.split_view = SplitView()  # "A|B": A left of a divider, B right of it
        self._split.addWidget(self.split_view)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.banner)
        layout.addLayout(header)
        layout.addWidget(self._split, 1)
        self._apply()

    def set_result(self, widget: Optional[QtWidgets.QWidget], title: str = "") -> Optional[QtWidgets.QWidget]:
        """Puts ``widget`` in the result slot; returns the widget it replaces (now parentless)."""
        old = self.result
        if old is widget:
            self.title.setText(title)
            return None
        if old is not None:
            old.setParent(None)
        self.result = widget
        if widget is not None:
            self._split.addWidget(widget)
        self.title.setText(title)
        self._apply()
        return old

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"stage mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._apply()
        self.modeChanged.emit(mode)

    def pin(self, picture: np.ndarray) -> None:
        """Keeps ``picture`` ((H, W, 3) uint8: the result's data now) as A, to compare B with."""
        self._pinned_image = np.ascontiguousarray(picture)
        self._live = self._pinned_image  # B until the next frame: the same picture
        self.set_mode("A/B")

    @property
    def has_pin(self) -> bool:
        return self._pinned_image is not None

    def compare_with(self, live: Optional[np.ndarray]) -> None:
        """The live picture B (same layout as A): A is shown beside it, or |A - B| in "A-B"."""
        self._live = live
        self.refresh_comparison()

    def refresh_comparison(self) -> None:
        if self._pinned_image is None or self.mode not in PINNED_MODES:
            return
        picture = self._pinned_image
        if self.mode == "A|B":
            self.split_view.set_pictures(picture, self._live)
            return
        if self.mode == "A-B":
            live = self._live
            if live is None or live.shape != picture.shape:
                self.pinned.setText("A and B differ in size: no difference to show")
                return
            picture = difference(picture, live)
        h, w = picture.shape[:2]
        image = QtGui.QImage(picture.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()
        self.pinned.setPixmap(QtGui.QPixmap.fromImage(image).scaled(
            self.pinned.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio, QtCore.Qt.TransformationMode.FastTransformation))

    def toggle_input(self) -> None:
        """Between the result and the input (side by side goes back to the result)."""
        self.set_mode("input" if self.mode == "result" else "result")

    def showing(self) -> tuple[bool, bool]:
        """(input visible, result visible)."""
        return not self.input_view.isHidden(), self.result is not None and not self.result.isHidden()

    def _apply(self) -> None:
        has_result = self.result is not None
        mode = self.mode if has_result else "input"
        if mode in PINNED_MODES and self._pinned_image is None:
            mode = "result"
        self.input_view.setVisible(mode in ("input", "side by side"))
        self.pinned.setVisible(mode in ("A/B", "A-B"))
        self.split_view.setVisible(mode == "A|B")
        if has_result:
            self.result.setVisible(mode in ("result", "side by side", "A/B", "A-B"))
            if mode in ("side by side", "A/B", "A-B"):
                third = max(1, self._split.width() // 2)
                self._split.setSizes([third, third, third])
        for name, button in self.buttons.items():
            button.setEnabled(has_result or name == "input")
            if name in PINNED_MODES:
                button.setEnabled(has_result and self._pinned_image is not None)
            button.setChecked(name == mode)
        if mode in PINNED_MODES:
            QtCore.QTimer.singleShot(0, self.refresh_comparison)  # once the split has its sizes


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|A - B| of two (H, W, 3) uint8 pictures as grey, the largest difference at full white."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
    top = max(int(diff.max()), 1)
    grey = (diff.astype(np.float32) * (255.0 / top)).astype(np.uint8) if diff.any() else diff.astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, 2))


def split_composite(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """One picture of two of the same shape: columns left of ``round(fraction * width)`` from A,
    the rest from B."""
    if a.shape != b.shape:
        raise ValueError(f"A {a.shape} and B {b.shape} differ in size")
    column = int(round(min(max(fraction, 0.0), 1.0) * a.shape[1]))
    out = b.copy()
    out[:, :column] = a[:, :column]
    return out


class SplitView(QtWidgets.QWidget):
    """A and B in one picture, split by a vertical divider that follows the mouse while dragged;
    "A (pinned)" is written on the left, "B (live)" on the right."""

    fractionChanged = QtCore.Signal(float)

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.fraction = 0.5
        self._a: Optional[np.ndarray] = None
        self._b: Optional[np.ndarray] = None
        self.setMinimumSize(120, 90)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)
        self.setCursor(QtCore.Qt.CursorShape.SplitHCursor)

    def set_pictures(self, a: Optional[np.ndarray], b: Optional[np.ndarray]) -> None:
        self._a, self._b = a, b
        self.update()

    def set_fraction(self, fraction: float) -> None:
        self.fraction = min(max(float(fraction), 0.0), 1.0)
        self.update()
        self.fractionChanged.emit(self.fraction)

    def composite(self) -> Optional[np.ndarray]:
        """The picture shown, at the data's resolution, or None without both of the same size."""
        if self._a is None or self._b is None or self._a.shape != self._b.shape:
            return None
        return split_composite(self._a, self._b, self.fraction)

    def picture_rect(self) -> QtCore.QRectF:
        """Where the picture is drawn: fitted into the widget, its aspect kept."""
        if self._a is None:
            return QtCore.QRectF(self.rect())
        h, w = self._a.shape[:2]
        scale = min(self.width() / w, self.height() / h)
        rw, rh = w * scale, h * scale
        return QtCore.QRectF((self.width() - rw) / 2, (self.height() - rh) / 2, rw, rh)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        picture = self.composite()
        if picture is None:
            painter.setPen(QtGui.QColor("#ccc"))
            text = "pin a result for A/B" if self._a is None else "A and B differ in size: no split to show"
            painter.drawText(self.rect(), QtCore.Qt.AlignmentFlag.AlignCenter, text)
            return
        h, w = picture.shape[:2]
        image = QtGui.QImage(np.ascontiguousarray(picture).data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888)
        rect = self.picture_rect()
        painter.drawImage(rect, image)
        x = rect.left() + rect.width() * round(self.fraction * w) / w
        painter.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255), 2))
        painter.drawLine(QtCore.QPointF(x, rect.top()), QtCore.QPointF(x, rect.bottom()))
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        for text, left in (("A (pinned)", True), ("B (live)", False)):
            width = painter.fontMetrics().horizontalAdvance(text) + 10
            box = QtCore.QRectF(x - width - 6 if left else x + 6, rect.top() + 6, width, 20)
            painter.fillRect(box, QtGui.QColor(0, 0, 0, 160))
            painter.drawText(box, QtCore.Qt.AlignmentFlag.AlignCenter, text)
        painter.end()

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        self._follow(event)

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.buttons() & QtCore.Qt.MouseButton.LeftButton:
            self._follow(event)

    def _follow(self, event: QtGui.QMouseEvent) -> None:
        rect = self.picture_rect()
        if rect.width() > 0:
            self.set_fraction((event.position().x() - rect.left()) / rect.width())
