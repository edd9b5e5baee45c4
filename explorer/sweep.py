"""A parameter swept over a range, each frame drawn as the window (or one panel) shows it, written
as an MP4 video: for a talk, a lesson, a bug report.

    python main.py IMG --op dilated --sweep dilation=1:16:16 --video out.mp4 [--panel Output]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from backends.params import ChoiceParam, FloatParam, IntParam, ParamError, ParamSpec
from backends.registry import spec_of

FPS = 8  # a sweep is read frame by frame: slow enough to follow


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


def check_video_path(out: str) -> None:
    path = Path(out)
    if path.suffix.lower() != ".mp4":
        raise ParamError(f"--video {out!r}: the file name must end in .mp4")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ParamError(f"--video {out!r}: the folder is missing or not writable")


def write_sweep(app, name: str, values: Sequence[Any], out: str, panel: Optional[str] = None) -> int:
    """Sets ``name`` to each value, waits for the complete frame, grabs the window (or ``panel``)
    and writes the frames to ``out`` (MP4, written whole or not at all). Returns the frame count."""
    import cv2
    from PySide6 import QtGui, QtWidgets

    from explorer.cli import wait_for_frame

    path = Path(out)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.mp4")
    writer, size, frames = None, None, 0
    try:
        for value in values:
            app.session.set_param(name, value)
            error = wait_for_frame(app)
            if error:
                raise ParamError(f"{name}={value}: {error}")
            for _ in range(3):
                QtWidgets.QApplication.processEvents()
            widget = app.window if panel is None else _panel(app, panel)
            image = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
            rgb = np.frombuffer(image.constBits(), np.uint8, image.bytesPerLine() * image.height())
            rgb = rgb.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3].reshape(image.height(), -1, 3)
            if writer is None:
                size = (rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2)  # the codec wants even sides
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
                if not writer.isOpened():
                    raise OSError(f"could not open a video writer for {out}")
            frame = cv2.resize(rgb, size) if (rgb.shape[1], rgb.shape[0]) != size else rgb[: size[1], : size[0]]
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
            frames += 1
        writer.release()
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        if tmp.exists():
            tmp.unlink()
    return frames


def _panel(app, name: str):
    panels = app.window.docks.panels
    if name not in panels:
        raise ParamError(f"--panel {name!r}: this operator's panels are {', '.join(panels)}")
    return panels[name]
