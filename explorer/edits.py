"""Image > Apply and File > Save Image: the operator's result becomes the working image, at the
original's full resolution, as a step of the undo history and an entry of the edit history.

The live view holds the image downscaled to ``max_side``; Apply computes the operator again on
the original's pixels (kept with an applied edit, or read again from the file), on the compute
worker (``ComputeWorker.run_task``), where reading, computing and downscaling for the view all
happen; how each operator makes its picture at full resolution is in backends/full_resolution.py.
Saving encodes and writes on a thread of its own, atomically, never over a file without asking."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import cv2
import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from backends.imageio import READABLE_SUFFIXES, ImageLoadError, LoadedImage, finish, load_image
from backends.models.weights import write_atomically
from backends.registry import operator_class, spec_of, validated_params
from explorer.edit_history import EditEntry, EditHistory, EditHistoryPanel, thumbnail
from explorer.messages import Failure, Request
from explorer.session_file import embedded_png

if TYPE_CHECKING:
    from explorer.engine import ComputeEngine
    from explorer.main_window import MainWindow

tickets = itertools.count(1)  # one sequence for every task sent to the worker (edits, exports)
UNLIMITED = 1 << 30  # max_side when the original is read again: no downscale
WRITE_PARAMS = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
                ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95]}


@dataclass(frozen=True)
class Applied:
    ticket: int
    image: LoadedImage
    how: str
    thumbnail: np.ndarray


def task_worker(window: MainWindow):
    """The worker that runs edit and export tasks: the window's, or the local one standing by
    behind a remote worker (explorer/remote.py): the original's pixels are on this machine, and
    what an operator fitted remotely is not (a fitted warp is applied as the local operator has it)."""
    worker = window.scheduler.worker
    return getattr(worker, "local", worker)


def edit_reason(operator: str) -> str:
    """Why ``operator``'s result cannot be applied, or "" when it can."""
    cls = operator_class(operator)
    return "" if cls.edit else f"{spec_of(operator).title}: {cls.not_an_edit}"


def original_pixels(image: LoadedImage, source: str) -> tuple[np.ndarray, str]:
    """The working image at its original size, and a note when that is not possible. Slow (a file
    is decoded again): call it off the UI thread."""
    if image.full is not None:
        return image.full, ""
    if image.size == image.original_size:
        return image.pixels, ""
    path = Path(source)
    if not path.is_file():
        return image.pixels, f"; the original's {image.original_size[0]}x{image.original_size[1]} pixels were not kept"
    big = load_image(path, UNLIMITED)
    if big.size != image.original_size:
        raise ImageLoadError(f"{path.name} has changed on disk since it was opened")
    return big.pixels, ""


def apply_task(request: Request, image: LoadedImage, source: str, max_side: int, ticket: int
               ) -> Callable[[ComputeEngine], object]:
    """What the worker runs for Image > Apply: read the original, compute, downscale for the view."""
    def task(engine: ComputeEngine) -> object:
        try:
            full, note = original_pixels(image, source)
        except (ImageLoadError, OSError) as exc:
            return Failure(ticket, request.operator, str(exc))
        out = engine.full_resolution(request, full, ticket)
        if isinstance(out, Failure):
            return out
        view = finish(out.pixels, image.name, max_side)
        downscaled = view.size != view.original_size
        view = replace(view, notice=None, full=out.pixels if downscaled else None)
        embedded_png(out.pixels if downscaled else view.pixels)  # what a session embeds, encoded here, off the UI thread
        return Applied(ticket, view, out.how + note, thumbnail(out.pixels))
    return task


def encode_image(pixels: np.ndarray, suffix: str) -> bytes:
    """Upright float RGB pixels as a file of the format ``suffix`` names (8 bits a channel)."""
    rgb8 = np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(suffix.lower(), np.ascontiguousarray(rgb8[..., ::-1]), WRITE_PARAMS.get(suffix.lower(), []))
    if not ok:
        raise OSError(f"OpenCV could not encode a {suffix} image")
    return buf.tobytes()


