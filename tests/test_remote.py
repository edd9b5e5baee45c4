"""The compute worker as a Ray actor and batches as Ray tasks, on a private Ray instance on the
loopback interface: the same frames and files as on this machine, newest request wins across the
network, a lost actor hands over to the local worker with a notice, and every message is plain
data. Skipped where Ray is not installed (the ``cluster`` extra)."""

from __future__ import annotations

import json
import time
from dataclasses import fields, is_dataclass

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from backends.imageio import load_image  # noqa: E402
from backends.layers import INPUT, ImageLayer, PointSet, PointsLayer, Result  # noqa: E402
from backends.registry import validated_params  # noqa: E402
from explorer.engine import ComputeEngine  # noqa: E402
from explorer.image_sources import sample_path  # noqa: E402
from explorer.messages import Frame, Request, freeze  # noqa: E402
from explorer.remote_codec import outcome_from_wire, outcome_to_wire, result_from_wire, result_to_wire  # noqa: E402
from explorer.worker import ComputeWorker  # noqa: E402

WAIT_MS = 30_000
START_COST = {}


@pytest.fixture(scope="session")
def ray_local():
    """One private Ray for the session (its start is the slow part: about 2-3 s here)."""
    from explorer.cluster import connect

    t0 = time.perf_counter()
    connect("local")
    START_COST["s"] = time.perf_counter() - t0
    yield
    ray.shutdown()


@pytest.fixture
def pixels():
    return load_image(sample_path("chelsea"), 160).pixels


def request(stamp: int, pixels, operator: str = "dilated", **params) -> Request:
    return Request(stamp, operator, freeze(validated_params(operator, params)), None, 7, pixels)


@pytest.fixture(scope="module")
def shared_actor(ray_local):
    """One engine actor for the tests that leave it alive (an actor's start imports torch and the
    operators in a new process: seconds on a loaded machine)."""
    from explorer.remote_actor import actor_class

    actor = actor_class().remote()
    yield actor
    ray.kill(actor)


def remote_worker(actor):
    """A RemoteWorker on ``actor``, with a local worker standing by, recording its frames."""
    from explorer.remote import RemoteWorker

    worker = RemoteWorker(actor, ComputeWorker(torch.device("cpu")))
    frames: list[Frame] = []
    worker.frameReady.connect(frames.append)
    worker.frames = frames
    return worker


@pytest.fixture
def remote(shared_actor, qtbot):
    worker = remote_worker(shared_actor)
    yield worker
    worker.shutdown()


def settled_frame(qtbot, worker, stamp: int) -> Frame:
    qtbot.waitUntil(lambda: any(f.stamp == stamp and f.settled for f in worker.frames), timeout=WAIT_MS)
    return [f for f in worker.frames if f.stamp == stamp and f.settled][-1]


