"""What passes between the UI and the compute worker: frozen, plain data.

Requests carry the operator name, validated parameters, the query and an image key (the pixels
travel with the first request of each key); results carry named numpy layers in display form.
Nothing here is Qt or torch, so a worker in another process or on another machine takes the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from backends.layers import Result

Params = tuple[tuple[str, Any], ...]


def freeze(params: dict[str, Any]) -> Params:
    """Parameters as a sorted tuple: hashable, comparable, the same for equal values."""
    return tuple(sorted(params.items()))


@dataclass(frozen=True)
class Request:
    stamp: int
    operator: str
    params: Params
    query: Optional[tuple[int, int]]
    image_key: int
    image: np.ndarray = field(compare=False, repr=False)
    job_args: Params = field(default=(), compare=False)  # a job's arguments (a model file chosen), plain data

    @property
    def key(self) -> tuple:
        """What the result depends on: two requests with equal keys give equal frames."""
        return (self.operator, self.params, self.query, self.image_key)


@dataclass(frozen=True)
class Frame:
    stamp: int
    operator: str
    result: Result
    compute_ms: float
    notice: str = ""
    settled: bool = True  # False: layers named in result.pending follow in a later frame of this stamp


@dataclass(frozen=True)
class Failure:
    stamp: int
    operator: str
    message: str
    detail: str = ""


@dataclass(frozen=True)
class JobFrame:
    operator: str
    action: str
    progress: Optional[float]
    message: str
    result: Optional[Result]
    step_ms: float


@dataclass(frozen=True)
class JobEnd:
    operator: str
    action: str
    how: str  # "done", "stopped", or the error's message
    failed: bool = False


@dataclass(frozen=True)
class FullResolution:
    """Image > Apply's answer: the primary picture at the original's size, and how it was made."""

    ticket: int
    operator: str
    pixels: np.ndarray = field(repr=False)  # (H, W, 3) float32 in [0, 1]
    how: str


@dataclass(frozen=True)
class RawResult:
    """Every layer of a request's result, complete and as numbers (numpy), not in display form."""

    ticket: int
    operator: str
    result: Result
