"""The compute worker and its engine: newest request wins, unchanged requests are skipped,
errors come back as data, settling layers follow, long jobs step, report and stop, and nothing
a job does (failing, failing to save, being replaced) stops the worker."""

import threading
from typing import Any, Mapping

import numpy as np
import pytest
import torch

from backends.layers import CurveLayer, MetricsLayer, Result
from backends.params import FloatParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register, unregister
from explorer.engine import ComputeEngine
from explorer.messages import Failure, Frame, JobEnd, JobFrame, Request, freeze
from explorer.worker import ComputeWorker

IMAGE = np.zeros((8, 8, 3), np.float32)
WAIT_MS = 10_000


class Gate:
    """Holds the probe inside ``run`` until released, and says when it got there."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()


@register
class Probe(Operator):
    """A test operator: waits at its gate, fails on ``fail``, records its runs and settles."""

    spec = OperatorSpec(
        name="_test_probe", title="Probe", family="Tests", description="test double",
        params=(FloatParam("tag", 0.0, 0.0, 100.0), FloatParam("fail", 0.0, 0.0, 1.0), FloatParam("settle", 0.0, 0.0, 1.0)),
        actions=(Action("count", "Count"), Action("grad", "Grad"), Action("bad_save", "Bad save")),
    )
    gate = Gate()
    runs: list[float] = []
    settled: list[float] = []

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        Probe.gate.entered.set()
        Probe.gate.release.wait(WAIT_MS / 1000)
        if params["fail"]:
            raise ValueError("the probe was told to fail")
        Probe.runs.append(params["tag"])
        fast = (MetricsLayer("m", {"tag": params["tag"], "device": str(image.device)}),)
        if not params["settle"]:
            return Result(fast)

        def settle() -> Result:
            Probe.settled.append(params["tag"])
            return Result(fast + (CurveLayer("late", {"x": (np.arange(3), np.ones(3))}),))

        return Result(fast, settle=settle, pending=("late",))

    def job_count(self, image, params, query):
        for i in range(100_000):
            yield JobUpdate(i / 100_000, f"step {i}", Result((CurveLayer("loss", {"loss": (np.arange(i + 1), np.ones(i + 1))}),)))

    def job_grad(self, image, params, query):
        yield JobUpdate(1.0, f"grad enabled: {torch.is_grad_enabled()}")

    def job_bad_save(self, image, params, query):
        try:
            while True:
                yield JobUpdate(None, "training")
        finally:
            raise OSError("the save folder is a file")


def request(stamp: int, **params) -> Request:
    full = {"tag": 0.0, "fail": 0.0, "settle": 0.0, **params}
    return Request(stamp, "_test_probe", freeze(full), None, 1, IMAGE)


@pytest.fixture(autouse=True)
def _fresh_probe():
    register(Probe)
    Probe.gate, Probe.runs, Probe.settled = Gate(), [], []
    yield
    Probe.gate.release.set()


@pytest.fixture
def worker(qtbot):
    w = ComputeWorker(torch.device("cpu"))
    yield w
    w.shutdown()


@pytest.fixture
def sync_worker():
    w = ComputeWorker(torch.device("cpu"), synchronous=True)
    yield w
    w.shutdown()


def test_newest_request_wins_and_stale_ones_are_dropped(worker, qtbot):
    frames = []
    worker.frameReady.connect(frames.append)
    Probe.gate.release.clear()
    worker.submit(request(1, tag=1))
    assert Probe.gate.entered.wait(WAIT_MS / 1000)  # the worker is now busy with request 1
    for stamp in range(2, 12):
        worker.submit(request(stamp, tag=stamp))
    Probe.gate.release.set()
    qtbot.waitUntil(lambda: bool(frames) and frames[-1].stamp == 11, timeout=WAIT_MS)
    assert [f.stamp for f in frames] == [1, 11]
    assert Probe.runs == [1, 11]


def test_an_unchanged_request_is_not_recomputed_unless_forced(sync_worker):
    frames = []
    sync_worker.frameReady.connect(frames.append)
    sync_worker.submit(request(1))
    sync_worker.submit(request(2))  # answered with the last frame, not computed
    assert [f.stamp for f in frames] == [1, 2] and len(Probe.runs) == 1
    sync_worker.submit(request(3), force=True)
    assert [f.stamp for f in frames] == [1, 2, 3] and len(Probe.runs) == 2


def test_an_operator_exception_comes_back_as_a_failure(worker, qtbot):
    with qtbot.waitSignal(worker.failed, timeout=WAIT_MS) as blocker:
        worker.submit(request(1, fail=1.0))
    failure = blocker.args[0]
    assert failure.stamp == 1 and failure.message == "the probe was told to fail"
    assert "Traceback" in failure.detail
    with qtbot.waitSignal(worker.frameReady, timeout=WAIT_MS):
        worker.submit(request(2))


def test_a_job_reports_progress_and_stops_on_request(worker, qtbot):
    progress = []
    worker.jobProgress.connect(progress.append)
    worker.start_job(request(1), "count")
    qtbot.waitUntil(lambda: len(progress) >= 3, timeout=WAIT_MS)
    assert progress[-1].result.layers[0].name == "loss"
    with qtbot.waitSignal(worker.jobEnded, timeout=WAIT_MS) as ended:
        worker.stop_job()
    assert ended.args[0] == JobEnd("_test_probe", "count", "stopped", False)
    assert not worker.job_running


def test_requests_are_served_while_a_job_runs(worker, qtbot):
    worker.start_job(request(1), "count")
    with qtbot.waitSignal(worker.frameReady, timeout=WAIT_MS) as frame:
        worker.submit(request(2, tag=2))
    assert frame.args[0].stamp == 2
    worker.stop_job()


def test_job_steps_run_with_autograd_on_even_on_the_no_grad_compute_thread(worker, qtbot):
    with qtbot.waitSignal(worker.jobProgress, timeout=WAIT_MS) as step:
        worker.start_job(request(1), "grad")
    assert step.args[0].message == "grad enabled: True"


def test_a_job_that_fails_while_saving_is_reported_and_the_worker_goes_on(worker, qtbot):
    with qtbot.waitSignal(worker.jobProgress, timeout=WAIT_MS):
        worker.start_job(request(1), "bad_save")
    with qtbot.waitSignal(worker.jobEnded, timeout=WAIT_MS) as ended:
        worker.stop_job()
    end = ended.args[0]
    assert end.failed and "the save folder is a file" in end.how
    with qtbot.waitSignal(worker.frameReady, timeout=WAIT_MS):
        worker.submit(request(2, tag=2))


def test_starting_a_job_while_another_runs_ends_the_first_with_a_report():
    engine = ComputeEngine(torch.device("cpu"))
    assert engine.start_job(request(1), "count") is None
    assert isinstance(engine.step_job(), JobFrame)
    ended = engine.start_job(request(2), "grad")
    assert ended == JobEnd("_test_probe", "count", "stopped", False)
    assert isinstance(engine.step_job(), JobFrame) and isinstance(engine.step_job(), JobEnd)


def test_a_job_stopped_before_it_began_still_reports_its_end(worker, qtbot):
    ends = []
    worker.jobEnded.connect(ends.append)
    with qtbot.waitSignal(worker.jobEnded, timeout=WAIT_MS):
        worker.start_job(request(1), "count")
        worker.stop_job()
    qtbot.waitUntil(lambda: not worker.job_running, timeout=WAIT_MS)
    assert ends[-1] == JobEnd("_test_probe", "count", "stopped", False)


def test_an_unknown_action_ends_with_a_message_not_a_crash():
    engine = ComputeEngine(torch.device("cpu"))
    engine.start_job(request(1), "fly")
    end = engine.step_job()
    assert end.failed and "has no action 'fly'" in end.how and "count" in end.how


@register
class GpuOnlyFailure(Operator):
    """Fails like a broken accelerator on any device but the CPU."""

    spec = OperatorSpec(name="_test_gpu_failure", title="GPU failure", family="Tests", description="test double", params=())

    def run(self, image, params, query):
        if image.device.type != "cpu":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return Result((MetricsLayer("m", {"device": image.device.type}),))


def test_a_failing_gpu_hands_over_to_the_cpu_with_a_notice(qtbot):
    worker = ComputeWorker(torch.device("meta"))  # stands in for an accelerator
    try:
        with qtbot.waitSignal(worker.deviceChanged, timeout=WAIT_MS) as changed, \
                qtbot.waitSignal(worker.frameReady, timeout=WAIT_MS) as frame:
            worker.submit(Request(1, "_test_gpu_failure", (), None, 1, IMAGE))
        assert changed.args[0].startswith("cpu") and "computing on the CPU" in changed.args[1]
        assert frame.args[0].result.layers[0].values == {"device": "cpu"}
        assert "CPU" in frame.args[0].notice
        assert worker.device.type == "cpu"
    finally:
        worker.shutdown()


@register
class GpuSettleFailure(Operator):
    """Its fast layers work anywhere; its settling layers fail like a broken accelerator."""

    spec = OperatorSpec(name="_test_gpu_settle_failure", title="GPU settle failure", family="Tests",
                        description="test double", params=())

    def run(self, image, params, query):
        fast = (MetricsLayer("m", {"device": image.device.type}),)

        def settle() -> Result:
            if image.device.type != "cpu":
                raise RuntimeError("CUDA error: out of memory")
            return Result(fast + (MetricsLayer("late", {"device": image.device.type}),))

        return Result(fast, settle=settle, pending=("late",))


def test_a_gpu_failing_while_settling_hands_the_request_to_the_cpu():
    worker = ComputeWorker(torch.device("meta"), synchronous=True)
    frames, changes = [], []
    worker.frameReady.connect(frames.append)
    worker.deviceChanged.connect(lambda *args: changes.append(args))
    worker.submit(Request(1, "_test_gpu_settle_failure", (), None, 1, IMAGE))
    assert frames[-1].settled and frames[-1].result.names == ("m", "late")
    assert frames[-1].result.layers[1].values == {"device": "cpu"}
    assert worker.device.type == "cpu"


def test_settling_layers_follow_in_a_second_frame_of_the_same_request(sync_worker):
    frames = []
    sync_worker.frameReady.connect(frames.append)
    sync_worker.submit(request(1, settle=1.0))
    fast, full = frames
    assert (fast.stamp, fast.settled, fast.result.names, fast.result.pending) == (1, False, ("m",), ("late",))
    assert (full.stamp, full.settled, full.result.names) == (1, True, ("m", "late"))


def test_a_newer_request_supersedes_the_last_ones_settling_layers():
    """A drag never waits for settling work: only the newest request's settle ever runs."""
    engine = ComputeEngine(torch.device("cpu"))
    for tag in range(1, 9):
        frame = engine.compute(request(tag, tag=tag, settle=1.0))
        assert isinstance(frame, Frame) and not frame.settled
    settled = engine.settle()
    assert settled.stamp == 8 and settled.settled and Probe.settled == [8]
    assert engine.settle() is None


