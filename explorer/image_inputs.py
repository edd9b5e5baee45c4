"""Every way an image arrives (file dialog, path, recent files, paste, drop, sketch), turned into
one signal: ``loaded(image, source)``, or ``rejected(message)`` with the current image kept."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from backends.imageio import ImageLoadError, load_image, normalize_array
from explorer import image_sources


class ImageInputs(QtCore.QObject):
    loaded = QtCore.Signal(object, str)  # LoadedImage, source (a path, "clipboard", "sketch", ...)
    rejected = QtCore.Signal(str)

    def __init__(self, settings: QtCore.QSettings, max_side: int, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.max_side = max_side
        self.recent = image_sources.RecentFiles(settings)

    def open_dialog(self, parent: QtWidgets.QWidget) -> None:
        recent = self.recent.list()
        start = str(Path(recent[0]).parent) if recent else str(image_sources.SAMPLES_DIR)
        path, _ = QtWidgets.QFileDialog.getOpenFileName(parent, "Open image", start, image_sources.FILE_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: Union[str, Path]) -> bool:
        """Loads ``path``; on failure says why (the current image stays)."""
        try:
            image = load_image(path, self.max_side)
        except ImageLoadError as exc:
            self.rejected.emit(str(exc))
            return False
        self.recent.add(str(path))
        self.loaded.emit(image, str(path))
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


