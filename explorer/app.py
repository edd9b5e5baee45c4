"""Putting the application together: Qt app, session, worker and window."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from backends.allocator import tune_malloc
from backends.imageio import DEFAULT_MAX_SIDE, LoadedImage


@dataclass
class App:
    qapp: object
    session: object
    worker: object
    scheduler: object
    window: object

    def close(self) -> None:
        self.window.close()
        self.worker.shutdown()


def qt_app():
    from PySide6 import QtWidgets

    import widgets.pgconfig  # noqa: F401  (pyqtgraph settings)

    app = QtWidgets.QApplication.instance()
    if app is None:
        _quiet_offscreen_warnings()
        app = QtWidgets.QApplication(sys.argv[:1])
        app.setApplicationName("OpScope")
        app.setOrganizationName("OpScope")
        app.setStyle("Fusion")
        app.setDesktopFileName("opscope")  # the window belongs to the menu entry (explorer/desktop.py)
        icon = ROOT / "assets" / "icon.png"
        if icon.is_file():
            from PySide6 import QtGui

            app.setWindowIcon(QtGui.QIcon(str(icon)))
        _dark_palette(app)
    return app


def build(
    image: LoadedImage,
    source: str,
    operator: str = "dilated",
    params: Optional[dict] = None,
    device: Optional[str] = None,
    max_side: int = DEFAULT_MAX_SIDE,
    restore_layout: bool = True,
    synchronous: bool = False,
    remote: Optional[str] = None,
) -> App:
    """Everything wired, the image set and the first request submitted. ``restore_layout=False``
    (headless rendering, tests) leaves the user's settings untouched; ``synchronous`` computes on
    the calling thread (tests and still renders); ``remote`` (``local`` or ``ray://HOST:PORT``)
    computes in a Ray actor, the local worker standing by (explorer/remote.py)."""
    tune_malloc()
    from backends.device import describe, pick_device
    from explorer.main_window import MainWindow
    from explorer.scheduler import Scheduler
    from explorer.session import Session
    from explorer.worker import ComputeWorker

    qapp = qt_app()
    dev = pick_device(device)
    configure_threads()
    session = Session(operator)
    if params:
        session.set_params(params)
    worker = ComputeWorker(dev, synchronous=synchronous)
    if remote:
        from explorer.remote import start_remote

        worker = start_remote(remote, worker)
    scheduler = Scheduler(session, worker)
    device_text = worker.description if remote else describe(dev)
    window = MainWindow(session, scheduler, device_text, max_side=max_side, restore_layout=restore_layout)
    if remote:
        worker.watch(window)
    freeze_startup_objects()
    window.set_image(image, source)
    return App(qapp, session, worker, scheduler, window)


def freeze_startup_objects() -> None:
    """Moves every object alive after start-up out of the collector's sight: a full collection
    over the ~170,000 objects that torch, Qt and pyqtgraph leave behind held the GIL for about
    100 ms, a frame lost on both threads every few seconds of dragging."""
    gc.collect()
    gc.freeze()


def configure_threads() -> int:
    """Leave the UI thread a core of its own on small machines: measured on 2 cores, two torch
    threads gave the same median frame as one but worse tails (OpenMP threads spinning against
    the painting UI thread), and 2-5x slower frames when another job held a core. OpenCV gets
    the same count: its own pool of two made optical flow's frame 2 ms slower (Farneback and
    the depthwise filters against the painting thread). ``OPSCOPE_THREADS`` overrides."""
    import cv2
    import torch

    wanted = os.environ.get("OPSCOPE_THREADS")
    cores = os.cpu_count() or 1
    threads = int(wanted) if wanted else (max(1, cores - 1) if cores <= 4 else torch.get_num_threads())
    torch.set_num_threads(max(1, threads))
    cv2.setNumThreads(torch.get_num_threads())
    return torch.get_num_threads()


def _quiet_offscreen_warnings() -> None:
    """The offscreen platform warns on every dock resize that it cannot propagate size hints."""
    from PySide6 import QtCore

    previous = None

    def handler(mode, context, message):
        if "propagateSizeHints" in message:
            return
        if previous is not None:
            previous(mode, context, message)
        else:
            sys.stderr.write(message + "\n")

    previous = QtCore.qInstallMessageHandler(handler)


def _dark_palette(app) -> None:
    from PySide6 import QtGui

    pal = QtGui.QPalette()
    c = QtGui.QColor
    role = QtGui.QPalette.ColorRole
    for r, col in (
        (role.Window, c(40, 40, 44)), (role.WindowText, c(225, 225, 225)), (role.Base, c(30, 30, 34)),
        (role.AlternateBase, c(46, 46, 50)), (role.Text, c(225, 225, 225)), (role.Button, c(52, 52, 58)),
        (role.ButtonText, c(225, 225, 225)), (role.Highlight, c(60, 130, 200)), (role.HighlightedText, c(255, 255, 255)),
        (role.ToolTipBase, c(50, 50, 55)), (role.ToolTipText, c(230, 230, 230)),
    ):
        pal.setColor(r, col)
    disabled = QtGui.QPalette.ColorGroup.Disabled  # parameters that do nothing now must look it
    for r in (role.WindowText, role.Text, role.ButtonText):
        pal.setColor(disabled, r, c(105, 105, 110))
    app.setPalette(pal)


def platform_problem() -> Optional[str]:
    """A plain sentence when no window can be shown here, instead of Qt's abort."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and platform not in ("xcb",):
        return None
    if sys.platform != "linux":
        return None
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return ("no display found (DISPLAY is not set). Run on a desktop session, or render headless with "
                "--render OUT.png, or set QT_QPA_PLATFORM=offscreen.")
    if os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY"):
        return None
    import ctypes.util

    missing = [pkg for lib, pkg in (("xcb-cursor", "libxcb-cursor0"), ("xcb-icccm", "libxcb-icccm4"),
                                    ("xcb-keysyms", "libxcb-keysyms1")) if ctypes.util.find_library(lib) is None]
    if missing:
        return ("Qt's X11 plugin needs system libraries that are missing: " + ", ".join(missing)
                + ". Install them with: sudo apt-get install " + " ".join(missing))
    return None


ROOT = Path(__file__).resolve().parent.parent