def test_failures_are_plain_data():
    outcome = ComputeEngine(torch.device("cpu")).compute(request(1, fail=1.0))
    assert isinstance(outcome, Failure) and outcome.message == "the probe was told to fail"


def teardown_module():
    for name in ("_test_probe", "_test_gpu_failure", "_test_gpu_settle_failure"):
        unregister(name)


def test_a_request_back_to_the_values_last_computed_is_answered_under_its_own_stamp(sync_worker):
    """A slider moved away and back before the worker got to it: no compute, but the window
    learns that its newest stamp is drawn (else it would wait for it forever)."""
    frames = []
    sync_worker.frameReady.connect(frames.append)
    sync_worker.submit(request(1, tag=1))
    sync_worker.submit(request(3, tag=1))  # stamp 2 (tag=2) was replaced before it ran
    assert [f.stamp for f in frames] == [1, 3] and Probe.runs == [1]
    assert frames[1].result is frames[0].result  # the same arrays: nothing is redrawn


def test_a_repeated_request_with_layers_still_settling_gets_them_under_its_stamp():
    engine = ComputeEngine(torch.device("cpu"))
    first = engine.compute(request(1, tag=4, settle=1.0))
    again = engine.repeat(request(2, tag=4, settle=1.0))
    assert (first.settled, again.stamp, again.settled) == (False, 2, False)
    assert engine.settle().stamp == 2
