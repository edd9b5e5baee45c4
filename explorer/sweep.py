"""A parameter swept over a range, each frame drawn as the window (or one panel) shows it, written
as an MP4 video or an animated GIF (by the file's suffix): for a talk, a lesson, a bug report.

    python main.py IMG --op dilated --sweep dilation=1:16:16 --video out.mp4 [--panel Output]

The window's File > Record Sweep… (explorer/sweep_dialog.py) writes the same files through the
same ``FrameWriter`` without blocking the window.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, ParamError, ParamSpec
from backends.registry import spec_of

FPS = 8  # a sweep is read frame by frame: slow enough to follow
VIDEO_SUFFIXES = (".mp4", ".gif")


def parse_sweep(operator: str, text: str) -> tuple[str, list[Any]]:
    """``name=start:stop:count`` (evenly spaced, whole numbers for integer parameters) or
    ``name=a,b,c``, each value checked against the parameter's spec."""
    if "=" not in text:
        raise ParamError(f"--sweep {text!r}: expected NAME=START:STOP:COUNT or NAME=A,B,C")
    name, spec_text = (part.strip() for part in text.split("=", 1))
    specs = {p.name: p for p in spec_of(operator).params}
    if name not in specs:
        raise ParamError(f"--sweep: {operator} has no parameter {name!r}")
    spec = specs[name]
    raw = _range(spec, spec_text) if spec_text.count(":") == 2 else spec_text.split(",")
    values = [spec.coerce(v) for v in raw]
    values = list(dict.fromkeys(values))  # whole-number rounding can repeat a value
    if len(values) < 2:
        raise ParamError(f"--sweep {name}: needs at least two different values")
    return name, values


def _range(spec: ParamSpec, text: str) -> list[Any]:
    try:
        start, stop, count = (float(v) for v in text.split(":"))
    except ValueError:
        raise ParamError(f"--sweep {spec.name}={text!r}: expected START:STOP:COUNT numbers") from None
    if not isinstance(spec, (FloatParam, IntParam)) or isinstance(spec, ChoiceParam):
        raise ParamError(f"--sweep {spec.name}: a range needs a number parameter; list the values instead (a,b,c)")
    if not 2 <= count <= 10_000:
        raise ParamError(f"--sweep {spec.name}: COUNT must be within 2..10000, got {count:g}")
    points = np.linspace(start, stop, int(count))
    return [int(round(v)) for v in points] if isinstance(spec, IntParam) else [float(v) for v in points]


def sweepable(operator: str) -> list:
    """The operator's parameters a sweep can step through: numbers, choices and switches."""
    return [p for p in spec_of(operator).params if isinstance(p, (IntParam, FloatParam, ChoiceParam, BoolParam))]


def sweep_values(operator: str, name: str, start: float = 0.0, stop: float = 0.0, count: int = 2) -> list[Any]:
    """Evenly spaced values for a number parameter, every choice for a choice or a switch; checked
    by the command line's own parser."""
    spec = {p.name: p for p in spec_of(operator).params}[name]
    if isinstance(spec, ChoiceParam):
        return parse_sweep(operator, f"{name}={','.join(spec.choices)}")[1]
    if isinstance(spec, BoolParam):
        return [False, True]
    return parse_sweep(operator, f"{name}={start!r}:{stop!r}:{int(count)}")[1]


def check_video_path(out: str) -> None:
    path = Path(out)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ParamError(f"--video {out!r}: the file name must end in .mp4 or .gif")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ParamError(f"--video {out!r}: the folder is missing or not writable")


class FrameWriter:
    """RGB frames to an MP4 (OpenCV's writer) or an animated GIF (imageio), chosen by the suffix.
    Frames go to a hidden temporary file beside ``out`` that ``close`` renames into place and
    ``abort`` deletes: the named file is whole or absent, never half written. Every frame takes
    the first one's size (even sides, as the MP4 codec wants). Pillow merges a GIF frame identical
    to the one before it into a longer one, so a GIF of a sweep that changes nothing is shorter."""

    def __init__(self, out: str | Path, fps: float = FPS) -> None:
        self.path = Path(out)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in VIDEO_SUFFIXES:
            raise ParamError(f"{self.path.name}: the file name must end in .mp4 or .gif")
        self.fps = fps
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp{self.suffix}")
        self.size: Optional[tuple[int, int]] = None  # (width, height)
        self.frames = 0
        self._writer: Any = None

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        if self.size is None:
            self.size = (max(2, rgb.shape[1] // 2 * 2), max(2, rgb.shape[0] // 2 * 2))
            self._open()
        w, h = self.size
        frame = cv2.resize(rgb, self.size) if rgb.shape[1] < w or rgb.shape[0] < h else rgb
        frame = np.ascontiguousarray(frame[:h, :w])
        if self.suffix == ".mp4":
            self._writer.write(np.ascontiguousarray(frame[..., ::-1]))
        else:
            self._writer.append(frame)
        self.frames += 1

    def _open(self) -> None:
        if self.suffix == ".mp4":
            import cv2

            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self._writer.isOpened():
                self._writer = None
                raise OSError(f"could not open a video writer for {self.path}")
        else:
            self._writer = []  # a GIF is written whole on close (its palette encoder wants every frame)

    def _release(self, keep: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if self.suffix == ".mp4":
            writer.release()
        elif keep:
            import imageio.v3 as iio

            iio.imwrite(self.tmp, np.stack(writer), plugin="pillow", extension=".gif",
                        duration=1000.0 / self.fps, loop=0)

    def close(self) -> int:
        """Finishes the file and puts it in place; returns the number of frames."""
        if self.frames == 0:
            self.abort()
            raise OSError(f"{self.path.name}: no frames to write")
        try:
            self._release(keep=True)
            os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.frames

    def abort(self) -> None:
        """Stops and deletes what was written: no partial file is left."""
        try:
            self._release(keep=False)
        finally:
            self.tmp.unlink(missing_ok=True)


def grab_rgb(widget) -> np.ndarray:
    """(H, W, 3) uint8 RGB of what ``widget`` shows now."""
    from PySide6 import QtGui

    image = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    rgb = np.frombuffer(image.constBits(), np.uint8, image.bytesPerLine() * image.height())
    return rgb.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3].reshape(image.height(), -1, 3).copy()


def write_sweep(app, name: str, values: Sequence[Any], out: str, panel: Optional[str] = None) -> int:
    """Sets ``name`` to each value, waits for the complete frame, grabs the window (or ``panel``)
    and writes the frames to ``out`` (MP4 or GIF, written whole or not at all). Returns the frame
    count. Blocks its caller (the command line); the window records without blocking."""
    from PySide6 import QtWidgets

    from explorer.cli import wait_for_frame

    writer = FrameWriter(out)
    try:
        for value in values:
            set_shown_param(app.window, name, value)
            error = wait_for_frame(app)
            if error:
                raise ParamError(f"{name}={value}: {error}")
            for _ in range(3):
                QtWidgets.QApplication.processEvents()
            writer.add(grab_rgb(app.window if panel is None else panel_widget(app.window, panel)))
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def set_shown_param(window, name: str, value: Any) -> None:
    """Sets a parameter as a slider would, and shows it in the form (which, for a change that
    does not come from it, only follows whole-set changes)."""
    window.session.set_param(name, value)
    window.form.set_values(window.session.params())


def panel_widget(window, name: str):
    """The widget of the panel called ``name``; a ParamError lists the panels there are."""
    panels = window.docks.panels
    if name not in panels:
        raise ParamError(f"--panel {name!r}: this operator's panels are {', '.join(panels)}")
    return panels[name]
