"""Helpers for ``job_<action>`` generators (live fits, training): how often a running job
builds a frame for the view."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

from backends.timing import now

T = TypeVar("T")

FRAME_INTERVAL_S = 0.1  # live frames of a running job, at most this often...
FRAME_SHARE = 0.25  # ...and at most this share of the job's time, however slow a frame is


class FrameThrottle:
    """When a running job builds a live frame: at most every ``interval_s``, and never more than
    ``share`` of the time, so a slow machine gets fewer frames rather than a slow job."""

    def __init__(self, interval_s: float = FRAME_INTERVAL_S, share: float = FRAME_SHARE) -> None:
        self.interval_s, self.share = interval_s, share
        self._next = 0.0

    def due(self, last_step: bool = False) -> bool:
        """Whether a frame is due now; the last step always gets one."""
        return last_step or now() >= self._next

    def built(self, started: float) -> None:
        """A frame whose building began at ``started`` (a :func:`backends.timing.now`) is done."""
        finished = now()
        self._next = finished + max(self.interval_s, (finished - started) * (1.0 / self.share - 1.0))

    def frame(self, build: Callable[[], T], last_step: bool = False) -> Optional[T]:
        """``build()`` when a frame is due, else None."""
        if not self.due(last_step):
            return None
        started = now()
        out = build()
        self.built(started)
        return out
