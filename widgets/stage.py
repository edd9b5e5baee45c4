"""The centre of the window: the operator's primary result large, the input one keystroke away
(shown instead, or side by side), and a banner above both for errors and notices."""

from __future__ import annotations

from typing import Optional

from PySide6 import QtCore, QtWidgets

from widgets.banner import Banner

MODES = ("result", "input", "side by side")


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
            button = QtWidgets.QToolButton(text=mode.capitalize(), checkable=True, autoRaise=True)
            button.clicked.connect(lambda _=False, m=mode: self.set_mode(m))
            group.addButton(button)
            header.addWidget(button)
            self.buttons[mode] = button
        self._split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self._split.setChildrenCollapsible(False)
        self._split.addWidget(input_view)
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

    def toggle_input(self) -> None:
        """Between the result and the input (side by side goes back to the result)."""
        self.set_mode("input" if self.mode == "result" else "result")

    def showing(self) -> tuple[bool, bool]:
        """(input visible, result visible)."""
        return not self.input_view.isHidden(), self.result is not None and not self.result.isHidden()

    def _apply(self) -> None:
        has_result = self.result is not None
        mode = self.mode if has_result else "input"
        self.input_view.setVisible(mode in ("input", "side by side"))
        if has_result:
            self.result.setVisible(mode in ("result", "side by side"))
            if mode == "side by side":
                half = max(1, self._split.width() // 2)
                self._split.setSizes([half, half])
        for name, button in self.buttons.items():
            button.setEnabled(has_result or name == "input")
            button.setChecked(name == mode)
