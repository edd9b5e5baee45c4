"""Offscreen Qt, a private settings folder, and a ready window on a bundled sample."""

from __future__ import annotations

import os
import tempfile
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["OPSCOPE_CONFIG_DIR"] = tempfile.mkdtemp(prefix="opscope-test-config-")
os.environ.setdefault("OPSCOPE_DATA_DIR", tempfile.mkdtemp(prefix="opscope-test-data-"))

import pytest  # noqa: E402

from backends.allocator import tune_malloc  # noqa: E402

tune_malloc()

FRAME_TIMEOUT_MS = 30_000
THREAD_GRACE_S = 5.0


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random state: an input a test draws with torch.rand or
    numpy's global generator is the same on every run, so a failure reproduces."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def no_modal_dialog(monkeypatch):
    """A modal dialog would wait for a person forever: in a test it fails at once, naming itself.
    A test that expects one replaces it with its own answer (monkeypatch), as a person would answer."""
    from PySide6 import QtWidgets

    def refuse(name):
        def opened(*args, **kwargs):
            raise AssertionError(f"a modal dialog opened in a test: {name}")
        return opened

    for cls, names in ((QtWidgets.QFileDialog, ("getSaveFileName", "getOpenFileName", "getOpenFileNames",
                                                 "getExistingDirectory")),
                       (QtWidgets.QMessageBox, ("question", "warning", "critical", "information")),
                       (QtWidgets.QInputDialog, ("getText", "getInt", "getDouble", "getItem"))):
        for name in names:
            monkeypatch.setattr(cls, name, refuse(f"{cls.__name__}.{name}"))


@pytest.fixture(autouse=True)
def no_thread_left_running():
    """Fails a test that leaves a thread of its own running (a worker it did not shut down)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leaked:
        thread.join(THREAD_GRACE_S)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture
def app(qtbot):
    """The whole app on the 'chelsea' sample with the dilated operator, first frame drawn."""
    from backends.imageio import load_image
    from explorer.app import build
    from explorer.image_sources import sample_path

    path = sample_path("chelsea")
    built = build(load_image(path), str(path), "dilated", restore_layout=False)
    qtbot.addWidget(built.window)
    built.window.show()
    wait_for_frame(qtbot, built.window)
    yield built
    built.close()


def wait_for_frame(qtbot, window, timeout: int = FRAME_TIMEOUT_MS) -> None:
    """Until the newest submitted request has been drawn, settling layers included."""
    qtbot.waitUntil(window.frame_settled, timeout=timeout)


@pytest.fixture(scope="module")
def one_thread():
    """Small models on a shared CPU: one thread avoids oversubscription stalls (restored after).
    Modules of model tests take it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
