"""The compute worker: one thread that runs every operator, newest request wins.

The UI thread submits frozen requests; the worker keeps only the newest pending one, skips a
request identical to the one it last computed, and hands back numpy-only results by signal.
Long jobs (fits, training) are generators stepped between requests, so sliders stay live and
Stop takes effect within one step. Errors come back as messages; a failing GPU hands over to
the CPU with a notice.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from PySide6 import QtCore

from backends.device import describe, is_device_failure
from backends.layers import Result, materialize
from backends.params import ParamError
from backends.registry import JobUpdate, Operator, operator_class
from widgets.colormaps import auto_levels, rgb_to_uint8, to_indexed

JOB_EMIT_INTERVAL_S = 0.05
SETTLE_DELAY_S = 0.1  # a pause in requests this long lets settling layers compute (a drag sends more often)


@dataclass(frozen=True)
class Request:
    stamp: int
    operator: str
    params: tuple[tuple[str, Any], ...]
    query: Optional[tuple[int, int]]
    image_key: int
    image: np.ndarray = field(compare=False, repr=False)

    @property
    def key(self) -> tuple:
        return (self.operator, self.params, self.query, self.image_key)


@dataclass(frozen=True)
class Frame:
    stamp: int
    operator: str
    result: Result
    compute_ms: float
    notice: str = ""
    settled: bool = True  # False: layers named in result.pending follow in a later frame of this stamp


@dataclass(frozen=True)
class Failure:
    stamp: int
    operator: str
    message: str
    detail: str = ""


@dataclass(frozen=True)
class JobFrame:
    operator: str
    action: str
    progress: Optional[float]
    message: str
    result: Optional[Result]
    step_ms: float


def freeze(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


class ComputeWorker(QtCore.QObject):
    frameReady = QtCore.Signal(object)  # Frame
    failed = QtCore.Signal(object)  # Failure
    jobProgress = QtCore.Signal(object)  # JobFrame
    jobEnded = QtCore.Signal(str, str, str)  # operator, action, "done" | "stopped" | error message
    deviceChanged = QtCore.Signal(str, str)  # description, notice

    def __init__(self, device: torch.device, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.device = device
        self._cond = threading.Condition()
        self._pending: Optional[Request] = None
        self._force = False
        self._job: Optional[tuple[Request, str]] = None
        self._job_iter: Optional[Iterator[JobUpdate]] = None
        self._settle: Optional[tuple[Request, Callable[[], Result]]] = None
        self._cancel_job = False
        self._stop = False
        self._last_key: Optional[tuple] = None
        self._operators: dict[str, Operator] = {}
        self._tensor_key: Optional[tuple] = None
        self._tensor: Optional[torch.Tensor] = None
        self._converted: dict = {}  # id(tensor) -> (tensor, array), from the last frame only
        self._display: dict = {}  # id(float image) -> (float image, uint8 image), last frame only
        self.busy = False
        self._thread = threading.Thread(target=self._loop, name="opscope-compute", daemon=True)
        self._thread.start()

    # -- UI thread API -------------------------------------------------------------------------
    def submit(self, request: Request, force: bool = False) -> None:
        """Queue ``request``, replacing any pending one. ``force`` recomputes even if unchanged."""
        with self._cond:
            self._pending = request
            self._force = self._force or force
            self._cond.notify()

    def start_job(self, request: Request, action: str) -> None:
        with self._cond:
            self._job = (request, action)
            self._job_iter = None
            self._cancel_job = False
            self._cond.notify()

    def stop_job(self) -> None:
        with self._cond:
            self._cancel_job = True
            self._cond.notify()

    def reset_operator(self, name: str) -> None:
        """Forget the operator's learned state, on the worker thread, before the next request."""
        with self._cond:
            self._operators.pop(name, None)
            self._last_key = None

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cancel_job = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def job_running(self) -> bool:
        return self._job is not None

    # -- worker thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._stop and self._pending is None and self._job is None and self._settle is None:
                    self._cond.wait()
                if not self._stop and self._pending is None and self._job is None:
                    self._cond.wait(SETTLE_DELAY_S)  # settle only once the requests pause
                if self._stop:
                    break
                request, force = self._pending, self._force
                self._pending, self._force = None, False
                cancel = self._cancel_job
            if request is not None:
                if force or request.key != self._last_key:
                    self._settle = None  # a newer request supersedes the last one's settling layers
                    self.busy = True
                    self._compute(request)
                    self.busy = False
            elif self._settle is not None:
                self.busy = True
                self._compute_settle()
                self.busy = False
            elif self._job is not None:
                if cancel:
                    self._end_job("stopped")
                else:
                    self._step_job()
        if self._job_iter is not None:
            self._job_iter.close()

    def _operator(self, name: str) -> Operator:
        op = self._operators.get(name)
        if op is None:
            op = self._operators[name] = operator_class(name)()
        return op

    def _image_tensor(self, request: Request) -> torch.Tensor:
        key = (request.image_key, str(self.device))
        if key != self._tensor_key:
            pixels = torch.from_numpy(np.ascontiguousarray(request.image)).permute(2, 0, 1)[None]
            self._tensor = pixels.to(self.device, torch.float32).contiguous()
            self._tensor_key = key
        return self._tensor

    def _compute(self, request: Request) -> None:
        notice = ""
        t0 = time.perf_counter()
        try:
            try:
                raw = self._run(request)
            except Exception as exc:
                if self.device.type == "cpu" or not is_device_failure(exc):
                    raise
                notice = self._fall_back_to_cpu(exc)
                t0 = time.perf_counter()
                raw = self._run(request)
            result = self._to_display(raw)
            compute_ms = (time.perf_counter() - t0) * 1e3
            self._last_key = request.key
            self._settle = (request, raw.settle) if raw.settle is not None else None
            self.frameReady.emit(Frame(request.stamp, request.operator, result, compute_ms, notice, raw.settle is None))
        except Exception as exc:  # failures are data: the window shows them, the app lives on
            self._last_key = None
            self.failed.emit(Failure(request.stamp, request.operator, _readable(exc), traceback.format_exc()))

    def _compute_settle(self) -> None:
        request, settle = self._settle
        self._settle = None
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                raw = settle()
            self._synchronize()
            result = self._to_display(raw)
            self._settle = (request, raw.settle) if raw.settle is not None else None
            compute_ms = (time.perf_counter() - t0) * 1e3
            self.frameReady.emit(Frame(request.stamp, request.operator, result, compute_ms, "", raw.settle is None))
        except Exception as exc:
            if self.device.type != "cpu" and is_device_failure(exc):
                self._fall_back_to_cpu(exc)
                self._compute(request)  # the whole request again, on the CPU
                return
            self._last_key = None
            self.failed.emit(Failure(request.stamp, request.operator, _readable(exc), traceback.format_exc()))

    def _run(self, request: Request) -> Result:
        op = self._operator(request.operator)
        image = self._image_tensor(request)
        with torch.no_grad():
            result = op.run(image, dict(request.params), request.query)
        self._synchronize()
        return result

    def _synchronize(self) -> None:
        """Device errors surface here, inside the caller's fallback."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _to_display(self, result: Result) -> Result:
        """Numpy layers, RGB as uint8, reusing the last frame's conversions of unchanged tensors."""
        fresh: dict = {}
        out = materialize(result, _ReusingCache(self._converted, fresh))
        self._converted = fresh
        display: dict = {}
        out = Result(tuple(self._display_ready(lay, display) for lay in out.layers), out.notes, pending=out.pending)
        self._display = display
        return out

    def _display_ready(self, layer, fresh: dict):
        if layer.kind == "image" and layer.image.ndim == 3:
            return self._rgb_ready(layer, fresh)
        if layer.kind in ("heatmap", "feature_maps") or (layer.kind == "image" and layer.image.ndim == 2):
            return self._indexed_ready(layer, fresh)
        return layer

    def _rgb_ready(self, layer, fresh: dict):
        """RGB images in [0, 1] go to the UI as uint8, converted here: the UI thread then hands
        them to Qt without a per-pixel pass (about 3 ms per 512x512 image saved on every frame).
        The same source array gives the same uint8 array, so unchanged panels skip redrawing."""
        if layer.image.dtype == np.uint8 or layer.levels not in (None, (0.0, 1.0), (0, 1)):
            return layer
        src = layer.image
        hit = self._display.get(id(src))
        if hit is not None and hit[0] is src:
            arr = hit[1]
        else:
            arr = rgb_to_uint8(src)
        fresh[id(src)] = (src, arr)
        return replace(layer, image=arr, levels=(0.0, 255.0))

    def _indexed_ready(self, layer, fresh: dict):
        """Scalar maps go to the UI as palette indices for their levels (NaN: transparent), made
        here: painting is then Qt's palette lookup instead of pyqtgraph's rescale, colour table
        and NaN search (2-5 ms a panel on every frame)."""
        field = "image" if layer.kind == "image" else "maps"
        src = getattr(layer, field)
        if not isinstance(src, np.ndarray) or src.dtype.kind != "f":
            return layer
        levels = tuple(float(v) for v in layer.levels) if layer.levels is not None else auto_levels(src)
        key = (id(src), levels)
        hit = self._display.get(key)
        arr = hit[1] if hit is not None and hit[0] is src else to_indexed(src, levels)
        fresh[key] = (src, arr)
        return replace(layer, **{field: arr, "levels": levels})

    def _fall_back_to_cpu(self, exc: Exception) -> str:
        notice = f"The {self.device.type.upper()} failed ({_readable(exc)}); computing on the CPU from now on."
        self.device = torch.device("cpu")
        self._tensor_key = None
        self._operators.clear()
        self.deviceChanged.emit(describe(self.device), notice)
        return notice

    def _step_job(self) -> None:
        request, action = self._job
        try:
            if self._job_iter is None:
                op = self._operator(request.operator)
                self._job_iter = op.start(action, self._image_tensor(request), dict(request.params), request.query)
                self._last_emit = 0.0
            t0 = time.perf_counter()
            update = next(self._job_iter)
            step_ms = (time.perf_counter() - t0) * 1e3
            now = time.perf_counter()
            if now - self._last_emit >= JOB_EMIT_INTERVAL_S or update.progress == 1.0:
                self._last_emit = now
                result = materialize(update.result) if update.result is not None else None
                self.jobProgress.emit(JobFrame(request.operator, action, update.progress, update.message, result, step_ms))
        except StopIteration:
            self._end_job("done")
        except Exception as exc:
            self._end_job(_readable(exc))

    def _end_job(self, how: str) -> None:
        request, action = self._job
        if self._job_iter is not None:
            self._job_iter.close()
        self._job, self._job_iter = None, None
        self._last_key = None  # the operator's learned state changed: recompute the next frame
        self.jobEnded.emit(request.operator, action, how)


class _ReusingCache(dict):
    """Looks up the last frame's conversions and records this frame's, so memory is bounded."""

    def __init__(self, previous: dict, fresh: dict) -> None:
        super().__init__(previous)
        self._fresh = fresh

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self._fresh[key] = value
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._fresh[key] = value


def _readable(exc: BaseException) -> str:
    if isinstance(exc, (ParamError, ValueError)):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
