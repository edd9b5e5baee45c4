"""The engine on another node: what the Ray actor runs, written as a plain class.

It holds one :class:`~explorer.engine.ComputeEngine` on the node's best device and the images it
was sent (one transfer per image key), takes requests as plain data and answers with outcomes
as plain data (:mod:`explorer.remote_codec`), the layers in display form. Panels hidden on the
desk are withheld from a frame and follow when the requests rest, so a drag moves only what is
seen. Jobs step in short slices between requests, as on the local worker. Qt-free; Ray is
imported only by :func:`actor_class`.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

import numpy as np
import torch

from backends.device import pick_device
from explorer.engine import ComputeEngine
from explorer.messages import Frame, JobEnd
from explorer.remote_codec import outcome_to_wire, request_from_wire

IMAGES_KEPT = 2  # the current image and the one before: a quick switch back costs no transfer
JOB_SLICE_S = 0.1  # one step_job call returns after this long, so a new request waits at most this


class EngineHost:
    def __init__(self, device: Optional[str] = None) -> None:
        torch.set_grad_enabled(False)
        self.engine = ComputeEngine(pick_device(device))
        self._images: dict = {}
        self._last: Optional[Frame] = None  # the newest full frame, whatever was withheld from it
        self._withheld = False

    def info(self) -> dict:
        """Where this runs, for the status bar."""
        host = socket.gethostname()
        try:
            import ray

            address = ray.util.get_node_ip_address()
        except Exception:  # not under Ray (tests of the plain class)
            address = "local"
        return {"node": f"{host} ({address})", "device": self.engine.device_text, "pid": os.getpid()}

    def set_image(self, key, pixels: np.ndarray) -> None:
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError("an image is an (H, W, 3) array")
        self._images.pop(key, None)
        self._images[key] = pixels
        while len(self._images) > IMAGES_KEPT:
            self._images.pop(next(iter(self._images)))

    def has_image(self, key) -> bool:
        return key in self._images

    # -- frames --------------------------------------------------------------------------------
    def compute(self, request: dict, hidden: tuple = (), force: bool = False) -> dict:
        req = self._request(request)
        engine = self.engine
        outcome = engine.repeat(req) if not force and engine.is_current(req) else engine.compute(req)
        return self._frame(outcome, hidden)

    def settle(self, hidden: tuple = ()) -> Optional[dict]:
        """The next settling frame; once none is left, the last frame whole (the withheld layers
        too); None when there is nothing more to send."""
        if self.engine.settling:
            return self._frame(self.engine.settle(), hidden)
        if self._withheld and self._last is not None:
            self._withheld = False
            return outcome_to_wire(self._last)
        return None

    def reset_operator(self, name: str) -> None:
        self.engine.reset_operator(name)
        self._last, self._withheld = None, False

    def device_text(self) -> str:
        return self.engine.device_text

    # -- jobs ----------------------------------------------------------------------------------
    def start_job(self, request: dict, action: str) -> list:
        ended = self.engine.start_job(self._request(request), action)
        return [outcome_to_wire(ended)] if ended is not None else []

    def step_job(self, slice_s: float = JOB_SLICE_S) -> list:
        """Steps the job for up to ``slice_s``; its frames and end, as plain data."""
        from backends.timing import now

        out, t0 = [], now()
        while self.engine.job_running and now() - t0 < slice_s:
            outcome = self.engine.step_job()
            if outcome is not None:
                out.append(outcome_to_wire(outcome))
                if isinstance(outcome, JobEnd):
                    break
        return out

    def stop_job(self) -> list:
        ended = self.engine.end_job("stopped")
        return [outcome_to_wire(ended)] if ended is not None else []

    def job_running(self) -> bool:
        return self.engine.job_running

    # -- internals -----------------------------------------------------------------------------
    def _request(self, data: dict):
        key = data["image_key"]
        if key not in self._images:
            raise KeyError(f"no image sent for key {key!r}")
        return request_from_wire(data, self._images[key])

    def _frame(self, outcome, hidden: tuple) -> Optional[dict]:
        if isinstance(outcome, Frame):
            self._last = outcome
            self._withheld = bool(set(hidden) & set(outcome.result.names))
        return outcome_to_wire(outcome, frozenset(hidden))


def actor_class(num_gpus: float = 0):
    """EngineHost as a Ray actor class: one CPU (and a GPU when the cluster has one), methods run
    one at a time, in order."""
    import ray

    return ray.remote(num_cpus=1, num_gpus=num_gpus, max_restarts=0)(EngineHost)
