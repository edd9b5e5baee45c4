"""A one-line message over the canvas: an error (the last good frame stays) or a notice.
Always plain text: a file name or an error message is shown as written, never as markup."""

from __future__ import annotations

from typing import Optional

from PySide6 import QtCore, QtWidgets

STYLES = {
    "error": "background:#6b1d1d; color:#fff; padding:6px; border-radius:3px;",
    "job": "background:#6b1d1d; color:#fff; padding:6px; border-radius:3px;",  # stays until the next job
    "notice": "background:#5a4a12; color:#fff; padding:6px; border-radius:3px;",
}
MAX_CHARS = 600  # a message longer than this is cut: a pasted essay must not fill the window


class Banner(QtWidgets.QLabel):
    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.setWordWrap(True)
        self.setVisible(False)
        self.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.level = ""

    def show_message(self, text: str, level: str = "error") -> None:
        if len(text) > MAX_CHARS:
            text = text[: MAX_CHARS - 1] + "…"
        self.setText(text)
        self.setStyleSheet(STYLES[level])
        self.level = level
        self.setVisible(True)

    def clear_message(self) -> None:
        self.setVisible(False)
        self.level = ""
