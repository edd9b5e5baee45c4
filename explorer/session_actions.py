"""File > Save Session, Open Session and Recover Last Session: the dialogs and messages around
``explorer.session_file``."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtWidgets

from explorer.session_file import read_session, restore_session, save_session

FILTER = "OpScope session (*.opscope.json *.json)"


def save_dialog(window) -> None:
    path, _ = QtWidgets.QFileDialog.getSaveFileName(window, "Save session", "session.opscope.json", FILTER)
    if path:
        save_to(window, Path(path))


def save_to(window, path: Path) -> bool:
    try:
        save_session(path, window.session, bytes(window.saveState()))
    except OSError as exc:
        window.banner.show_message(f"Session not saved: {exc}", "error")
        return False
    window.statusBar().showMessage(f"session saved to {path}", 5000)
    return True


def open_dialog(window) -> None:
    path, _ = QtWidgets.QFileDialog.getOpenFileName(window, "Open session", "", FILTER)
    if path:
        open_from(window, Path(path))


def open_from(window, path: Path) -> bool:
    """Restores what the file holds; says what was and what was not restored."""
    try:
        data = read_session(path)
    except ValueError as exc:
        window.banner.show_message(f"Session not opened: {exc}. Nothing was changed.", "error")
        return False
    report = restore_session(window, data, window.images.max_side)
    window.banner.show_message(f"Session {path.name}: {report.summary()}", "notice" if not report.skipped else "error")
    return True


def recover(window) -> bool:
    """The session autosaved by a run that did not end cleanly."""
    if window.autosave is None or not window.autosave.path.is_file():
        window.banner.show_message("No autosaved session to recover.", "notice")
        return False
    return open_from(window, window.autosave.path)


def offer_recovery(window) -> None:
    if window.autosave is not None and window.autosave.left_over:
        window.banner.show_message("The last session did not end cleanly and was autosaved: "
                                   "File > Recover Last Session brings it back.", "notice")
