"""The command line: headless render, --list, and one-line errors with a non-zero exit."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=120):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_render_writes_a_png_that_is_not_blank(tmp_path):
    out = tmp_path / "out.png"
    proc = run_cli(str(ROOT / "assets/images/coins.png"), "--op", "dilated", "--set", "dilation=4",
                   "--query", "120,90", "--render", str(out), "--size", "1200x800")
    assert proc.returncode == 0, proc.stderr
    import cv2

    img = cv2.imread(str(out))
    assert img.shape == (800, 1200, 3)
    assert img.std() > 20  # panels with content, not a flat window
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000


def test_list_prints_operators_and_parameters():
    proc = run_cli("--list")
    assert proc.returncode == 0
    assert "dilated" in proc.stdout and "dilation=2 [1..16]" in proc.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--op", "nonsense"], "unknown operator 'nonsense'"),
        (["--set", "dilation=99"], "dilation: 99 is outside [1, 16]"),
        (["--set", "colour=red"], "unknown parameter 'colour'"),
        (["--set", "dilation"], "expected NAME=VALUE"),
        (["/definitely/not/here.png"], "no such file"),
        (["--query", "5000,10"], "outside the 451x300 image"),
        (["--query", "inf,1"], "expected two finite numbers"),
        (["--size", "infx100"], "expected two finite numbers"),
        (["--size", "10x10"], "each side must be within"),
        (["--max-side", "4"], "--max-side 4: at least"),
        (["--device", "meta"], "unknown device 'meta'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, args, fragment):
    proc = run_cli(*args, "--render", str(tmp_path / "x.png"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opscope: error:") and fragment in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_a_non_image_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "fake.jpg"
    bad.write_text("hello")
    proc = run_cli(str(bad), "--render", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "fake.jpg: not an image" in proc.stderr


def test_without_a_display_the_window_command_explains_instead_of_aborting():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py")], capture_output=True, text=True, timeout=60,
                          env=env, cwd=ROOT)
    assert proc.returncode == 1
    assert "cannot open a window" in proc.stderr and "--render" in proc.stderr


@pytest.mark.parametrize("target, fragment", [("no/such/folder/x.png", "no folder"), ("out.jpg", "must end in .png")])
def test_an_unwritable_render_path_fails_before_computing(tmp_path, target, fragment):
    proc = run_cli("--render", str(tmp_path / target), timeout=60)
    assert proc.returncode == 2 and fragment in proc.stderr
    assert "wrote" not in proc.stdout


def test_a_sweep_becomes_a_video_with_one_frame_per_value(tmp_path):
    import cv2

    out = tmp_path / "sweep.mp4"
    proc = run_cli("--op", "dilated", "--sweep", "dilation=1:7:4", "--video", str(out), "--panel", "Dilated kernel",
                   "--size", "1366x768")
    assert proc.returncode == 0, proc.stderr
    video = cv2.VideoCapture(str(out))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    frames = [video.read()[1] for _ in range(4)]
    assert all(f is not None for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1  # the kernel grew: frames differ
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.mp4"]  # no temporary file left


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--sweep", "dilation=1:7:4"], "--sweep and --video go together"),
        (["--sweep", "colour=1:2:3", "--video", "v.mp4"], "no parameter 'colour'"),
        (["--sweep", "dilation=1:99:3", "--video", "v.mp4"], "dilation: 50 is outside"),
        (["--sweep", "kernel=1:2:3", "--video", "v.mp4"], "a range needs a number parameter"),
        (["--sweep", "dilation=3:3:5", "--video", "v.mp4"], "at least two different values"),
        (["--sweep", "dilation=1:4:4", "--video", "v.avi"], "must end in .mp4 or .gif"),
    ],
)
def test_a_bad_sweep_gives_one_line(tmp_path, args, fragment):
    args = [str(tmp_path / a) if a.endswith((".mp4", ".avi")) else a for a in args]
    proc = run_cli(*args, timeout=60)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr


def test_the_desktop_entry_is_installed_for_this_environment_and_removed_again(tmp_path):
    env_home = {"XDG_DATA_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--install-desktop"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env_home}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    entry = tmp_path / "applications" / "opscope.desktop"
    text = entry.read_text()
    assert f'Exec="{sys.executable}" "{ROOT / "main.py"}" %f' in text and "MimeType=image/png;" in text
    assert (tmp_path / "icons/hicolor/256x256/apps/opscope.png").stat().st_size > 1000
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--uninstall-desktop"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env_home}, cwd=ROOT)
    assert proc.returncode == 0 and not entry.exists()


def test_only_a_window_launch_gets_the_early_splash():
    from explorer.splash import opens_a_window

    assert opens_a_window([]) and opens_a_window(["img.png", "--op", "vae"])
    for flags in (["--render", "x.png"], ["--list"], ["--batch", "d", "--out", "o"], ["--sweep=a=1:2:3"], ["-h"]):
        assert not opens_a_window(flags), flags


def test_torch_and_opencv_share_the_compute_threads_the_ui_thread_leaves(monkeypatch):
    import cv2
    import torch

    from explorer.app import configure_threads

    before = (torch.get_num_threads(), cv2.getNumThreads())
    try:
        monkeypatch.setenv("OPSCOPE_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        monkeypatch.setenv("OPSCOPE_THREADS", "2")
        assert configure_threads() == 2 and cv2.getNumThreads() == 2
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
