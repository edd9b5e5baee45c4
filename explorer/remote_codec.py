"""The remote worker's wire form: requests and outcomes as plain data (dicts, lists, strings,
numbers, numpy arrays), and back.

Whatever a peer sends is rebuilt here from known layer kinds and known fields only, so the app's
own protocol never hands a peer's object to pickle: a result is data, never code. (Ray's transport
underneath serialises these values itself; see docs/ARCHITECTURE.md, "Remote worker and cluster".)
Qt-free and torch-free: the actor on the remote node imports it too.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional, Union

import numpy as np

from backends.layers import INPUT, LAYER_TYPES, InputImage, PointSet, Result
from explorer.messages import Failure, Frame, JobEnd, JobFrame, Request

KINDS = {t.kind: t for t in LAYER_TYPES}
_INPUT_MARK = {"input_image": True}  # the layer's background is the request's own image
Outcome = Union[Frame, Failure, JobFrame, JobEnd]


class WireError(ValueError):
    """A message that is not one of ours: an unknown kind or field, or a value of the wrong type."""


# -- values --------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, InputImage):
        return dict(_INPUT_MARK)
    if isinstance(value, PointSet):
        return {"pointset": {f.name: _plain(getattr(value, f.name)) for f in fields(PointSet)}}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic, str, int, float, bool, type(None))):
        return value
    raise WireError(f"not plain data: {type(value).__name__}")


def _rebuilt(value: Any) -> Any:
    if isinstance(value, dict):
        if value == _INPUT_MARK:
            return INPUT
        if set(value) == {"pointset"}:
            return PointSet(**_known(PointSet, value["pointset"]))
        return {str(k): _rebuilt(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_rebuilt(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic, str, int, float, bool, type(None))):
        return value
    raise WireError(f"not plain data: {type(value).__name__}")


def _known(cls: type, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise WireError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return {k: _rebuilt(v) for k, v in data.items()}


# -- results -------------------------------------------------------------------------------------
def result_to_wire(result: Result, withheld: frozenset = frozenset()) -> dict:
    """The result's layers (less ``withheld``, which are named as pending instead)."""
    layers = [{"kind": lay.kind, **{f.name: _plain(getattr(lay, f.name)) for f in fields(lay)}}
              for lay in result.layers if lay.name not in withheld]
    held = tuple(lay.name for lay in result.layers if lay.name in withheld)
    return {"layers": layers, "notes": tuple(map(str, result.notes)), "pending": tuple(result.pending) + held}


def result_from_wire(data: dict) -> Result:
    layers = []
    for item in data["layers"]:
        item = dict(item)
        cls = KINDS.get(item.pop("kind", None))
        if cls is None:
            raise WireError("a layer of an unknown kind")
        layers.append(cls(**_known(cls, item)))
    return Result(tuple(layers), tuple(str(n) for n in data.get("notes", ())),
                  pending=tuple(str(n) for n in data.get("pending", ())))


# -- requests and outcomes -----------------------------------------------------------------------
def request_to_wire(request: Request) -> dict:
    """Everything but the pixels, which travel once per image key."""
    return {"stamp": request.stamp, "operator": request.operator, "params": [list(p) for p in request.params],
            "query": None if request.query is None else tuple(request.query), "image_key": request.image_key,
            "job_args": [[k, _plain(v)] for k, v in request.job_args]}


def request_from_wire(data: dict, image: np.ndarray) -> Request:
    query = data["query"]
    return Request(int(data["stamp"]), str(data["operator"]), tuple((str(k), _rebuilt(v)) for k, v in data["params"]),
                   None if query is None else (int(query[0]), int(query[1])), data["image_key"], image,
                   tuple((str(k), _rebuilt(v)) for k, v in data.get("job_args", ())))


def outcome_to_wire(outcome: Optional[Outcome], withheld: frozenset = frozenset()) -> Optional[dict]:
    """A frame's ``withheld`` layers are named pending and the frame marked unsettled: they follow
    when the requests rest (the remote worker's settle call)."""
    if outcome is None:
        return None
    if isinstance(outcome, Frame):
        held = withheld & set(outcome.result.names)
        return {"type": "frame", "stamp": outcome.stamp, "operator": outcome.operator,
                "result": result_to_wire(outcome.result, frozenset(held)), "compute_ms": float(outcome.compute_ms),
                "notice": outcome.notice, "settled": outcome.settled and not held}
    if isinstance(outcome, Failure):
        return {"type": "failure", "stamp": outcome.stamp, "operator": outcome.operator,
                "message": outcome.message, "detail": outcome.detail}
    if isinstance(outcome, JobFrame):
        return {"type": "job_frame", "operator": outcome.operator, "action": outcome.action,
                "progress": outcome.progress, "message": outcome.message, "step_ms": float(outcome.step_ms),
                "result": None if outcome.result is None else result_to_wire(outcome.result)}
    if isinstance(outcome, JobEnd):
        return {"type": "job_end", "operator": outcome.operator, "action": outcome.action, "how": outcome.how,
                "failed": bool(outcome.failed)}
    raise WireError(f"not an outcome: {type(outcome).__name__}")


def outcome_from_wire(data: Optional[dict]) -> Optional[Outcome]:
    if data is None:
        return None
    kind = data.get("type")
    if kind == "frame":
        return Frame(int(data["stamp"]), str(data["operator"]), result_from_wire(data["result"]),
                     float(data["compute_ms"]), str(data["notice"]), bool(data["settled"]))
    if kind == "failure":
        return Failure(int(data["stamp"]), str(data["operator"]), str(data["message"]), str(data["detail"]))
    if kind == "job_frame":
        result = None if data["result"] is None else result_from_wire(data["result"])
        progress = None if data["progress"] is None else float(data["progress"])
        return JobFrame(str(data["operator"]), str(data["action"]), progress, str(data["message"]), result,
                        float(data["step_ms"]))
    if kind == "job_end":
        return JobEnd(str(data["operator"]), str(data["action"]), str(data["how"]), bool(data["failed"]))
    raise WireError(f"an outcome of an unknown type {kind!r}")
