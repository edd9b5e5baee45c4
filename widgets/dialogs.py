"""Small helpers shared by the window's non-modal dialogs."""

from __future__ import annotations

from PySide6 import QtGui, QtWidgets


def show_in_front(dialog: QtWidgets.QWidget) -> None:
    """Shows ``dialog`` and brings it forward (the offscreen platform cannot raise a window and
    warns if asked)."""
    dialog.show()
    if QtGui.QGuiApplication.platformName() != "offscreen":
        dialog.raise_()
        dialog.activateWindow()
