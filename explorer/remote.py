"""The compute worker on another machine: the same interface and signals as
:class:`~explorer.worker.ComputeWorker`, the engine in a Ray actor (:mod:`explorer.remote_actor`).

A thread of its own (never the UI thread) sends one request at a time and waits for its answer
on Ray, while newer requests replace the one pending: at most one in flight and one pending,
newest wins, and a frame older than one already delivered is dropped by its stamp. The pixels
travel once per image key. Panels hidden on the desk are withheld during a drag and follow when
the requests rest. Jobs step on the actor in short slices between requests and stop on Stop.

If the actor or the connection dies, the worker says so (``deviceChanged`` with a notice), and
from then on the local worker it was given computes: the request in flight is sent there again,
so the newest frame still comes; a remote job in progress ends as failed.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from PySide6 import QtCore

from explorer.engine import readable
from explorer.messages import Frame, JobEnd, JobFrame, Request
from explorer.remote_codec import outcome_from_wire, request_to_wire
from explorer.worker import SETTLE_DELAY_S, ComputeWorker

WAIT_SLICE_S = 0.25  # a wait on Ray wakes this often to see whether the window is closing


class RemoteLost(RuntimeError):
    """The actor or the connection to it is gone."""


class RemoteWorker(QtCore.QObject):
    frameReady = QtCore.Signal(object)
    failed = QtCore.Signal(object)
    jobProgress = QtCore.Signal(object)
    jobEnded = QtCore.Signal(object)
    deviceChanged = QtCore.Signal(str, str)

    synchronous = False

    def __init__(self, actor, local: ComputeWorker, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        import ray

        self._ray = ray
        self.actor = actor
        self.local = local
        for name in ("frameReady", "failed", "jobProgress", "jobEnded", "deviceChanged"):
            getattr(local, name).connect(getattr(self, name))
        info = self._get(actor.info.remote(), stop_aware=False)
        self.description = f"{info['device']} on {info['node']} (remote)"
        self.hidden_panels: Callable[[], set] = set  # the window sets it: names of panels not on screen
        self._cond = threading.Condition()
        self._pending: Optional[tuple[Request, bool, tuple]] = None
        self._job: Optional[tuple[Request, str]] = None
        self._job_action: Optional[tuple[str, str]] = None  # (operator, action) of the remote job running
        self._cancel_job = False
        self._reset: list[str] = []
        self._stop = False
        self._lost = False
        self._settling: Optional[tuple] = None  # hidden names, while the actor has more to send
        self._sent_keys: set = set()
        self._last_stamp = 0
        self.busy = False
        self._thread = threading.Thread(target=self._loop, name="opscope-remote", daemon=True)
        self._thread.start()

    # -- the worker's interface (UI thread) ----------------------------------------------------
    def watch(self, window) -> None:
        """Withhold the layers of ``window``'s hidden panels during a drag."""
        self.hidden_panels = lambda: hidden_panels(window)

    @property
    def lost(self) -> bool:
        return self._lost

    def submit(self, request: Request, force: bool = False) -> None:
        if self._lost:
            return self.local.submit(request, force)
        hidden = tuple(sorted(self.hidden_panels()))
        with self._cond:
            force = force or (self._pending is not None and self._pending[1])
            self._pending = (request, force, hidden)
            self._cond.notify()

    def start_job(self, request: Request, action: str) -> None:
        if self._lost:
            return self.local.start_job(request, action)
        with self._cond:
            self._job, self._cancel_job = (request, action), False
            self._cond.notify()

    def stop_job(self) -> None:
        if self._lost:
            return self.local.stop_job()
        with self._cond:
            self._cancel_job = True
            self._cond.notify()

    def reset_operator(self, name: str) -> None:
        if self._lost:
            return self.local.reset_operator(name)
        with self._cond:
            self._reset.append(name)
            self._cond.notify()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)
        self.local.shutdown(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() or self._lost

    @property
    def job_running(self) -> bool:
        return self.local.job_running if self._lost else (self._job is not None or self._job_action is not None)

    # -- the remote thread ---------------------------------------------------------------------
    def _has_work(self) -> bool:
        return (self._stop or self._pending is not None or self._job is not None or self._cancel_job
                or bool(self._reset) or self._settling is not None or self._job_action is not None)

    def _loop(self) -> None:
        in_flight: Optional[Request] = None
        try:
            while True:
                with self._cond:
                    while not self._has_work():
                        self._cond.wait()
                    if self._pending is None and self._job is None and not self._stop and self._job_action is None:
                        self._cond.wait(SETTLE_DELAY_S)  # settle only once the requests pause
                    if self._stop:
                        return
                    pending, self._pending = self._pending, None
                    job, self._job = self._job, None
                    cancel, self._cancel_job = self._cancel_job, False
                    resets, self._reset = self._reset, []
                in_flight = pending[0] if pending else None
                for name in resets:
                    self._get(self.actor.reset_operator.remote(name))
                if cancel or job is not None:
                    self._emit_all(self._get(self.actor.stop_job.remote()))
                    self._job_action = None
                    if job is not None and cancel:
                        self.jobEnded.emit(JobEnd(job[0].operator, job[1], "stopped"))
                    elif job is not None:
                        self._start_job(*job)
                if pending is not None:
                    self._compute(*pending)
                elif self._settling is not None:
                    self._emit(self._get(self.actor.settle.remote(self._settling)))
                elif self._job_action is not None:
                    self._emit_all(self._get(self.actor.step_job.remote()))
                in_flight = None
        except RemoteLost as exc:
            self._fall_back(str(exc), in_flight)

    def _compute(self, request: Request, force: bool, hidden: tuple) -> None:
        self.busy = True
        if request.image_key not in self._sent_keys:
            self._get(self.actor.set_image.remote(request.image_key, request.image))
            self._sent_keys = {request.image_key}
        self._emit(self._get(self.actor.compute.remote(request_to_wire(request), hidden, force)), hidden)
        self.busy = False

    def _start_job(self, request: Request, action: str) -> None:
        if request.image_key not in self._sent_keys:
            self._get(self.actor.set_image.remote(request.image_key, request.image))
            self._sent_keys = {request.image_key}
        self._emit_all(self._get(self.actor.start_job.remote(request_to_wire(request), action)))
        self._job_action = (request.operator, action)

    def _emit_all(self, outcomes: list) -> None:
        for data in outcomes:
            self._emit(data)

    def _emit(self, data: Optional[dict], hidden: tuple = ()) -> None:
        outcome = outcome_from_wire(data)
        if outcome is None:
            self._settling = None
            return
        if isinstance(outcome, Frame):
            if outcome.stamp < self._last_stamp:
                return  # stale: a newer frame is already out
            self._last_stamp = outcome.stamp
            self._settling = None if outcome.settled else (hidden or (self._settling or ()))
            self.frameReady.emit(outcome)
        elif isinstance(outcome, JobEnd):
            self._job_action = None
            self.jobEnded.emit(outcome)
        elif isinstance(outcome, JobFrame):
            self.jobProgress.emit(outcome)
        else:
            self._settling = None
            self.failed.emit(outcome)

    def _get(self, ref, stop_aware: bool = True):
        """The value of ``ref``, waited for in slices (so closing the window is never held up);
        any Ray or connection failure becomes RemoteLost."""
        ray = self._ray
        try:
            while True:
                done, _ = ray.wait([ref], timeout=WAIT_SLICE_S)
                if done:
                    return ray.get(done[0])
                if stop_aware and self._stop:
                    raise RemoteLost("closing")
        except RemoteLost:
            raise
        except (ray.exceptions.RayError, ConnectionError, OSError) as exc:
            raise RemoteLost(readable(exc)) from None

    def _fall_back(self, reason: str, in_flight: Optional[Request]) -> None:
        """Everything from now on goes to the local worker; the request that was lost is sent
        there again (or the newest pending one, which replaces it)."""
        with self._cond:
            if self._stop:
                return
            self._lost = True
            pending, self._pending = self._pending, None
            job, self._job = self._job, None
        self.deviceChanged.emit(f"{self.local.engine.device_text} (local)",
                                f"The remote worker was lost ({reason}); computing on this machine from now on.")
        if self._job_action is not None:
            operator, action = self._job_action
            self._job_action = None
            self.jobEnded.emit(JobEnd(operator, action, "stopped: the remote worker was lost", failed=True))
        retry = pending[0] if pending is not None else in_flight
        if retry is not None:
            self.local.submit(retry, force=True)
        if job is not None:
            self.local.start_job(*job)


def hidden_panels(window) -> set:
    """Names of the window's panels the user cannot see now (closed docks, tabs behind others):
    their layers need not cross the network until the requests rest."""
    docks = window.docks
    if not window.isVisible():
        return set()
    return {name for name in docks.docks if not docks.dock_is_in_front(name)}


def start_remote(address: str, local: ComputeWorker) -> RemoteWorker:
    """Joins Ray at ``address`` (``local`` or ``ray://HOST:PORT``) and starts the engine actor
    there, on a GPU when the cluster has one."""
    from explorer.cluster import cluster_gpus, connect
    from explorer.remote_actor import actor_class

    connect(address)
    actor = actor_class(num_gpus=1 if cluster_gpus() else 0).remote()
    return RemoteWorker(actor, local)
