"""The one source of truth: which image, which operator, its parameters and the query point.

Widgets write here and listen here, never to each other. The state is plain data
(``SessionState``) so it serializes to JSON and can be snapshotted for undo later.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
from PySide6 import QtCore

from backends.imageio import LoadedImage
from backends.params import defaults, validate
from backends.registry import spec_of

_image_keys = itertools.count(1)


@dataclass
class SessionState:
    operator: str = "dilated"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per operator, only edited values
    query: Optional[tuple[int, int]] = None
    image_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        q = data.get("query")
        return cls(
            operator=str(data.get("operator", "dilated")),
            params={k: dict(v) for k, v in dict(data.get("params", {})).items()},
            query=(int(q[0]), int(q[1])) if q else None,
            image_source=str(data.get("image_source", "")),
        )


@dataclass(frozen=True)
class Edit:
    """One change of the state, with what it replaced: what undo takes back."""

    kind: str  # "operator", "params" (an operator's edited values, whole) or "query"
    operator: str
    before: Any
    after: Any
    name: str = ""  # the parameter, for a single parameter's change (merged while a slider drags)


class Session(QtCore.QObject):
    imageChanged = QtCore.Signal()
    operatorChanged = QtCore.Signal(str)
    paramsChanged = QtCore.Signal(str)  # the name that changed, or "" for several
    queryChanged = QtCore.Signal()
    edited = QtCore.Signal(object)  # Edit, after every change of operator, parameters or query

    def __init__(self, operator: str = "dilated", parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        spec_of(operator)  # raises UnknownOperator early
        self.state = SessionState(operator=operator)
        self._validated: dict[str, dict[str, Any]] = {}  # per operator, dropped when its values change
        self.image: Optional[LoadedImage] = None
        self.image_key = 0
        self.edit_history = None  # the applied edits (explorer/edit_history.py), where a window keeps them

    # -- image ---------------------------------------------------------------------------------
    def set_image(self, image: LoadedImage, source: str) -> None:
        self.image = image
        self.image_key = next(_image_keys)
        self.state.image_source = source
        h, w = image.pixels.shape[:2]
        if self.state.query is not None:
            qx, qy = self.state.query
            if not (0 <= qx < w and 0 <= qy < h):
                self.state.query = None
        self.imageChanged.emit()

    @property
    def pixels(self) -> Optional[np.ndarray]:
        return None if self.image is None else self.image.pixels

    # -- operator and parameters ---------------------------------------------------------------
    @property
    def operator(self) -> str:
        return self.state.operator

    def set_operator(self, name: str) -> None:
        if name == self.state.operator:
            return
        spec_of(name)
        before, self.state.operator = self.state.operator, name
        self.operatorChanged.emit(name)
        self.edited.emit(Edit("operator", name, before, name))

    def params(self, operator: Optional[str] = None) -> dict[str, Any]:
        """The full, validated parameter values of ``operator`` (the current one by default)."""
        name = operator or self.state.operator
        if name not in self._validated:
            self._validated[name] = validate(spec_of(name).params, self.state.params.get(name, {}))
        return dict(self._validated[name])

    def set_param(self, name: str, value: Any) -> None:
        """Validates first: a bad value raises ParamError and the state keeps its last good value."""
        op = self.state.operator
        edited = dict(self.state.params.get(op, {}))
        edited[name] = value
        checked = validate(spec_of(op).params, edited)
        if checked[name] == self.params()[name]:
            return
        edited[name] = checked[name]
        before = dict(self.state.params.get(op, {}))
        self.state.params[op] = edited
        self._validated[op] = checked  # one validation per edit: the request reuses it
        self.paramsChanged.emit(name)
        self.edited.emit(Edit("params", op, before, dict(edited), name))

    def set_params(self, values: dict[str, Any]) -> None:
        op = self.state.operator
        edited = {**self.state.params.get(op, {}), **values}
        self._validated[op] = validate(spec_of(op).params, edited)
        before = dict(self.state.params.get(op, {}))
        self.state.params[op] = edited
        self.paramsChanged.emit("")
        self.edited.emit(Edit("params", op, before, dict(edited)))

    def reset_params(self) -> None:
        before = self.state.params.pop(self.state.operator, None) or {}
        self._validated.pop(self.state.operator, None)
        self.paramsChanged.emit("")
        self.edited.emit(Edit("params", self.state.operator, dict(before), {}))

    def load_params(self, operator: str, values: dict[str, Any]) -> None:
        """An operator's edited values as a session file has them (already validated)."""
        self.state.params[operator] = dict(values)
        self._validated.pop(operator, None)
        if operator == self.state.operator:
            self.paramsChanged.emit("")

    def restore(self, edit: Edit, side: str) -> None:
        """Puts back ``edit.before`` (side "before") or ``edit.after``: what undo and redo do.
        Emits the same change signals, and ``edited`` again (a history applying it ignores that)."""
        value = getattr(edit, side)
        if edit.kind == "operator":
            self.set_operator(value)
        elif edit.kind == "query":
            before, self.state.query = self.state.query, value
            self.queryChanged.emit()
            self.edited.emit(Edit("query", self.state.operator, before, value))
        elif edit.kind == "params":
            if self.state.operator != edit.operator:
                self.set_operator(edit.operator)
            before = dict(self.state.params.get(edit.operator, {}))
            self._validated[edit.operator] = validate(spec_of(edit.operator).params, value)
            self.state.params[edit.operator] = dict(value)
            self.paramsChanged.emit("")
            self.edited.emit(Edit("params", edit.operator, before, dict(value)))

    def default_params(self) -> dict[str, Any]:
        return defaults(spec_of(self.state.operator).params)

    # -- query ---------------------------------------------------------------------------------
    @property
    def query(self) -> Optional[tuple[int, int]]:
        return self.state.query

    def set_query(self, x: float, y: float) -> None:
        if self.image is None:
            return
        h, w = self.image.pixels.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            return
        q = (int(x), int(y))
        if q != self.state.query:
            before, self.state.query = self.state.query, q
            self.queryChanged.emit()
            self.edited.emit(Edit("query", self.state.operator, before, q))

    def effective_query(self) -> Optional[tuple[int, int]]:
        """The clicked point, or the image centre before any click."""
        if self.state.query is not None:
            return self.state.query
        if self.image is None:
            return None
        h, w = self.image.pixels.shape[:2]
        return (w // 2, h // 2)
