"""Where images come from: files, bundled samples, the clipboard, drops, recent files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PySide6 import QtCore, QtGui

from backends.imageio import READABLE_SUFFIXES, ImageLoadError, LoadedImage, normalize_array

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLES_DIR = ASSETS / "images"
DEFAULT_SAMPLE = "chelsea"
RECENT_KEY = "recent_files"
RECENT_MAX = 10
FILE_FILTER = "Images (" + " ".join(f"*{s}" for s in READABLE_SUFFIXES) + ");;All files (*)"


def samples() -> dict[str, Path]:
    """Sample name to path, sorted by name."""
    return {p.stem: p for p in sorted(SAMPLES_DIR.glob("*.png"))}


def sample_path(name: str = DEFAULT_SAMPLE) -> Path:
    found = samples()
    if name in found:
        return found[name]
    if found:
        return next(iter(found.values()))
    raise ImageLoadError(f"no bundled samples in {SAMPLES_DIR}")


def qimage_to_loaded(image: QtGui.QImage, name: str, max_side: int) -> LoadedImage:
    if image.isNull() or image.width() == 0 or image.height() == 0:
        raise ImageLoadError(f"{name}: the image is empty")
    rgba = image.convertToFormat(QtGui.QImage.Format.Format_RGBA8888)
    w, h, stride = rgba.width(), rgba.height(), rgba.bytesPerLine()
    buf = np.frombuffer(rgba.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    arr = buf[:, : w * 4].reshape(h, w, 4).copy()
    if (arr[..., 3] == 255).all():
        arr = arr[..., :3]
    return normalize_array(arr, name, max_side)


def clipboard_image(mime: QtCore.QMimeData, max_side: int) -> tuple[Optional[LoadedImage], Optional[str]]:
    """An image from pasted or dropped data: image bytes, or a file URL. (image, path or None)."""
    if mime.hasUrls():
        for url in mime.urls():
            if url.isLocalFile():
                return None, url.toLocalFile()
    if mime.hasImage():
        qimg = QtGui.QImage(mime.imageData())
        return qimage_to_loaded(qimg, "pasted image", max_side), None
    text = mime.text().strip() if mime.hasText() else ""
    if text and len(text) < MAX_PATH_CHARS and "\n" not in text and _is_file(text):
        return None, text
    raise ImageLoadError("the clipboard holds no image or image file")


MAX_PATH_CHARS = 4096  # pasted text longer than a path can be is not one


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


class RecentFiles:
    def __init__(self, settings: QtCore.QSettings) -> None:
        self._settings = settings

    def list(self) -> list[str]:
        """The recent files that still exist; a damaged entry in the settings is skipped, never fatal."""
        value = self._settings.value(RECENT_KEY, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return []
        return [p for p in value if isinstance(p, str) and len(p) < MAX_PATH_CHARS and _is_file(p)]

    def add(self, path: str) -> None:
        path = str(Path(path).resolve())
        items = [p for p in self.list() if p != path]
        self._settings.setValue(RECENT_KEY, [path] + items[: RECENT_MAX - 1])

    def clear(self) -> None:
        self._settings.remove(RECENT_KEY)
