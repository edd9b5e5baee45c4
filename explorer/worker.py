"""The compute worker: the engine on one thread of its own, newest request wins.

The UI thread submits frozen requests; the worker keeps only the newest pending one, skips a
request identical to the one it last computed, and hands back numpy-only results by signal.
Settling layers compute once the requests pause. Long jobs are stepped between requests, so
sliders stay live and Stop takes effect within one step.

``synchronous=True`` computes on the caller's thread instead, at once and completely (settling
layers and whole jobs included), emitting the same signals: for tests and headless rendering.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable, Optional

import torch
from PySide6 import QtCore

from explorer.engine import ComputeEngine
from explorer.messages import Failure, Frame, JobEnd, JobFrame, Request

SETTLE_DELAY_S = 0.1  # a pause in requests this long lets settling layers compute (a drag sends more often)


class ComputeWorker(QtCore.QObject):
    frameReady = QtCore.Signal(object)  # Frame
    failed = QtCore.Signal(object)  # Failure
    jobProgress = QtCore.Signal(object)  # JobFrame
    jobEnded = QtCore.Signal(object)  # JobEnd
    deviceChanged = QtCore.Signal(str, str)  # description, notice
    taskDone = QtCore.Signal(object)  # what a task (run_task) returned: FullResolution, RawResult, Failure

    def __init__(self, device: torch.device, parent: Optional[QtCore.QObject] = None,
                 synchronous: bool = False) -> None:
        super().__init__(parent)
        self.engine = ComputeEngine(device)
        self.synchronous = synchronous
        self.prefetched: dict = {}  # request key -> Frame or Failure computed elsewhere (explorer/cluster_sweep.py)
        self._cond = threading.Condition()
        self._pending: Optional[Request] = None
        self._force = False
        self._job_request: Optional[tuple[Request, str]] = None
        self._cancel_job = False
        self._reset: list[str] = []
        self._tasks: list[Callable[[ComputeEngine], object]] = []
        self._stop = False
        self.busy = False
        self._thread: Optional[threading.Thread] = None
        if not synchronous:
            self._thread = threading.Thread(target=self._loop, name="opscope-compute", daemon=True)
            self._thread.start()

    @property
    def device(self) -> torch.device:
        return self.engine.device

    # -- UI thread API -------------------------------------------------------------------------
    def submit(self, request: Request, force: bool = False) -> None:
        """Queue ``request``, replacing any pending one. ``force`` recomputes even if unchanged.
        A prefetched answer for its key is delivered at once instead."""
        if (answer := self.prefetched.pop(request.key, None)) is not None:
            self._emit(replace(answer, stamp=request.stamp))
            return
        if self.synchronous:
            self._compute(request, force)
            while self.engine.settling:
                self._emit(self.engine.settle())
            return
        with self._cond:
            self._pending = request
            self._force = self._force or force
            self._cond.notify()

    def start_job(self, request: Request, action: str) -> None:
        if self.synchronous:
            self._emit(self.engine.start_job(request, action))
            while self.engine.job_running:
                self._emit(self.engine.step_job())
            return
        with self._cond:
            self._job_request = (request, action)
            self._cancel_job = False
            self._cond.notify()

    def stop_job(self) -> None:
        if self.synchronous:
            self._emit(self.engine.end_job("stopped"))
            return
        with self._cond:
            self._cancel_job = True
            self._cond.notify()

    def run_task(self, task: Callable[[ComputeEngine], object]) -> None:
        """``task(engine)`` on the compute thread, between frames; its return value comes back by
        ``taskDone`` (an apply at full resolution, an export's complete data)."""
        if self.synchronous:
            self.taskDone.emit(task(self.engine))
            return
        with self._cond:
            self._tasks.append(task)
            self._cond.notify()

    def reset_operator(self, name: str) -> None:
        """Forget the operator's learned state, on the compute thread, before the next request."""
        if self.synchronous:
            self.engine.reset_operator(name)
            return
        with self._cond:
            self._reset.append(name)
            self._cond.notify()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cancel_job = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self.engine.end_job("stopped")

    @property
    def alive(self) -> bool:
        """Whether the compute thread runs (always, in the synchronous mode)."""
        return self._thread is None or self._thread.is_alive()

    @property
    def job_running(self) -> bool:
        return self._job_request is not None or self.engine.job_running

    # -- compute thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        engine = self.engine
        while True:
            with self._cond:
                while not self._has_work():
                    self._cond.wait()
                if not self._stop and self._pending is None and not engine.job_running and self._job_request is None:
                    self._cond.wait(SETTLE_DELAY_S)  # settle only once the requests pause
                if self._stop:
                    break
                request, force = self._pending, self._force
                self._pending, self._force = None, False
                job, self._job_request = self._job_request, None
                cancel, self._cancel_job = self._cancel_job, False
                resets, self._reset = self._reset, []
                tasks, self._tasks = self._tasks, []
            for name in resets:
                engine.reset_operator(name)
            for task in tasks:
                self.busy = True
                self.taskDone.emit(task(engine))
                self.busy = False
            if cancel and job is not None:  # stopped before it began: end the old one, report the new
                self._emit(engine.end_job("stopped"))
                self._emit(JobEnd(job[0].operator, job[1], "stopped"))
            elif cancel:
                self._emit(engine.end_job("stopped"))
            elif job is not None:
                self._emit(engine.start_job(*job))
            if request is not None:
                self._compute(request, force)
            elif engine.settling:
                self.busy = True
                self._emit(engine.settle())
                self.busy = False
            elif engine.job_running:
                self._emit(engine.step_job())
        engine.end_job("stopped")

    def _has_work(self) -> bool:
        return (self._stop or self._pending is not None or self._job_request is not None or self._cancel_job
                or bool(self._reset) or bool(self._tasks) or self.engine.settling or self.engine.job_running)

    def _compute(self, request: Request, force: bool) -> None:
        if not force and self.engine.is_current(request):
            self._emit(self.engine.repeat(request))
            return
        self.busy = True
        device = self.engine.device
        self._emit(self.engine.compute(request))
        self.busy = False
        if self.engine.device != device:
            self.deviceChanged.emit(self.engine.device_text, self.engine.notice)

    def _emit(self, outcome) -> None:
        if isinstance(outcome, Frame):
            self.frameReady.emit(outcome)
        elif isinstance(outcome, Failure):
            self.failed.emit(outcome)
        elif isinstance(outcome, JobFrame):
            self.jobProgress.emit(outcome)
        elif isinstance(outcome, JobEnd):
            self.jobEnded.emit(outcome)
