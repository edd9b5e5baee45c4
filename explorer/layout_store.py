"""Window geometry and each operator's dock layout, remembered between runs.

``persist=False`` (headless rendering, tests) neither reads nor writes the user's settings. A
saved geometry that does not fit the screen it would open on is not restored."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets


class LayoutStore:
    def __init__(self, window: QtWidgets.QMainWindow, settings: QtCore.QSettings, persist: bool) -> None:
        self._window = window
        self._settings = settings
        self.persist = persist
        self._restored: set[str] = set()

    def restore_geometry(self) -> bool:
        """The saved window geometry, unless it does not fit the screen the window opens on (a
        layout saved on a larger screen): then the window keeps the size it had."""
        if not self.persist:
            return False
        geometry = self._settings.value("window/geometry")
        if geometry is None:
            return False
        before = self._window.geometry()
        if not self._window.restoreGeometry(geometry):
            return False
        screen = self._window.screen()
        if screen is not None and not screen.availableGeometry().contains(self._window.frameGeometry()):
            self._window.setGeometry(before)
            return False
        return True

    def restore_operator(self, operator: str) -> None:
        """The operator's saved dock layout, once per run (later changes are the user's)."""
        if not self.persist or operator in self._restored:
            return
        self._restored.add(operator)
        state = self._settings.value(f"window/state/{operator}")
        if state is not None:
            self._window.restoreState(state)

    def save_operator(self, operator: str) -> None:
        if self.persist:
            self._settings.setValue(f"window/state/{operator}", self._window.saveState())

    def forget_operator(self, operator: str) -> None:
        if self.persist:
            self._settings.remove(f"window/state/{operator}")

    def save_geometry(self) -> None:
        if self.persist:
            self._settings.setValue("window/geometry", self._window.saveGeometry())
            self._settings.sync()
