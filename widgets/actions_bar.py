"""Buttons for an operator's jobs, built from plain descriptions: a long job is a Start/Stop
toggle, an instant one (a reset, a clear) a plain button with its title."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from PySide6 import QtCore, QtWidgets


@dataclass(frozen=True)
class ActionItem:
    name: str
    title: str
    help: str = ""
    instant: bool = False


class ActionsBar(QtWidgets.QWidget):
    started = QtCore.Signal(str)  # the action's name
    stopRequested = QtCore.Signal(str)

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._layout = QtWidgets.QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.buttons: dict[str, QtWidgets.QPushButton] = {}

    def set_actions(self, items: Sequence[ActionItem]) -> None:
        for button in self.buttons.values():
            self._layout.removeWidget(button)
            button.deleteLater()
        self.buttons = {}
        for item in items:
            button = QtWidgets.QPushButton(item.title if item.instant else f"Start {item.title}")
            button.setToolTip(item.help)
            if item.instant:
                button.clicked.connect(lambda _=False, n=item.name: self.started.emit(n))
            else:
                button.setCheckable(True)
                button.toggled.connect(lambda on, n=item.name: self.started.emit(n) if on else self.stopRequested.emit(n))
            self._layout.addWidget(button)
            self.buttons[item.name] = button
        self.setVisible(bool(items))

    def set_running(self, name: str, running: bool) -> None:
        """Shows ``name`` as running or not, without emitting (the job's state came from elsewhere)."""
        button = self.buttons.get(name)
        if button is not None and button.isCheckable():
            with QtCore.QSignalBlocker(button):
                button.setChecked(running)

    def stop_all(self) -> None:
        for name in self.buttons:
            self.set_running(name, False)
