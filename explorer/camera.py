"""File > Camera: live frames as the working image, at the rate the operator keeps up with.

A thread of its own reads the camera (OpenCV's ``VideoCapture``; a blocking read never touches the
UI thread) and keeps only the newest frame, already converted to the app's image form. The UI
thread takes it when the frame before it is drawn with every layer, so a slow operator sees fewer
frames, never older ones. Freeze keeps the current frame as the image (the feed stops); Stop
closes the camera. No camera, or one that stops giving frames, is said in the banner.

The frame source is injectable (``source=``, a callable returning an object with ``read()`` and
``close()``): tests feed synthetic frames, and another capture library could be plugged in.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Protocol

import numpy as np
from PySide6 import QtCore, QtWidgets

from backends.imageio import ImageLoadError, LoadedImage, normalize_array

MAX_FAILED_READS = 50  # consecutive empty reads before the camera counts as gone
RETRY_S = 0.02


class CameraError(RuntimeError):
    """No camera to open, said as a sentence."""


class FrameSource(Protocol):
    def read(self) -> Optional[np.ndarray]:
        """The next frame, (H, W, 3) uint8 RGB, or None when none came."""

    def close(self) -> None: ...


class OpenCVSource:
    """Camera ``index`` through OpenCV; raises CameraError when it cannot be opened."""

    def __init__(self, index: int = 0) -> None:
        import cv2

        self._capture = cv2.VideoCapture(index)
        if not self._capture.isOpened():
            self._capture.release()
            raise CameraError(f"No camera found: OpenCV could not open camera {index}. "
                              "Connect one (or check its permissions) and choose File > Camera again.")

    def read(self) -> Optional[np.ndarray]:
        ok, bgr = self._capture.read()
        return np.ascontiguousarray(bgr[..., ::-1]) if ok and bgr is not None else None

    def close(self) -> None:
        self._capture.release()


class CameraFeed(QtCore.QObject):
    """Newest-frame-wins feed from ``source`` into the window's image."""

    frameReady = QtCore.Signal()  # from the capture thread: a newer frame waits
    failed = QtCore.Signal(str)  # from the capture thread
    shown = QtCore.Signal(int)  # frames put on screen so far

    def __init__(self, window, source: Callable[[], FrameSource] = OpenCVSource) -> None:
        super().__init__(window)
        self.window = window
        self._source_factory = source
        self._lock = threading.Lock()
        self._newest: Optional[LoadedImage] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.frozen = False
        self.read_count = 0  # frames read from the source
        self.shown_count = 0  # frames that became the image
        self._waiting_for_frame = False
        self.frameReady.connect(self._offer)
        self.failed.connect(self._on_failed)
        window.frameApplied.connect(self._on_drawn)
        window.frameFailed.connect(self._on_drawn)
        window.installEventFilter(self)  # the camera closes with the window

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if watched is self.window and event.type() == QtCore.QEvent.Type.Close:
            self.stop()
        return False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self.frozen = False
        self._thread = threading.Thread(target=self._loop, name="opscope-camera", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Closes the camera; the image shown stays."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def set_frozen(self, frozen: bool) -> None:
        """Freeze keeps the frame shown as the image; unfreezing resumes with the newest."""
        self.frozen = frozen
        if not frozen:
            self._offer()

    # -- capture thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            source = self._source_factory()
        except CameraError as exc:
            self.failed.emit(str(exc))
            return
        except Exception as exc:  # a driver's own error: said, never fatal
            self.failed.emit(f"The camera could not be opened: {type(exc).__name__}: {exc}")
            return
        misses = 0
        max_side = self.window.images.max_side
        try:
            while not self._stop.is_set():
                rgb = source.read()
                if rgb is None:
                    misses += 1
                    if misses >= MAX_FAILED_READS:
                        self.failed.emit("The camera stopped giving frames; the last one stays as the image.")
                        return
                    self._stop.wait(RETRY_S)
                    continue
                misses = 0
                try:
                    image = normalize_array(rgb, "camera", max_side)
                except ImageLoadError as exc:
                    self.failed.emit(f"A camera frame could not be used: {exc}")
                    return
                with self._lock:
                    fresh = self._newest is None
                    self._newest = image
                    self.read_count += 1
                if fresh:  # one signal per frame taken: a fast camera does not flood the UI thread
                    self.frameReady.emit()
        finally:
            source.close()

    # -- UI thread -----------------------------------------------------------------------------
    def _offer(self) -> None:
        """Takes the newest frame, unless frozen or the last one is still being computed."""
        if self.frozen or self._waiting_for_frame:
            return
        with self._lock:
            image, self._newest = self._newest, None
        if image is None:
            return
        self._waiting_for_frame = True
        self.window.set_image(image, "camera")
        self.shown_count += 1
        self.shown.emit(self.shown_count)
        if self.window.frame_settled():  # nothing to compute (no request made): take the next now
            self._on_drawn()

    def _on_drawn(self, *_args) -> None:
        if self._waiting_for_frame and self.window.frame_settled():
            self._waiting_for_frame = False
            QtCore.QTimer.singleShot(0, self._offer)

    def _on_failed(self, message: str) -> None:
        self.window.banner.show_message(message, "error")
        self.stop()
        self.shown.emit(self.shown_count)


class CameraPanel(QtWidgets.QDialog):
    """The feed's controls: Freeze, Stop, and how many frames came and were shown."""

    def __init__(self, window, feed: CameraFeed) -> None:
        super().__init__(window)
        self.feed = feed
        self.setWindowTitle("Camera")
        self.freeze_button = QtWidgets.QPushButton("Freeze", checkable=True)
        self.freeze_button.toggled.connect(feed.set_frozen)
        stop = QtWidgets.QPushButton("Stop")
        stop.clicked.connect(self.close)
        self.status = QtWidgets.QLabel("Opening the camera…")
        self.status.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.status)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.freeze_button)
        row.addWidget(stop)
        layout.addLayout(row)
        feed.shown.connect(self._on_shown)
        self._started = time.monotonic()

    def _on_shown(self, count: int) -> None:
        if not self.feed.running:
            self.status.setText("Camera closed." if count else "No camera.")
            self.freeze_button.setEnabled(False)
            return
        seconds = max(1e-3, time.monotonic() - self._started)
        self.status.setText(f"{count} frames shown ({count / seconds:.1f} a second) of {self.feed.read_count} read")

    def closeEvent(self, event) -> None:
        self.feed.stop()
        super().closeEvent(event)


def start(window, source: Callable[[], FrameSource] = OpenCVSource) -> CameraPanel:
    """File > Camera: opens the feed and its controls (one per window)."""
    panel = window.findChild(CameraPanel)
    if panel is None or not panel.feed.running:
        if panel is not None:
            panel.feed.deleteLater()
            panel.deleteLater()
        panel = CameraPanel(window, CameraFeed(window, source))
        panel.feed.start()
    from widgets.dialogs import show_in_front

    show_in_front(panel)
    return panel
