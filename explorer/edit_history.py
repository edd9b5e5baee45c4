"""The edit history: every state of the working image since it was opened (the original, then each
applied edit) with a thumbnail, the operator and its parameters, and a panel that lists them;
clicking an entry restores that state (as a step of its own, so it can be undone too).

Entries are never removed while the image stays open: an undo or a restore only moves the
current mark, so every undo step keeps pointing at an entry that exists. A session file keeps
the list (thumbnails, operators, parameters) and the current image; the pixels of the other
states are not written, so those entries come back listed but not restorable."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Optional

import cv2
import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from backends.imageio import LoadedImage

THUMB = 72  # px, the long side of a thumbnail


@dataclass
class EditEntry:
    title: str  # "original: <name>" or the operator's title
    operator: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    how: str = ""  # how the full-resolution picture was made (backends/full_resolution.py)
    size: tuple[int, int] = (0, 0)  # (width, height) at full resolution
    thumbnail: Optional[np.ndarray] = None  # (h, w, 3) uint8
    image: Optional[LoadedImage] = None  # None: listed from a session, pixels not kept
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {"title": self.title, "operator": self.operator, "params": dict(self.params), "how": self.how,
                "size": list(self.size)}
        if self.thumbnail is not None:
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(self.thumbnail[..., ::-1]))
            if ok:
                data["thumbnail_png"] = base64.b64encode(buf.tobytes()).decode()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditEntry:
        thumb = None
        if isinstance(data.get("thumbnail_png"), str):
            raw = cv2.imdecode(np.frombuffer(base64.b64decode(data["thumbnail_png"]), np.uint8), cv2.IMREAD_COLOR)
            thumb = None if raw is None else np.ascontiguousarray(raw[..., ::-1])
        size = data.get("size") or (0, 0)
        params = data.get("params")
        return cls(str(data.get("title", "?")), str(data.get("operator", "")), dict(params) if isinstance(params, dict) else {},
                   str(data.get("how", "")), (int(size[0]), int(size[1])), thumb)

    def describe(self) -> str:
        """The entry's second line: its parameters (edited ones first) and size."""
        values = ", ".join(f"{k}={v}" for k, v in self.params.items())
        size = f"{self.size[0]}x{self.size[1]}"
        return f"{size}  {values}" if values else size


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A small (h, w, 3) uint8 picture of float RGB pixels: every n-th pixel, which is cheap enough
    for the UI thread and good enough at 72 px."""
    h, w = pixels.shape[:2]
    step = max(1, max(h, w) // THUMB)
    small = pixels[::step, ::step]
    return np.ascontiguousarray(np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8))


class EditHistory(QtCore.QObject):
    """The list of states and which one is shown."""

    changed = QtCore.Signal()

    def __init__(self, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.entries: list[EditEntry] = []
        self.current = -1

    def start(self, image: LoadedImage, source: str) -> None:
        """A newly opened image: the history starts over from it."""
        self.entries = [EditEntry(f"original: {image.name}", size=image.original_size, thumbnail=thumbnail(image.pixels),
                                  image=image, source=source)]
        self.current = 0
        self.changed.emit()

    def add(self, entry: EditEntry) -> int:
        self.entries.append(entry)
        self.changed.emit()
        return len(self.entries) - 1

    def set_current(self, index: int) -> None:
        self.current = index
        self.changed.emit()

    def to_list(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "current": self.current}

    def load(self, data: Any, image: Optional[LoadedImage], source: str) -> bool:
        """Entries from a session file; the current one takes ``image`` (the session's image)."""
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            return False
        entries = [EditEntry.from_dict(e) for e in data["entries"] if isinstance(e, dict)]
        current = data.get("current")
        if not entries or not isinstance(current, int) or not 0 <= current < len(entries):
            return False
        entries[current].image, entries[current].source = image, source
        self.entries, self.current = entries, current
        self.changed.emit()
        return True


class EditHistoryPanel(QtWidgets.QListWidget):
    """One row per state: thumbnail, operator, parameters; the current state is selected.
    ``restoreRequested(index)`` when a row is clicked."""

    restoreRequested = QtCore.Signal(int)

    def __init__(self, history: EditHistory, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.history = history
        self.setIconSize(QtCore.QSize(THUMB, THUMB))
        self.setWordWrap(True)
        self.setObjectName("EditHistoryPanel")
        history.changed.connect(self.refresh)
        self.itemClicked.connect(lambda item: self.restoreRequested.emit(self.row(item)))
        self.refresh()

    def refresh(self) -> None:
        self.blockSignals(True)
        self.clear()
        for i, entry in enumerate(self.history.entries):
            item = QtWidgets.QListWidgetItem(f"{i}. {entry.title}\n{entry.describe()}")
            tip = entry.how or "the image as opened"
            if entry.image is None:
                tip += " (from a session: only the current state's pixels were saved)"
                item.setForeground(QtGui.QColor("#888"))
            item.setToolTip(tip)
            if entry.thumbnail is not None:
                t = entry.thumbnail
                qimage = QtGui.QImage(t.data, t.shape[1], t.shape[0], 3 * t.shape[1], QtGui.QImage.Format.Format_RGB888)
                item.setIcon(QtGui.QIcon(QtGui.QPixmap.fromImage(qimage.copy())))
            self.addItem(item)
        if 0 <= self.history.current < self.count():
            self.setCurrentRow(self.history.current)
        self.blockSignals(False)
