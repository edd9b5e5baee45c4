"""Requests from the session to the worker, frames from the worker to the window.

The scheduler builds each request once from the session, skips one identical to the last it
submitted, stamps it, and coalesces frames so that only the newest is drawn when the UI falls
behind. It knows which stamp is drawn and whether its settling layers are still to come, and
measures slider-to-frame latency. It never computes and never draws: the window connects
``frameReady`` to its docks and calls :meth:`applied` when a frame is on screen.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from PySide6 import QtCore

from backends.timing import elapsed_ms, now
from explorer.messages import Failure, Frame, JobFrame, Request, freeze
from explorer.session import Session
from explorer.worker import ComputeWorker


class Scheduler(QtCore.QObject):
    frameReady = QtCore.Signal(object)  # Frame, the newest, for the current operator
    failed = QtCore.Signal(object)  # Failure of the current operator's newest request
    jobProgress = QtCore.Signal(object)  # JobFrame of the current operator
    jobEnded = QtCore.Signal(object)  # JobEnd, of any operator (a switch ends the job)
    deviceChanged = QtCore.Signal(str, str)

    def __init__(self, session: Session, worker: ComputeWorker, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.session = session
        self.worker = worker
        self._stamp = 0
        self._last_key: Optional[tuple] = None
        self._submitted: dict[int, float] = {}
        self._pending_frame: Optional[Frame] = None
        self._applied_stamp = 0
        self._settling = False
        self._closed = False
        self.last_latency_ms = 0.0
        self.last_compute_ms = 0.0
        worker.frameReady.connect(self._on_frame)
        worker.failed.connect(self._on_failure)
        worker.jobProgress.connect(self._on_job_progress)
        worker.jobEnded.connect(self.jobEnded)
        worker.deviceChanged.connect(self.deviceChanged)

    # -- requests ------------------------------------------------------------------------------
    def make_request(self, new_stamp: bool = True) -> Optional[Request]:
        """The session's current request, with a new stamp for a frame (a job's request takes the
        current one: no frame answers it); None before there is an image."""
        if self.session.pixels is None:
            return None
        if new_stamp:
            self._stamp += 1
        return Request(self._stamp, self.session.operator, freeze(self.session.params()),
                       self.session.effective_query(), self.session.image_key, self.session.pixels)

    def schedule(self, force: bool = False) -> Optional[int]:
        """Submits the session's current request, unless it is the one last submitted."""
        request = self.make_request()
        if request is None:
            return None
        if request.key == self._last_key and not force:
            self._stamp -= 1
            return None
        self._last_key = request.key
        self._submitted[request.stamp] = now()
        self.worker.submit(request, force=force)
        return request.stamp

    def start_job(self, action: str, args: Optional[dict] = None) -> bool:
        """Starts the operator's job ``action``; ``args`` (plain data) go to its generator."""
        request = self.make_request(new_stamp=False)
        if request is None:
            return False
        self.worker.start_job(replace(request, job_args=freeze(args or {})), action)
        return True

    def stop_job(self) -> None:
        self.worker.stop_job()

    def reset_operator(self) -> None:
        """Forget the current operator's learned state and compute afresh."""
        self.worker.stop_job()
        self.worker.reset_operator(self.session.operator)

    def close(self) -> None:
        self._closed = True

    # -- state ---------------------------------------------------------------------------------
    @property
    def stamp(self) -> int:
        return self._stamp

    def frame_drawn(self) -> bool:
        """Whether the newest request's first frame is drawn (its settling layers may follow)."""
        return self._applied_stamp >= self._stamp

    @property
    def settling(self) -> bool:
        """Whether the drawn frame's settling layers are still to come."""
        return self._settling

    def frame_settled(self) -> bool:
        """Whether the newest request is drawn with every layer, settling ones included."""
        return self._applied_stamp >= self._stamp and not self._settling

    def waiting_ms(self) -> Optional[float]:
        """How long the oldest request not yet drawn has waited, or None when all are drawn."""
        pending = [t for s, t in self._submitted.items() if s > self._applied_stamp]
        return elapsed_ms(min(pending)) if pending else None

    # -- frames --------------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        # Coalesce: if the UI is behind, only the newest frame is ever drawn.
        first = self._pending_frame is None
        if first or frame.stamp >= self._pending_frame.stamp:  # a settled frame replaces its fast one
            self._pending_frame = frame
        if first:
            if self.worker.synchronous:
                self._deliver()
            else:
                QtCore.QTimer.singleShot(0, self._deliver)

    def _deliver(self) -> None:
        frame, self._pending_frame = self._pending_frame, None
        if self._closed or frame is None or frame.operator != self.session.operator or frame.stamp < self._applied_stamp:
            return
        self.frameReady.emit(frame)

    def applied(self, frame: Frame) -> None:
        """The window has drawn ``frame``."""
        self._applied_stamp = frame.stamp
        self._settling = not frame.settled
        self.last_compute_ms = frame.compute_ms
        submitted = self._submitted.pop(frame.stamp, None)
        for stale in [s for s in self._submitted if s < frame.stamp]:
            del self._submitted[stale]
        if submitted is not None:
            self.last_latency_ms = elapsed_ms(submitted)

    def _on_failure(self, failure: Failure) -> None:
        if self._closed or failure.operator != self.session.operator:
            return
        for stamp in [s for s in self._submitted if s <= failure.stamp]:  # older ones were replaced, unrun
            del self._submitted[stamp]
        self._settling = False
        self._last_key = None  # the same request may be retried
        self.failed.emit(failure)

    def _on_job_progress(self, job: JobFrame) -> None:
        if not self._closed and job.operator == self.session.operator:
            self.jobProgress.emit(job)