class ImageCommand(QtGui.QUndoCommand):
    """One change of the working image (an apply, a restore): undo shows the state before."""

    def __init__(self, edits: EditActions, before: EditEntry, after: EditEntry, text: str) -> None:
        super().__init__(text)
        self.edits, self.before, self.after = edits, before, after

    def redo(self) -> None:
        self.edits.show_entry(self.after)

    def undo(self) -> None:
        self.edits.show_entry(self.before)


class EditActions(QtCore.QObject):
    """Image > Apply, the edit history panel, File > Save Image and Save Image As."""

    applied = QtCore.Signal(object)  # EditEntry, once it is the working image
    saved = QtCore.Signal(str)  # the path written
    saveFailed = QtCore.Signal(str)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        self.history = EditHistory(self)
        window.session.edit_history = self.history
        self.panel = EditHistoryPanel(self.history)
        self.panel.restoreRequested.connect(self.restore)
        self.dock = window._side_dock("Edit history", self.panel)
        window.addDockWidget(QtCore.Qt.DockWidgetArea.LeftDockWidgetArea, self.dock)
        window.tabifyDockWidget(window.params_dock, self.dock)
        window.params_dock.raise_()
        self.apply_action: Optional[QtGui.QAction] = None  # made by the menus
        self._pending = 0
        self._showing = False
        self._saved_path: Optional[Path] = None
        self._writer: Optional[threading.Thread] = None
        self._wrote = _Wrote(self)
        window.session.imageChanged.connect(self._on_image_changed)
        window.session.operatorChanged.connect(lambda _name: self.update_action())
        task_worker(window).taskDone.connect(self._on_task_done)

    # -- apply ---------------------------------------------------------------------------------
    def update_action(self) -> None:
        """Enabled for operators whose result is an image; otherwise disabled, saying why."""
        if self.apply_action is None:
            return
        reason = edit_reason(self.w.session.operator)
        self.apply_action.setEnabled(not reason)
        tip = reason or "The result becomes the working image, at the original's full resolution"
        self.apply_action.setToolTip(tip)
        self.apply_action.setStatusTip(tip)

    @property
    def busy(self) -> bool:
        return self._pending != 0

    def apply(self) -> bool:
        """Sends the current operator, parameters and query to the worker at full resolution."""
        w = self.w
        reason = edit_reason(w.session.operator)
        if reason:
            w.banner.show_message(f"Not applied: {reason}.", "notice")
            return False
        if self._pending:
            w.statusBar().showMessage("An edit is still being applied", 4000)
            return False
        request = w.scheduler.make_request(new_stamp=False)
        if request is None or w.session.image is None:
            return False
        self._pending = next(tickets)
        self._request = request
        ow, oh = w.session.image.original_size
        w.statusBar().showMessage(f"Applying {spec_of(request.operator).title} at {ow}x{oh}…")
        task_worker(w).run_task(apply_task(request, w.session.image, w.session.state.image_source,
                                               w.images.max_side, self._pending))
        return True

    def _on_task_done(self, outcome: object) -> None:
        ticket = getattr(outcome, "ticket", None) if isinstance(outcome, Applied) else getattr(outcome, "stamp", None)
        if not self._pending or ticket != self._pending or not isinstance(outcome, (Applied, Failure)):
            return
        self._pending = 0
        if isinstance(outcome, Failure):
            self.w.banner.show_message(f"Not applied: {outcome.message}. The image is unchanged.", "error")
            return
        request = self._request
        default = validated_params(request.operator, {})
        changed = {k: v for k, v in request.params if default.get(k) != v}  # what the user set, not every default
        entry = EditEntry(spec_of(request.operator).title, request.operator, changed, outcome.how,
                          outcome.image.original_size, outcome.thumbnail, outcome.image, "edit")
        self.history.add(entry)
        before = self.history.entries[self.history.current]
        self.w.history.stack.push(ImageCommand(self, before, entry, f"apply: {entry.title}"))
        self.dock.setVisible(True)
        self.w.statusBar().showMessage(f"Applied {entry.title}: {outcome.how}", 6000)
        self.applied.emit(entry)

    def restore(self, index: int) -> None:
        """The edit history's entry ``index`` becomes the working image, as an undoable step."""
        entries = self.history.entries
        if not 0 <= index < len(entries) or index == self.history.current:
            return
        if entries[index].image is None:
            self.w.banner.show_message("That state came from a session file, which keeps only the current "
                                       "image's pixels: it cannot be restored.", "notice")
            self.panel.refresh()
            return
        self.w.history.stack.push(ImageCommand(self, entries[self.history.current], entries[index],
                                               f"restore: {index}. {entries[index].title}"))

    def show_entry(self, entry: EditEntry) -> None:
        """Makes ``entry`` the working image (its own key: the frame is computed for it)."""
        if entry.image is None:
            return
        if entry not in self.history.entries:  # undone past the opening of another image
            self.history.entries.append(entry)
        self._showing = True
        try:
            self.w.session.set_image(entry.image, entry.source)
        finally:
            self._showing = False
        self.history.set_current(self.history.entries.index(entry))

    def _on_image_changed(self) -> None:
        if not self._showing and self.w.session.image is not None:
            self.history.start(self.w.session.image, self.w.session.state.image_source)
            self._saved_path = None

    # -- save ----------------------------------------------------------------------------------
    def default_path(self) -> Optional[Path]:
        """Where Save Image writes: the last path saved to, else the opened file (asked first)."""
        if self._saved_path is not None:
            return self._saved_path
        entries = self.history.entries  # after an apply the source reads "edit": the file is where it began
        source = Path(entries[0].source if entries else self.w.session.state.image_source)
        return source if source.suffix.lower() in READABLE_SUFFIXES and source.parent.is_dir() else None

    def save(self) -> None:
        """File > Save Image: over the original (or the last saved file) after a confirmation."""
        path = self.default_path()
        if path is None:
            self.save_as()
            return
        if path.exists():
            answer = QtWidgets.QMessageBox.question(self.w, "Save image", f"{path.name} exists. Replace it?")
            if answer != QtWidgets.QMessageBox.StandardButton.Yes:
                return
        self.write(path)

    def save_as(self) -> None:
        """File > Save Image As: a new name beside the original, the original's format."""
        image = self.w.session.image
        if image is None:
            return
        source = Path(self.w.session.state.image_source)
        suffix = source.suffix if source.suffix.lower() in READABLE_SUFFIXES else ".png"
        stem = Path(image.name).stem if source.suffix else "image"
        start = (source.parent if source.parent.is_dir() and source.suffix else Path.home()) / f"{stem}-edited{suffix}"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self.w, "Save image as", str(start),
                                                        "Images (" + " ".join(f"*{s}" for s in READABLE_SUFFIXES) + ")")
        if path:  # the dialog itself asks before replacing a file
            target = Path(path)
            self.write(target if target.suffix.lower() in READABLE_SUFFIXES else target.with_name(target.name + suffix))

    def write(self, path: Path) -> None:
        """Reads the original if needed, encodes and writes atomically, on a thread; ``saved``."""
        image, source = self.w.session.image, self.w.session.state.image_source
        if image is None or (self._writer is not None and self._writer.is_alive()):
            return

        def work() -> None:
            try:
                pixels, _note = original_pixels(image, source)
                write_atomically(path, encode_image(pixels, path.suffix))
                self._wrote.done.emit(str(path), "")
            except (ImageLoadError, OSError) as exc:
                self._wrote.done.emit(str(path), str(exc) or type(exc).__name__)

        self._writer = threading.Thread(target=work, name="opscope-save-image", daemon=True)
        self._writer.start()

    def wait(self, timeout_s: float = 30.0) -> None:
        if self._writer is not None:
            self._writer.join(timeout_s)

    def _on_written(self, path: str, error: str) -> None:
        if error:
            self.w.banner.show_message(f"Image not saved: {error}", "error")
            self.saveFailed.emit(error)
            return
        self._saved_path = Path(path)
        self.w.statusBar().showMessage(f"image saved to {path}", 5000)
        self.saved.emit(path)


class _Wrote(QtCore.QObject):
    done = QtCore.Signal(str, str)  # path, error ("" when written): from the writing thread

    def __init__(self, edits: EditActions) -> None:
        super().__init__(edits)
        self.done.connect(edits._on_written)
