"""The compute engine: runs operators on requests and returns frames, with no thread and no Qt.

The worker thread (:mod:`explorer.worker`) drives it for the window; the synchronous mode, the
command line and a remote worker drive the same engine. Operators run with autograd off (they
show, they do not train); job steps run with autograd on (fits and training need it). Every
exception from an operator, a job, a save or a close comes back as data, never escapes.
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from backends.device import describe, is_device_failure
from backends.layers import Result
from backends.params import ParamError
from backends.registry import JobUpdate, Operator, operator_class
from backends.timing import elapsed_ms, now
from explorer.display import DisplayEncoder
from explorer.messages import Failure, Frame, FullResolution, JobEnd, JobFrame, RawResult, Request

JOB_EMIT_INTERVAL_S = 0.05  # a job's partial results reach the UI at most this often

Outcome = Union[Frame, Failure]


class ComputeEngine:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.notice = ""  # the last device change, said once in the next frame
        self._operators: dict[str, Operator] = {}
        self._tensor_key: Optional[tuple] = None
        self._tensor: Optional[torch.Tensor] = None
        self._encoder = DisplayEncoder()
        self._last_key: Optional[tuple] = None
        self._last_frame: Optional[Frame] = None  # the newest frame of the last key, for a repeated request
        self._settle: Optional[tuple[Request, Callable[[], Result]]] = None
        self._job: Optional[tuple[Request, str]] = None
        self._job_iter: Optional[Iterator[JobUpdate]] = None
        self._last_emit = 0.0

    # -- frames --------------------------------------------------------------------------------
    def is_current(self, request: Request) -> bool:
        """Whether ``request`` would give the frame last computed (so it can be skipped)."""
        return request.key == self._last_key and self._last_frame is not None

    def repeat(self, request: Request) -> Frame:
        """The last frame again, under ``request``'s stamp: a request that returns to the values
        last computed (a slider moved away and back before the worker got to it) is answered
        without computing, and the window learns that its newest stamp is drawn."""
        if self._settle is not None:  # its settling layers, still to come, answer the new stamp
            self._settle = (request, self._settle[1])
        return replace(self._last_frame, stamp=request.stamp, compute_ms=0.0, notice="")

    def compute(self, request: Request) -> Outcome:
        self._settle = None  # a newer request supersedes the last one's settling layers
        notice = ""
        t0 = now()
        try:
            try:
                raw = self._run(request)
            except Exception as exc:
                if self.device.type == "cpu" or not is_device_failure(exc):
                    raise
                notice = self._fall_back_to_cpu(exc)
                t0 = now()
                raw = self._run(request)
            result = self._encoder.encode(raw)
            self._last_key = request.key
            self._settle = (request, raw.settle) if raw.settle is not None else None
            self._last_frame = Frame(request.stamp, request.operator, result, elapsed_ms(t0), notice, raw.settle is None)
            return self._last_frame
        except Exception as exc:  # failures are data: the window shows them, the app lives on
            self._last_key, self._last_frame = None, None
            return Failure(request.stamp, request.operator, readable(exc), traceback.format_exc())

    @property
    def settling(self) -> bool:
        return self._settle is not None

    def settle(self) -> Optional[Outcome]:
        """The last request's settling layers, computed now; None when there are none."""
        if self._settle is None:
            return None
        request, settle = self._settle
        self._settle = None
        t0 = now()
        try:
            with torch.no_grad():
                raw = settle()
            self._synchronize()
            result = self._encoder.encode(raw)
            self._settle = (request, raw.settle) if raw.settle is not None else None
            self._last_frame = Frame(request.stamp, request.operator, result, elapsed_ms(t0), "", raw.settle is None)
            return self._last_frame
        except Exception as exc:
            if self.device.type != "cpu" and is_device_failure(exc):
                self._fall_back_to_cpu(exc)
                return self.compute(request)  # the whole request again, on the CPU
            self._last_key, self._last_frame = None, None
            return Failure(request.stamp, request.operator, readable(exc), traceback.format_exc())

    def reset_operator(self, name: str) -> None:
        """Forget the operator's learned state and caches before its next request."""
        self._operators.pop(name, None)
        self._last_key, self._last_frame = None, None

    # -- edits and exports (backends/full_resolution.py, explorer/edits.py, explorer/export.py) --
    def full_resolution(self, request: Request, full: np.ndarray, ticket: int) -> Union[FullResolution, Failure]:
        """The request's primary picture made from ``full`` (the original's pixels, (H, W, 3))."""
        from backends.full_resolution import edit_picture

        try:
            op = self._operator(request.operator)
            big = torch.from_numpy(np.ascontiguousarray(full, np.float32)).permute(2, 0, 1)[None].to(self.device)
            with torch.no_grad():
                out, how = edit_picture(op, self._image_tensor(request), big, dict(request.params), request.query,
                                        request.image_key)
            pixels = out[0].permute(1, 2, 0).float().cpu().numpy()
            self._last_key, self._last_frame = None, None  # the operator ran on other pixels: the next frame recomputes
            return FullResolution(ticket, request.operator, np.ascontiguousarray(pixels), how)
        except Exception as exc:
            self._last_key, self._last_frame = None, None
            return Failure(ticket, request.operator, readable(exc), traceback.format_exc())

    def raw_result(self, request: Request, ticket: int) -> Union[RawResult, Failure]:
        """The request's result complete, every layer as numpy at its data's resolution and dtype."""
        from backends.layers import complete, materialize

        try:
            with torch.no_grad():
                raw = materialize(complete(self._run(request)))
            return RawResult(ticket, request.operator, raw)
        except Exception as exc:
            return Failure(ticket, request.operator, readable(exc), traceback.format_exc())

    # -- jobs ----------------------------------------------------------------------------------
    @property
    def job_running(self) -> bool:
        return self._job is not None

    def start_job(self, request: Request, action: str) -> Optional[JobEnd]:
        """Starts ``action``; a job still running is stopped first and its end returned."""
        ended = self.end_job("stopped") if self._job is not None else None
        self._job, self._job_iter = (request, action), None
        return ended

    def step_job(self) -> Optional[Union[JobFrame, JobEnd]]:
        """One step of the running job: a frame when one is due, its end when it ends, else None."""
        if self._job is None:
            return None
        request, action = self._job
        try:
            with torch.enable_grad():
                if self._job_iter is None:
                    op = self._operator(request.operator)
                    self._job_iter = op.start(action, self._image_tensor(request), dict(request.params),
                                              request.query, request.image_key, dict(request.job_args))
                    self._last_emit = 0.0
                t0 = now()
                update = next(self._job_iter)
            step_ms = elapsed_ms(t0)
            if now() - self._last_emit < JOB_EMIT_INTERVAL_S and update.progress != 1.0:
                return None
            self._last_emit = now()
            result = self._encoder.encode(update.result) if update.result is not None else None
            return JobFrame(request.operator, action, update.progress, update.message, result, step_ms)
        except StopIteration:
            return self.end_job("done")
        except Exception as exc:
            return self.end_job(readable(exc), failed=True)

    def end_job(self, how: str, failed: bool = False) -> Optional[JobEnd]:
        """Closes the running job (its ``finally`` may save, and may fail: that is reported too)."""
        if self._job is None:
            return None
        request, action = self._job
        job_iter, self._job, self._job_iter = self._job_iter, None, None
        self._last_key, self._last_frame = None, None  # learned state changed: recompute the next frame
        if job_iter is not None:
            try:
                with torch.enable_grad():
                    job_iter.close()
            except Exception as exc:
                how, failed = (f"{how}; then {readable(exc)}" if failed else readable(exc)), True
        return JobEnd(request.operator, action, how, failed)

    # -- internals -----------------------------------------------------------------------------
    def _operator(self, name: str) -> Operator:
        op = self._operators.get(name)
        if op is None:
            op = self._operators[name] = operator_class(name)()
        return op

    def _image_tensor(self, request: Request) -> torch.Tensor:
        key = (request.image_key, str(self.device))
        if key != self._tensor_key:
            pixels = np.ascontiguousarray(request.image)
            if not np.isfinite(pixels).all():  # images are normalized on load; this guards any other source
                pixels = np.clip(np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
            pixels = torch.from_numpy(pixels).permute(2, 0, 1)[None]
            self._tensor = pixels.to(self.device, torch.float32).contiguous()
            self._tensor_key = key
        return self._tensor

    def _run(self, request: Request) -> Result:
        op = self._operator(request.operator)
        image = self._image_tensor(request)
        with torch.no_grad():
            result = op.compute(image, dict(request.params), request.query, request.image_key)
        self._synchronize()
        return result

    def _synchronize(self) -> None:
        """Device errors surface here, inside the caller's fallback."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _fall_back_to_cpu(self, exc: Exception) -> str:
        self.notice = f"The {self.device.type.upper()} failed ({readable(exc)}); computing on the CPU from now on."
        self.device = torch.device("cpu")
        self._tensor_key = None
        self._operators.clear()
        self._encoder.forget()
        return self.notice

    @property
    def device_text(self) -> str:
        return describe(self.device)


def readable(exc: BaseException) -> str:
    """One line for the window: our own errors as they are, others with their type."""
    if isinstance(exc, (ParamError, ValueError)):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
