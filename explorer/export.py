"""File > Export All and a panel's "Export data": each panel as a PNG at its data's resolution and
its numbers as .npy, with a JSON of the operator, parameters, device, image hash and version.

The window holds only the display form of a result (explorer/display.py: palette indices, uint8
pictures), so exports ask the worker for the result again, complete and as numbers
(``ComputeEngine.raw_result``; the operator's memo makes that cheap), and write the files on the
compute thread. A panel that is not a picture (a plot, points, bars) is written as the window
draws it, at screen resolution, on the UI thread. Panels at screen resolution alone: the panel's
context menu, "Export panel as PNG" (widgets/panel.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
from PySide6 import QtCore, QtWidgets

from backends.layers import Layer, MetricsLayer
from backends.models.weights import write_atomically
from backends.params import ParamError
from explorer.batch import picture_of, png_bytes
from explorer.edits import task_worker, tickets
from explorer.messages import Failure, RawResult, Request
from widgets.save_png import save_png

if TYPE_CHECKING:
    from explorer.engine import ComputeEngine
    from explorer.main_window import MainWindow

MANIFEST = "export.json"
FORMAT = "opscope-export"


def slug(name: str) -> str:
    """A panel's name as a file name: letters, digits, '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "panel"


def layer_arrays(layer: Layer) -> dict[str, np.ndarray]:
    """Every array a layer holds, by a dotted field path ("image", "series.Loss.y", "sets.0.points")."""
    found: dict[str, np.ndarray] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, np.ndarray):
            found[path] = value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{slug(str(k))}")
        elif isinstance(value, (tuple, list)) and any(isinstance(v, np.ndarray) or dataclasses.is_dataclass(v) for v in value):
            for i, v in enumerate(value):
                walk(v, f"{path}.{'xy'[i] if len(value) == 2 and path.count('.') == 1 else i}")

    walk(layer, "")
    return found


def export_task(request: Request, folder: Path, only: Optional[str], meta: dict[str, Any], ticket: int
                ) -> Callable[[ComputeEngine], object]:
    """What the worker runs: the complete numeric result, written to ``folder``."""
    def task(engine: ComputeEngine) -> object:
        raw = engine.raw_result(request, ticket)
        if isinstance(raw, Failure):
            return raw
        try:
            files = write_layers(folder, raw.result.layers, only)
            write_manifest(folder, {**meta, "device": engine.device_text}, files)
        except (OSError, ValueError) as exc:
            return Failure(ticket, request.operator, f"export failed: {exc}")
        return raw
    return task


def write_layers(folder: Path, layers, only: Optional[str] = None) -> dict[str, dict[str, Any]]:
    """Per layer: ``<name>.png`` at the data's resolution (pictures), ``<name>.<field>.npy`` per
    array, metrics in the manifest. Returns what was written, by layer name."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for layer in layers:
        if only is not None and layer.name != only:
            continue
        entry: dict[str, Any] = {"kind": layer.kind, "npy": {}, "png": None}
        base = slug(layer.name)
        for path, array in layer_arrays(layer).items():
            name = f"{base}.{path}.npy"  # the path's keys are slugs already
            write_atomically(folder / name, _npy_bytes(array))
            entry["npy"][path] = {"file": name, "shape": list(array.shape), "dtype": str(array.dtype)}
        try:
            write_atomically(folder / f"{base}.png", png_bytes(picture_of(layer)))
            entry["png"] = f"{base}.png"
        except (ParamError, AttributeError, ValueError, TypeError):
            pass  # not a picture: the window writes it as drawn (grab_panels)
        if isinstance(layer, MetricsLayer):
            entry["values"] = {k: str(v) for k, v in layer.values.items()}
        files[layer.name] = entry
    return files


def write_manifest(folder: Path, meta: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
    data = {"format": FORMAT, **meta, "panels": files}
    write_atomically(folder / MANIFEST, (json.dumps(data, indent=2, default=str) + "\n").encode())


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def image_hash(window: MainWindow) -> str:
    """sha256 of the source file when the image is one, else of the working pixels (float32)."""
    image, source = window.session.image, Path(window.session.state.image_source)
    if source.is_file() and image is not None and image.full is None:
        return hashlib.sha256(source.read_bytes()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(image.pixels).tobytes()).hexdigest() if image is not None else ""


class Exports(QtCore.QObject):
    """File > Export All and the panels' "Export data…"; ``exported(folder)`` once written."""

    exported = QtCore.Signal(str)
    failed = QtCore.Signal(str)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        self._pending: dict[int, tuple[Path, Optional[str]]] = {}
        task_worker(window).taskDone.connect(self._on_task_done)
        window.docks.docksChanged.connect(self._hook_panels)

    def export_all_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self.w, "Export every panel into a folder")
        if folder:
            self.export(Path(folder))

    def export(self, folder: Path, only: Optional[str] = None) -> bool:
        """Asks the worker for the complete result and writes it (one panel, or every panel)."""
        from explorer import __version__

        request = self.w.scheduler.make_request(new_stamp=False)
        if request is None:
            return False
        meta = {"version": __version__, "operator": request.operator, "params": dict(request.params),
                "query": list(request.query) if request.query else None, "image": {
                    "name": self.w.session.image.name, "sha256": image_hash(self.w),
                    "size": list(self.w.session.image.size), "original_size": list(self.w.session.image.original_size)}}
        ticket = next(tickets)
        self._pending[ticket] = (folder, only)
        self.w.statusBar().showMessage(f"Exporting to {folder}…")
        task_worker(self.w).run_task(export_task(request, folder, only, meta, ticket))
        return True

    def _on_task_done(self, outcome: object) -> None:
        ticket = outcome.ticket if isinstance(outcome, RawResult) else getattr(outcome, "stamp", None)
        if ticket not in self._pending or not isinstance(outcome, (RawResult, Failure)):
            return
        folder, only = self._pending.pop(ticket)
        if isinstance(outcome, Failure):
            self.w.banner.show_message(f"Not exported: {outcome.message}", "error")
            self.failed.emit(outcome.message)
            return
        self.grab_panels(folder, outcome, only)
        self.w.statusBar().showMessage(f"exported to {folder}", 5000)
        self.exported.emit(str(folder))

    def grab_panels(self, folder: Path, raw: RawResult, only: Optional[str]) -> None:
        """Panels without a data picture (plots, points), as drawn, at screen resolution."""
        manifest = json.loads((folder / MANIFEST).read_text())
        for name, entry in manifest["panels"].items():
            panel = self.w.docks.panels.get(name)
            if entry["png"] is None and panel is not None and (only is None or name == only):
                file = f"{slug(name)}.screen.png"
                if save_png(panel.grab(), folder / file):
                    entry["png"], entry["png_resolution"] = file, "screen"
            elif entry["png"] is not None:
                entry["png_resolution"] = "data"
        write_atomically(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())

    def _hook_panels(self) -> None:
        """Gives each panel's context menu "Export data…" (once per panel)."""
        for name, panel in self.w.docks.panels.items():
            if not panel.property("opscopeExportHooked"):
                panel.setProperty("opscopeExportHooked", True)
                panel.dataExportRequested.connect(lambda n=name: self.export_panel_dialog(n))

    def export_panel_dialog(self, name: str) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self.w, f"Export '{name}' (PNG at data resolution and .npy)")
        if folder:
            self.export(Path(folder), only=name)
