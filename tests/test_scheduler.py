"""The scheduler between the session and the worker: one request per change, identical ones
skipped, stamps that end drawn or failed, never left waiting."""

import numpy as np
from PySide6 import QtCore

from backends.imageio import normalize_array
from explorer.messages import Failure, Frame
from explorer.scheduler import Scheduler
from explorer.session import Session


class RecordingWorker(QtCore.QObject):
    """Takes requests and answers only when the test says, as a busy worker would."""

    frameReady = QtCore.Signal(object)
    failed = QtCore.Signal(object)
    jobProgress = QtCore.Signal(object)
    jobEnded = QtCore.Signal(object)
    deviceChanged = QtCore.Signal(str, str)
    synchronous = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = []

    def submit(self, request, force=False) -> None:
        self.requests.append(request)


def scheduler_with_image(qtbot):
    session = Session("dilated")
    session.set_image(normalize_array(np.zeros((20, 30, 3), np.float32)), "test")
    worker = RecordingWorker()
    return Scheduler(session, worker), session, worker


def test_an_identical_request_is_not_sent_twice(qtbot):
    scheduler, session, worker = scheduler_with_image(qtbot)
    assert scheduler.schedule() == 1 and scheduler.schedule() is None
    session.set_param("dilation", 5)
    assert scheduler.schedule() == 2 and [r.stamp for r in worker.requests] == [1, 2]
    assert scheduler.schedule(force=True) == 3


def test_requests_replaced_before_they_ran_do_not_wait_after_a_failure(qtbot):
    """The worker dropped stamp 1 for stamp 2 (newest wins), and stamp 2 failed: nothing waits."""
    scheduler, session, worker = scheduler_with_image(qtbot)
    scheduler.schedule()
    session.set_param("dilation", 7)
    scheduler.schedule()
    worker.failed.emit(Failure(2, "dilated", "refused"))
    assert scheduler.waiting_ms() is None


def test_a_frame_drawn_settles_its_stamp_and_every_older_one(qtbot):
    scheduler, session, worker = scheduler_with_image(qtbot)
    scheduler.schedule()
    session.set_param("dilation", 3)
    scheduler.schedule()
    drawn = []
    scheduler.frameReady.connect(drawn.append)
    worker.frameReady.emit(Frame(2, "dilated", result=None, compute_ms=1.0))
    assert [f.stamp for f in drawn] == [2]
    scheduler.applied(drawn[0])
    assert scheduler.frame_settled() and scheduler.waiting_ms() is None


def test_starting_a_job_leaves_the_drawn_frame_current(qtbot):
    scheduler, session, worker = scheduler_with_image(qtbot)
    worker.start_job = lambda request, action: worker.requests.append(request)
    scheduler.schedule()
    frame = Frame(1, "dilated", result=None, compute_ms=1.0)
    scheduler.applied(frame)
    assert scheduler.start_job("anything") and scheduler.frame_settled()
