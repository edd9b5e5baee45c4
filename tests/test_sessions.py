"""Sessions: saved as JSON and opened back exactly (an edited image included), an older or
partly damaged file restoring what it can and saying what it could not, and the autosave that
a killed process leaves behind."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from backends.imageio import normalize_array
from explorer import session_actions
from explorer.session_file import read_session
from tests.conftest import wait_for_frame

ROOT = Path(__file__).resolve().parent.parent


def test_a_session_round_trips_with_a_sketched_image(app, qtbot, tmp_path):
    w, session = app.window, app.session
    sketch = (np.random.default_rng(1).random((30, 40, 3)) * 255).astype(np.uint8)
    w.set_image(normalize_array(sketch, "sketch"), "sketch")
    session.set_params({"dilation": 7, "kernel": "gabor"})
    session.set_query(12, 9)
    wait_for_frame(qtbot, w)
    assert session_actions.save_to(w, tmp_path / "s.opscope.json")
    pixels = session.pixels.copy()

    session.set_operator("vae")
    session.set_params({"z0": 1.5})
    w.set_image(normalize_array(np.zeros((8, 8, 3), np.float32)), "blank")
    assert session_actions.open_from(w, tmp_path / "s.opscope.json")
    assert session.operator == "dilated" and session.params()["dilation"] == 7 and session.params()["kernel"] == "gabor"
    assert session.query == (12, 9)
    np.testing.assert_array_equal(session.pixels, pixels)  # 8-bit pixels survive exactly
    assert session.params("vae")["z0"] == 0.0  # the session had no VAE edits
    assert "not restored" not in w.banner.text()


def test_a_partly_invalid_session_restores_what_it_can_and_lists_the_rest(app, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({
        "format": "opscope-session", "version": "0.0.1", "operator": "dilated",
        "params": {"dilated": {"dilation": 5, "kernel_size": "9"}, "gone_operator": {"x": 1}},
        "query": [3, 4], "image": {"path": str(tmp_path / "missing.png")}, "layout": "%%%",
    }))
    assert session_actions.open_from(app.window, path)
    text = app.window.banner.text()
    assert app.session.params()["dilation"] == 5 and app.session.params()["kernel_size"] == "3"
    assert "kernel_size: '9' is not one of" in text and "gone_operator" in text and "missing.png" in text


def test_a_file_that_is_not_a_session_changes_nothing(app, tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2, 3]")
    before = app.session.params()
    assert not session_actions.open_from(app.window, path)
    assert app.session.params() == before and "not an OpScope session" in app.window.banner.text()


def test_the_autosave_survives_a_killed_process(tmp_path):
    code = f"""
import os, signal, sys, time
sys.path.insert(0, {str(ROOT)!r})
os.environ['QT_QPA_PLATFORM'] = 'offscreen'
from PySide6 import QtWidgets
from backends.imageio import load_image
from explorer.app import build
from explorer.image_sources import sample_path
app = build(load_image(sample_path()), str(sample_path()), 'dilated', restore_layout=True, synchronous=True)
app.session.set_param('dilation', 9)
app.window.autosave.write_now()
print('saved', flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    env = {**os.environ, "OPSCOPE_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL and "saved" in proc.stdout
    data = read_session(tmp_path / "autosave.json")
    assert data["params"]["dilated"]["dilation"] == 9 and data["operator"] == "dilated"
