"""File > Open Model…: choose the user's own model, then load it with the Model lab operator's
load job on the worker (with progress); the UI thread only asks questions. A Python file is
code: the dialog says so and runs it only when the user agrees."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from PySide6 import QtWidgets

from backends.lab.loading import ModelSource, timm_available

if TYPE_CHECKING:
    from explorer.main_window import MainWindow

OPERATOR = "lab_user_model"
MODEL_FILTER = "Models (*.pt *.pth *.ts *.jit *.pt2 *.py);;TorchScript (*.pt *.pth *.ts *.jit);;torch.export (*.pt2);;Python (*.py)"
WEIGHTS_FILTER = "Weights (*.safetensors *.pt *.pth *.bin);;All files (*)"


def load(w: MainWindow, source: ModelSource) -> bool:
    """Hands ``source`` to the lab operator (switching to it) and starts its load job."""
    if w.session.operator != OPERATOR:
        w.session.set_operator(OPERATOR)
    w.banner.show_message(f"Loading {source.label}…", "notice")
    w.start_job("load", {"source": asdict(source)})  # plain data: it travels to a remote worker too
    return True


def confirm_code(w: MainWindow, path: str) -> bool:
    answer = QtWidgets.QMessageBox.question(
        w, "Run Python file?",
        f"{path}\n\nOpening a Python model file RUNS IT AS CODE (its build_model() builds the network). "
        "Only open files you trust. Run it?")
    return answer == QtWidgets.QMessageBox.StandardButton.Yes


def open_dialog(w: MainWindow) -> None:
    """File > Open Model…: a model file; for a Python file, a confirmation and its weights."""
    path, _ = QtWidgets.QFileDialog.getOpenFileName(w, "Open model", "", MODEL_FILTER)
    if not path:
        return
    weights = ""
    if path.lower().endswith(".py"):
        if not confirm_code(w, path):
            return
        weights, _ = QtWidgets.QFileDialog.getOpenFileName(
            w, "Weights for the model (Cancel: keep build_model()'s initial weights)", "", WEIGHTS_FILTER)
    load(w, ModelSource.for_file(path, weights))


def open_timm_dialog(w: MainWindow) -> None:
    """File > Open timm Model…: a name; weights only from the local cache, nothing downloaded."""
    if not timm_available():
        w.banner.show_message("timm is not installed: open a TorchScript, torch.export or Python model file instead.",
                              "error")
        return
    name, ok = QtWidgets.QInputDialog.getText(
        w, "Open timm model", "timm model name (pretrained weights only if already in your local cache):")
    if ok and name.strip():
        load(w, ModelSource("timm", name=name.strip()))
