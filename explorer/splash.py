"""A window at once: the app's icon and 'loading' shown before torch and the operators are
imported (about a second on a small machine), so a start from the desktop answers at once."""

from __future__ import annotations

from typing import Optional, Sequence

HEADLESS_FLAGS = ("--render", "--list", "--sweep", "--video", "--batch", "--install-desktop",
                  "--uninstall-desktop", "-h", "--help")


def opens_a_window(argv: Sequence[str]) -> bool:
    """Whether these arguments open the window (not a render, a list, a batch or help)."""
    return not any(arg.split("=")[0] in HEADLESS_FLAGS for arg in argv)


def early_splash(argv: Sequence[str]):
    """A splash screen shown now, or None when no window will open or none can be shown."""
    if not opens_a_window(argv):
        return None
    from explorer.app import platform_problem

    if platform_problem():
        return None  # the command line says why, after parsing
    from PySide6 import QtCore, QtGui, QtWidgets

    from explorer.app import ROOT, qt_app

    qt_app()
    pixmap = QtGui.QPixmap(str(ROOT / "assets" / "icon.png"))
    if pixmap.isNull():
        pixmap = QtGui.QPixmap(256, 256)
        pixmap.fill(QtGui.QColor(40, 40, 44))
    splash = QtWidgets.QSplashScreen(pixmap)
    splash.showMessage("OpScope is loading…", QtCore.Qt.AlignmentFlag.AlignBottom | QtCore.Qt.AlignmentFlag.AlignHCenter,
                       QtGui.QColor(230, 230, 230))
    splash.show()
    QtWidgets.QApplication.processEvents()
    return splash


def finish(splash: Optional[object], window) -> None:
    if splash is not None:
        splash.finish(window)
