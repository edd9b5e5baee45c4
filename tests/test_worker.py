"""The compute worker: newest request wins, unchanged requests are skipped, errors come back
as data, long jobs step, report and stop."""

import threading
import time
from typing import Any, Iterator, Mapping

import numpy as np
import pytest
import torch

from backends.layers import CurveLayer, MetricsLayer, Result
from backends.params import FloatParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register, unregister
from explorer.worker import SETTLE_DELAY_S, ComputeWorker, Request, freeze

IMAGE = np.zeros((8, 8, 3), np.float32)


@register
class SlowProbe(Operator):
    """A test operator: sleeps ``delay`` seconds, fails on ``fail``, counts its runs."""

    spec = OperatorSpec(
        name="_test_probe", title="Probe", family="Tests", description="test double",
        params=(FloatParam("delay", 0.0, 0.0, 5.0), FloatParam("fail", 0.0, 0.0, 1.0), FloatParam("settle", 0.0, 0.0, 1.0)),
        actions=(Action("count", "Count"),),
    )
    runs: list[float] = []
    settled: list[float] = []
    lock = threading.Lock()

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        time.sleep(params["delay"])
        if params["fail"]:
            raise ValueError("the probe was told to fail")
        with self.lock:
            SlowProbe.runs.append(params["delay"])
        fast = (MetricsLayer("m", {"delay": params["delay"], "device": str(image.device)}),)
        if not params["settle"]:
            return Result(fast)

        def settle() -> Result:
            with self.lock:
                SlowProbe.settled.append(params["delay"])
            return Result(fast + (CurveLayer("late", {"x": (np.arange(3), np.ones(3))}),))

        return Result(fast, settle=settle, pending=("late",))

    def start(self, action: str, image, params, query) -> Iterator[JobUpdate]:
        for i in range(1000):
            time.sleep(0.01)
            yield JobUpdate(i / 1000, f"step {i}", Result((CurveLayer("loss", {"loss": (np.arange(i + 1), np.ones(i + 1))}),)))


def request(stamp: int, **params) -> Request:
    full = {"delay": 0.0, "fail": 0.0, "settle": 0.0, **params}
    return Request(stamp, "_test_probe", freeze(full), None, 1, IMAGE)


@pytest.fixture(autouse=True, scope="module")
def _registered_probe():
    register(SlowProbe)
    yield
    unregister(SlowProbe.spec.name)


@pytest.fixture
def worker(qtbot):
    SlowProbe.runs, SlowProbe.settled = [], []
    w = ComputeWorker(torch.device("cpu"))
    yield w
    w.shutdown()


def test_newest_request_wins_and_stale_ones_are_dropped(worker, qtbot):
    frames = []
    worker.frameReady.connect(frames.append)
    worker.submit(request(1, delay=0.3))
    time.sleep(0.05)  # the worker is now busy with request 1
    for stamp in range(2, 12):
        worker.submit(request(stamp, delay=0.001 * stamp))
    qtbot.waitUntil(lambda: bool(frames) and frames[-1].stamp == 11, timeout=5000)
    assert [f.stamp for f in frames] == [1, 11]
    assert SlowProbe.runs == [0.3, 0.011]


def test_an_unchanged_request_is_not_recomputed_unless_forced(worker, qtbot):
    frames = []
    worker.frameReady.connect(frames.append)
    worker.submit(request(1))
    qtbot.waitUntil(lambda: len(frames) == 1, timeout=5000)
    worker.submit(request(2))
    time.sleep(0.2)
    qtbot.wait(50)
    assert len(frames) == 1
    worker.submit(request(3), force=True)
    qtbot.waitUntil(lambda: len(frames) == 2, timeout=5000)


def test_an_operator_exception_comes_back_as_a_failure(worker, qtbot):
    with qtbot.waitSignal(worker.failed, timeout=5000) as blocker:
        worker.submit(request(1, fail=1.0))
    failure = blocker.args[0]
    assert failure.stamp == 1 and failure.message == "the probe was told to fail"
    assert "Traceback" in failure.detail
    with qtbot.waitSignal(worker.frameReady, timeout=5000):
        worker.submit(request(2))


def test_a_job_reports_progress_and_stops_on_request(worker, qtbot):
    progress = []
    worker.jobProgress.connect(progress.append)
    worker.start_job(request(1), "count")
    qtbot.waitUntil(lambda: len(progress) >= 3, timeout=5000)
    assert progress[-1].result.layers[0].name == "loss"
    with qtbot.waitSignal(worker.jobEnded, timeout=5000) as ended:
        worker.stop_job()
    assert ended.args == ["_test_probe", "count", "stopped"]
    assert not worker.job_running


def test_requests_are_served_while_a_job_runs(worker, qtbot):
    worker.start_job(request(1), "count")
    with qtbot.waitSignal(worker.frameReady, timeout=5000) as frame:
        worker.submit(request(2, delay=0.002))
    assert frame.args[0].stamp == 2
    worker.stop_job()


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
        with qtbot.waitSignal(worker.deviceChanged, timeout=5000) as changed, \
                qtbot.waitSignal(worker.frameReady, timeout=5000) as frame:
            worker.submit(Request(1, "_test_gpu_failure", (), None, 1, IMAGE))
        assert changed.args[0].startswith("cpu") and "computing on the CPU" in changed.args[1]
        assert frame.args[0].result.layers[0].values == {"device": "cpu"}
        assert "CPU" in frame.args[0].notice
        assert worker.device.type == "cpu"
    finally:
        worker.shutdown()
        unregister(GpuOnlyFailure.spec.name)


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


def test_a_gpu_failing_while_settling_hands_the_request_to_the_cpu(qtbot):
    worker = ComputeWorker(torch.device("meta"))
    frames = []
    worker.frameReady.connect(frames.append)
    try:
        with qtbot.waitSignal(worker.deviceChanged, timeout=5000):
            worker.submit(Request(1, "_test_gpu_settle_failure", (), None, 1, IMAGE))
        qtbot.waitUntil(lambda: bool(frames) and frames[-1].settled, timeout=5000)
        assert frames[-1].result.names == ("m", "late") and frames[-1].result.layers[1].values == {"device": "cpu"}
        assert worker.device.type == "cpu"
    finally:
        worker.shutdown()
        unregister(GpuSettleFailure.spec.name)


def test_settling_layers_follow_in_a_second_frame_of_the_same_request(worker, qtbot):
    frames = []
    worker.frameReady.connect(frames.append)
    worker.submit(request(1, settle=1.0))
    qtbot.waitUntil(lambda: len(frames) == 2, timeout=5000)
    fast, full = frames
    assert (fast.stamp, fast.settled, fast.result.names, fast.result.pending) == (1, False, ("m",), ("late",))
    assert (full.stamp, full.settled, full.result.names) == (1, True, ("m", "late"))


def test_a_drag_gets_fast_frames_and_settles_once_when_it_rests(worker, qtbot):
    """Requests closer together than the settle delay never wait for settling work."""
    frames = []
    worker.frameReady.connect(frames.append)
    for stamp in range(1, 9):
        worker.submit(request(stamp, delay=0.001 * stamp, settle=1.0))
        time.sleep(SETTLE_DELAY_S / 8)
    qtbot.waitUntil(lambda: bool(frames) and frames[-1].settled, timeout=5000)
    time.sleep(3 * SETTLE_DELAY_S)
    assert SlowProbe.settled[-1] == 0.008 and len(SlowProbe.settled) <= 2  # 2: a scheduler hiccup mid-drag
    assert [f.stamp for f in frames if f.settled][-1] == 8
