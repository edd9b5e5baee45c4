"""The session written to the settings folder a moment after each change (atomically), removed on
a clean exit: after a crash or a killed process the next start offers it back, and at most the
last few seconds are lost."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6 import QtCore

from explorer.session_file import save_session

DELAY_MS = 2000  # after the last change: a drag writes once, when it rests
NAME = "autosave.json"


class Autosave(QtCore.QObject):
    def __init__(self, window, folder: Path, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.window = window
        self.path = Path(folder) / NAME
        self.left_over = self.path.is_file()  # a run before this one did not end cleanly
        self._timer = QtCore.QTimer(self, singleShot=True, interval=DELAY_MS)
        self._timer.timeout.connect(self.write_now)
        window.session.edited.connect(self.changed)
        window.session.imageChanged.connect(self.changed)

    def changed(self, *_args) -> None:
        self._timer.start()

    def write_now(self) -> None:
        if self.window.session.image is None:
            return
        try:
            save_session(self.path, self.window.session, bytes(self.window.saveState()))
        except OSError:
            pass  # a full or read-only disk: the session simply is not kept (never fatal)

    def clean_exit(self) -> None:
        self._timer.stop()
        if self.path.exists():
            self.path.unlink()
