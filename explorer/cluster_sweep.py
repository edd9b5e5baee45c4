"""A sweep's frames as Ray tasks (``--sweep ... --video ... --ray ADDRESS``).

Every value of the sweep is one task: it computes the operator on the image with that value and
encodes the layers for display, in a worker process of the cluster, and returns the frame as plain
data (explorer/remote_codec.py). The frames come back in order and are handed to the window's
worker as prefetched answers (``ComputeWorker.prefetched``): when the sweep sets the value, the
window draws the cluster's frame instead of computing it, then grabs it as for a local sweep, so
the video is the same. Each task carries the pixels (a sweep has one image).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

from backends.registry import validated_params
from explorer.messages import freeze
from explorer.remote_codec import outcome_from_wire, request_to_wire

_HOSTS: dict = {}  # per worker process: one engine, its operators' models loaded once


def frame_task(task: dict) -> Optional[dict]:
    """One sweep value on a cluster worker: the complete frame (settled), as plain data."""
    from explorer.remote_actor import EngineHost

    host = _HOSTS.get("host")
    if host is None:
        host = _HOSTS["host"] = EngineHost()
    request = task["request"]
    host.set_image(request["image_key"], task["pixels"])
    wire = host.compute(request, force=True)
    while (more := host.settle()) is not None:  # settling layers: the last frame is whole
        wire = more
    return wire


def prefetch_sweep(executor, scheduler, name: str, values: Sequence[Any],
                   progress: Optional[Callable[[int, int], None]] = None) -> int:
    """Computes every value's frame on ``executor`` (explorer/cluster.py RayExecutor) and gives
    them to the scheduler's worker; returns how many came back. A value whose task failed comes
    back as that failure, and the sweep reports it when it reaches the value."""
    template = scheduler.make_request(new_stamp=False)
    if template is None:
        return 0
    base = dict(template.params)
    requests = [replace(template, params=freeze(validated_params(template.operator, {**base, name: v})))
                for v in values]
    tasks = ({"request": request_to_wire(r), "pixels": template.image} for r in requests)
    for n, (request, wire) in enumerate(zip(requests, executor.map(frame_task, tasks)), 1):
        outcome = outcome_from_wire(wire)
        if outcome is not None:
            scheduler.worker.prefetched[request.key] = outcome
        if progress is not None:
            progress(n, len(requests))
    return len(requests)