def assert_same(a, b, where: str = "") -> None:
    """Equal structure and values; display arrays within one level (thread counts differ)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), atol=1, rtol=0, err_msg=where)
    elif is_dataclass(a):
        assert type(a) is type(b), where
        for f in fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if not str(k).endswith(" ms"):  # timings are measured, not computed
                assert_same(a[k], b[k], f"{where}[{k}]")
    else:
        assert a == b, where


def assert_same_result(a: Result, b: Result) -> None:
    assert a.names == b.names
    assert_same(a.layers, b.layers, "layers")


def test_local_ray_is_on_the_loopback_interface(ray_local):
    print(f"local Ray start: {START_COST.get('s', 0):.2f} s")
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_messages_are_plain_data_and_round_trip():
    result = Result((ImageLayer("Output", np.arange(12, dtype=np.uint8).reshape(2, 2, 3), levels=(0.0, 255.0)),
                     PointsLayer("P", (PointSet(np.zeros((3, 2), np.float32), label="a"),), background=INPUT)),
                    notes=("n",), pending=("late",))
    wire = result_to_wire(result)

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return isinstance(v, (np.ndarray, str, int, float, bool, type(None)))

    assert plain(wire)
    back = result_from_wire(wire)
    assert back.layer("P").background is INPUT and back.pending == ("late",)
    assert_same_result(back, result)
    frame = Frame(3, "x", result, 1.5, "", True)
    held = outcome_from_wire(outcome_to_wire(frame, frozenset({"P"})))
    assert held.result.names == ("Output",) and set(held.result.pending) == {"late", "P"} and not held.settled
    with pytest.raises(ValueError):
        result_from_wire({"layers": [{"kind": "image", "name": "x", "image": np.zeros(1), "evil": 1}]})


def test_an_operator_through_the_remote_worker_equals_the_local_result(remote, qtbot, pixels):
    req = request(1, pixels, dilation=3)
    remote.submit(req)
    frame = settled_frame(qtbot, remote, 1)
    local = ComputeEngine(torch.device("cpu")).compute(req)
    assert isinstance(local, Frame)
    assert_same_result(frame.result, local.result)
    assert "remote" in remote.description


def test_hidden_panels_follow_when_the_requests_rest(remote, qtbot, pixels):
    req = request(1, pixels, dilation=2)
    local = ComputeEngine(torch.device("cpu")).compute(req).result
    hidden = local.names[-1]
    remote.hidden_panels = lambda: {hidden}
    remote.submit(req)
    qtbot.waitUntil(lambda: any(f.settled for f in remote.frames), timeout=WAIT_MS)
    first, last = remote.frames[0], remote.frames[-1]
    assert hidden not in first.result.names and hidden in first.result.pending and not first.settled
    assert_same_result(last.result, local)


def test_newest_request_wins_across_the_remote_worker(remote, qtbot, pixels):
    busy = remote.actor.__ray_call__.remote(lambda host: time.sleep(1.0))  # the actor is busy meanwhile
    for stamp in range(1, 21):
        remote.submit(request(stamp, pixels, dilation=1 + stamp % 5))
    settled_frame(qtbot, remote, 20)
    ray.get(busy)
    stamps = [f.stamp for f in remote.frames]
    assert stamps == sorted(stamps) and stamps[-1] == 20
    assert set(stamps) <= {1, 20}  # one in flight, one pending: the 18 between were replaced, never computed


def test_killing_the_actor_mid_request_falls_back_to_the_local_worker(ray_local, qtbot, pixels):
    from explorer.remote_actor import actor_class

    remote = remote_worker(actor_class().remote())
    notices = []
    remote.deviceChanged.connect(lambda text, notice: notices.append((text, notice)))
    remote.actor.__ray_call__.remote(lambda host: time.sleep(30))
    req = request(1, pixels, dilation=4)
    remote.submit(req)
    qtbot.waitUntil(lambda: remote.busy, timeout=WAIT_MS)  # the request is in flight
    ray.kill(remote.actor)
    frame = settled_frame(qtbot, remote, 1)  # recomputed by the local worker
    assert remote.lost and notices and "lost" in notices[0][1] and "local" in notices[0][0]
    assert_same_result(frame.result, ComputeEngine(torch.device("cpu")).compute(req).result)
    remote.submit(request(2, pixels, dilation=5))  # and the app goes on, locally
    settled_frame(qtbot, remote, 2)
    remote.shutdown()


def test_a_job_streams_progress_and_stops_on_stop(remote, qtbot, pixels):
    progress, ends = [], []
    remote.jobProgress.connect(progress.append)
    remote.jobEnded.connect(ends.append)
    req = request(1, pixels, "spatial_transformer")
    remote.start_job(req, "fit")
    qtbot.waitUntil(lambda: len(progress) >= 2, timeout=WAIT_MS)
    remote.stop_job()
    qtbot.waitUntil(lambda: bool(ends), timeout=WAIT_MS)
    assert ends[-1].how in ("stopped", "done") and not ends[-1].failed
    assert all(p.operator == "spatial_transformer" for p in progress)


def _write_images(folder, count: int = 3) -> None:
    import cv2

    folder.mkdir()
    for i, name in enumerate(["chelsea", "coins", "brick"][:count]):
        rgb = (load_image(sample_path(name), 96).pixels * 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"img{i}.png"), rgb[..., ::-1])
    (folder / "broken.png").write_bytes(b"\x89PNG not really an image")


def test_a_batch_on_ray_equals_the_local_batch_and_names_the_corrupt_file(ray_local, tmp_path):
    import cv2

    from explorer.batch import MANIFEST, run_batch
    from explorer.cluster import RayExecutor

    _write_images(tmp_path / "in")
    params = validated_params("dilated", {"dilation": 3})
    local = run_batch(tmp_path / "in", tmp_path / "local", "dilated", params, 96, torch.device("cpu"))
    on_ray = run_batch(tmp_path / "in", tmp_path / "ray", "dilated", params, 96, torch.device("cpu"),
                       executor=RayExecutor("local"))
    assert [i.file for i in on_ray.failed] == ["broken.png"] and "broken.png" in on_ray.failed[0].error
    assert on_ray.items == local.items  # names, outputs, layers, sha256s, errors
    manifest = json.loads((tmp_path / "ray" / MANIFEST).read_text())
    assert manifest["failed"] == ["broken.png"] and manifest["device"].startswith("ray")
    for item in local.items:
        if item.output:
            a = cv2.imread(str(tmp_path / "local" / item.output))
            b = cv2.imread(str(tmp_path / "ray" / item.output))
            assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_the_batch_dialog_runs_each_image_as_a_ray_task_when_given_an_address(ray_local, app, qtbot, tmp_path):
    from explorer import batch_dialog
    from tests.test_batch import folder_with_a_broken_file

    folder = folder_with_a_broken_file(tmp_path)
    dialog = batch_dialog.show_dialog(app.window)
    dialog.in_edit.setText(str(folder))
    dialog.out_edit.setText(str(tmp_path / "out"))
    dialog.ray_edit.setText("local")
    assert dialog.start() is not None
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=120_000)
    assert [(i.file, i.status) for i in dialog.report.items] == [("broken.jpg", "failed"), ("chelsea.png", "done"),
                                                                 ("coins.png", "done")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["device"].startswith("ray") and manifest["failed"] == ["broken.jpg"]
    assert "broken.jpg: " in dialog.status.toPlainText()


def test_a_sweeps_frames_computed_as_ray_tasks_are_the_frames_the_window_films(ray_local, app, tmp_path):
    import cv2

    from explorer.cluster import RayExecutor
    from explorer.cluster_sweep import prefetch_sweep
    from explorer.sweep import write_sweep

    values = [1, 3, 5]
    worker = app.scheduler.worker
    assert prefetch_sweep(RayExecutor("local"), app.scheduler, "dilation", values) == 3
    template = app.scheduler.make_request(new_stamp=False)
    engine = ComputeEngine(torch.device("cpu"))
    for value in values:
        request = Request(0, "dilated", freeze(validated_params("dilated", {**dict(template.params), "dilation": value})),
                          template.query, template.image_key, template.image)
        assert_same_result(worker.prefetched[request.key].result, engine.compute(request).result)
    out = tmp_path / "sweep.mp4"
    assert write_sweep(app, "dilation", values, str(out)) == 3
    assert worker.prefetched == {}  # every value was drawn from its Ray task's frame, none computed here
    video = cv2.VideoCapture(str(out))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    video.release()


def test_a_jobs_arguments_travel_with_the_request_as_plain_data(pixels):
    from dataclasses import replace

    from explorer.remote_codec import request_from_wire, request_to_wire

    sent = replace(request(3, pixels), job_args=freeze({"source": {"kind": "python", "path": "/models/net.py",
                                                                   "weights": "", "name": ""}}))
    back = request_from_wire(request_to_wire(sent), pixels)
    assert back.job_args == sent.job_args and back.key == sent.key
