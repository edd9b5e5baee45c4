"""Every way an image arrives (file dialog, path, recent files, paste, drop, sketch), turned into
one signal: ``loaded(image, source)``, or ``rejected(message)`` with the current image kept.

A large file decodes on a thread of its own, with ``loading(name)`` said first, so the window never
freezes on it; a small one (the common case) loads at once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from backends.image_header import declared_size
from backends.imageio import ImageLoadError, load_image, normalize_array
from explorer import image_sources

BACKGROUND_BYTES = 8 * 2**20  # files larger than this decode off the UI thread
BACKGROUND_PIXELS = 8_000_000


class ImageInputs(QtCore.QObject):
    loaded = QtCore.Signal(object, str)  # LoadedImage, source (a path, "clipboard", "sketch", ...)
    rejected = QtCore.Signal(str)
    loading = QtCore.Signal(str)  # the file's name, while a large file decodes in the background
    _decoded = QtCore.Signal(object, str, int)  # (LoadedImage or ImageLoadError, path, ticket): thread to UI

    def __init__(self, settings: QtCore.QSettings, max_side: int, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.max_side = max_side
        self.recent = image_sources.RecentFiles(settings)
        self._ticket = 0  # the newest load wins: an older one finishing later is dropped
        self._threads: list[threading.Thread] = []
        self._decoded.connect(self._on_decoded)

    def open_dialog(self, parent: QtWidgets.QWidget) -> None:
        recent = self.recent.list()
        start = str(Path(recent[0]).parent) if recent else str(image_sources.SAMPLES_DIR)
        path, _ = QtWidgets.QFileDialog.getOpenFileName(parent, "Open image", start, image_sources.FILE_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: Union[str, Path]) -> bool:
        """Loads ``path``; on failure says why (the current image stays). Returns False when it
        failed at once; a large file answers later, by ``loaded`` or ``rejected``."""
        self._ticket += 1
        if self._is_large(Path(path)):
            self.loading.emit(Path(path).name)
            thread = threading.Thread(target=self._decode, args=(Path(path), self._ticket), daemon=True,
                                      name="opscope-image-load")
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()
            return True
        try:
            image = load_image(path, self.max_side)
        except ImageLoadError as exc:
            self.rejected.emit(str(exc))
            return False
        self._accept(image, str(path))
        return True

    def wait(self, timeout_s: float = 30.0) -> None:
        """Until background loads end (tests, shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout_s)

    def _is_large(self, path: Path) -> bool:
        try:
            if path.stat().st_size > BACKGROUND_BYTES:
                return True
            with open(path, "rb") as f:
                size = declared_size(f.read(65536))
        except OSError:
            return False  # load_image says why
        return size is not None and size[0] * size[1] > BACKGROUND_PIXELS

    def _decode(self, path: Path, ticket: int) -> None:
        """On the loading thread: decode, and hand the result (or the refusal) to the UI thread."""
        try:
            outcome = load_image(path, self.max_side)
        except ImageLoadError as exc:
            outcome = exc
        except Exception as exc:  # MemoryError and the like: said, never fatal
            outcome = ImageLoadError(f"{path.name}: could not be decoded ({type(exc).__name__})")
        self._decoded.emit(outcome, str(path), ticket)

    def _on_decoded(self, outcome, path: str, ticket: int) -> None:
        if ticket != self._ticket:
            return  # another image was asked for meanwhile
        if isinstance(outcome, ImageLoadError):
            self.rejected.emit(str(outcome))
        else:
            self._accept(outcome, path)

    def _accept(self, image, path: str) -> None:
        self.recent.add(path)
        self.loaded.emit(image, path)
        return True

    def from_mime(self, mime: Optional[QtCore.QMimeData], source: str) -> None:
        """Pasted or dropped data: image bytes, or a file."""
        if mime is None:
            self.rejected.emit(f"the {source} is empty")
            return
        try:
            image, path = image_sources.clipboard_image(mime, self.max_side)
        except ImageLoadError as exc:
            self.rejected.emit(str(exc))
            return
        if path is not None:
            self.open_path(path)
        else:
            self.loaded.emit(image, source)

    def paste(self) -> None:
        self.from_mime(QtGui.QGuiApplication.clipboard().mimeData(), "clipboard")

    def from_sketch(self, pixels: np.ndarray) -> None:
        self.loaded.emit(normalize_array(pixels, "sketch", self.max_side), "sketch")

    def fill_recent_menu(self, menu: QtWidgets.QMenu) -> None:
        menu.clear()
        paths = self.recent.list()
        for path in paths:
            menu.addAction(path, lambda p=path: self.open_path(p))
        if not paths:
            menu.addAction("(none)").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear", self.recent.clear)


