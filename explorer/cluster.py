"""Joining Ray: a local instance on the loopback interface, or an existing cluster, with Ray's
token authentication kept on; and the executor that runs a batch's images as Ray tasks.

Ray is an optional extra (``pip install -e ".[cluster]"``): nothing here imports it until asked,
and :class:`ClusterError` says plainly what is missing.

    python main.py IMG --remote local                  # a private Ray on 127.0.0.1, for trying it
    python main.py IMG --remote ray://HEAD:10001        # the worker on the cluster's best node
    python main.py --batch in/ --out out/ --ray ray://HEAD:10001
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

LOCAL = "local"
LOCAL_CPUS = 2
IN_FLIGHT_PER_CPU = 2  # batch tasks queued ahead per cluster CPU: workers never idle, memory stays bounded
TOKEN_FILE = Path.home() / ".ray" / "auth_token"


class ClusterError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or it cannot be reached safely."""


def _token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or (Path(path).is_file() if path else TOKEN_FILE.is_file())


def connect(address: str, local_cpus: int = LOCAL_CPUS) -> str:
    """Joins Ray (once per process) and returns a description of the cluster.

    ``local`` starts a private instance whose every service listens on 127.0.0.1 only (Ray's
    local-only mode) with a token Ray makes on first use. Any other address is an existing
    cluster: its token must be here (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN_PATH`` or
    ``RAY_AUTH_TOKEN``), and token authentication is switched on for this process, since Ray
    does not assume it for an explicit address."""
    if address == LOCAL:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every service binds to the loopback address
    elif os.environ.get("RAY_AUTH_MODE", "token") != "disabled":
        if not _token_available():
            raise ClusterError(f"no Ray token here: copy the head node's ~/.ray/auth_token to {TOKEN_FILE} "
                               "(chmod 600), or set RAY_AUTH_TOKEN_PATH; see README, 'Beyond one machine'")
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray
        from ray._private import ray_constants
    except ImportError:
        raise ClusterError('Ray is not installed: pip install -e ".[cluster]"') from None
    if address == LOCAL:
        ray_constants.ENABLE_RAY_CLUSTER = False  # when ray was imported before the variable was set
    if not ray.is_initialized():
        try:
            if address == LOCAL:
                ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=local_cpus,
                         log_to_driver=False, configure_logging=False)
                if TOKEN_FILE.is_file():
                    TOKEN_FILE.chmod(0o600)  # Ray writes it readable by all
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:
            raise ClusterError(f"could not join Ray at {address}: {exc}".splitlines()[0]) from None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return f"Ray {ray.__version__}, {len(ray.nodes())} node(s), {cpus} CPU(s), {gpus} GPU(s)"


def shutdown() -> None:
    import ray

    ray.shutdown()


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


class RayExecutor:
    """Maps a function over items as Ray tasks, results in the items' order, a bounded number
    queued ahead; :meth:`cancel` drops what has not finished. Items and results are plain data."""

    def __init__(self, address: str, cpus_per_task: float = 1.0, local_cpus: int = LOCAL_CPUS) -> None:
        self.description = connect(address, local_cpus)
        import ray

        self._ray = ray
        self._cpus = cpus_per_task
        self._window = max(1, int(ray.cluster_resources().get("CPU", 1) / cpus_per_task) * IN_FLIGHT_PER_CPU)
        self._refs: deque = deque()

    @property
    def device(self) -> str:
        return f"ray ({self.description})"

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        task = self._ray.remote(num_cpus=self._cpus, max_retries=0)(fn)
        source = iter(items)
        refs = self._refs
        for item in source:
            refs.append(task.remote(item))
            if len(refs) >= self._window:
                break
        while refs:
            ref = refs.popleft()
            for item in source:  # keep the window full while this result is awaited
                refs.append(task.remote(item))
                break
            yield self._ray.get(ref)

    def cancel(self) -> None:
        while self._refs:
            self._ray.cancel(self._refs.popleft(), force=True)


# -- a batch's images as Ray tasks (explorer/batch.py run_batch(executor=...)) -------------------
_OPERATORS: dict = {}  # per worker process: an operator's models load once, not once per image


def _shown_name(name: str) -> str:
    """The file's name as the image loader says it in errors."""
    return name if len(name) <= 80 else name[:60] + "…" + name[-12:]


def read_task(path: Path, operator: str, params, max_side: int) -> dict:
    """One image's task as plain data: its bytes, read here, and what to do with them."""
    import hashlib

    from backends.imageio import MAX_FILE_BYTES

    task = {"file": path.name, "stem": path.stem, "operator": operator, "params": dict(params),
            "max_side": max_side, "data": b"", "sha256": "", "error": ""}
    try:
        data = path.read_bytes()
        task["sha256"] = hashlib.sha256(data).hexdigest()
        if len(data) > MAX_FILE_BYTES:
            task["error"] = (f"{_shown_name(path.name)}: {len(data) / 2**20:.0f} MiB is larger than the "
                             f"{MAX_FILE_BYTES >> 20} MiB limit")
        task["data"] = data
    except OSError as exc:
        from explorer.batch import error_line

        task["error"] = error_line(exc)
    return task


def batch_task(task: dict) -> dict:
    """Runs on a Ray worker: decodes the bytes, computes, returns the PNG bytes (plain data)."""
    import numpy as np

    from backends.device import pick_device
    from backends.imageio import ImageLoadError, decode_image
    from backends.registry import operator_class
    from explorer.batch import BATCH_ERRORS, compute_png, error_line

    out = {"file": task["file"], "stem": task["stem"], "sha256": task["sha256"], "error": task["error"],
           "png": b"", "layer": ""}
    if out["error"]:
        return out
    try:
        name = _shown_name(task["file"])
        if not task["data"]:
            raise ImageLoadError(f"{name}: the file is empty")
        image = decode_image(np.frombuffer(task["data"], np.uint8), name, task["max_side"])
        op = _OPERATORS.get(task["operator"])
        if op is None:
            op = _OPERATORS[task["operator"]] = operator_class(task["operator"])()
        out["png"], out["layer"] = compute_png(op, task["operator"], image, task["file"], task["params"],
                                               pick_device(None))
    except BATCH_ERRORS as exc:
        out["error"] = error_line(exc)
    return out


def write_result(result: dict, out: Path):
    """A task's result written here, as a local run writes it; the manifest's item."""
    from backends.models.weights import write_atomically
    from explorer.batch import Item, error_line

    item = Item(file=result["file"], status="failed", sha256=result["sha256"], error=result["error"])
    if not item.error:
        target = out / f"{result['stem']}.png"
        try:
            write_atomically(target, result["png"])
            item.status, item.output, item.layer = "done", target.name, result["layer"]
        except OSError as exc:
            item.error = error_line(exc)
    return item
