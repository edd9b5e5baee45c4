"""The operator contract and the registry that lists operators by family.

An operator is a spec (typed parameters, family, help) plus a ``run(image, params, query)`` hook,
called through :meth:`Operator.compute`, which first binds the operator's memo to the image key.
Long jobs (live fits, training) are ``job_<action>(image, params, query)`` generators that yield
progress and partial results, started through :meth:`Operator.start`; the worker steps them so
they can be cancelled between steps. Adding an operator means adding one module under
``backends/ops/``: it is discovered on import, nothing else changes. docs/ARCHITECTURE.md has
the contract in full.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar, Hashable, Iterator, Mapping, Optional

import torch

from backends.layers import Result
from backends.memo import Memo
from backends.params import ParamError, ParamSpec, validate

Query = Optional[tuple[int, int]]  # (x, y) in input pixels


@dataclass(frozen=True)
class Action:
    """A long job an operator offers, shown as a Start/Stop button; an ``instant`` one (a reset,
    a clear) finishes in one step and is a plain button with its title."""

    name: str
    title: str
    help: str = ""
    instant: bool = False


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    title: str
    family: str
    description: str
    params: tuple[ParamSpec, ...]
    uses_query: bool = True
    actions: tuple[Action, ...] = ()
    primary: str = ""  # the layer shown large in the centre; "" means "Output", else the first image
    tabs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (theme, layer names): tab groups, most telling first


@dataclass(frozen=True)
class JobUpdate:
    """One step of a long job: progress in [0, 1] (or None when open-ended) and a partial result."""

    progress: Optional[float]
    message: str = ""
    result: Optional[Result] = None


def query_point(query: Query, width: int, height: int) -> tuple[int, int]:
    """The query as a pixel inside a ``width`` x ``height`` frame: the centre when there is none,
    clamped to the frame otherwise (a query kept from a larger image)."""
    qx, qy = query if query is not None else (width // 2, height // 2)
    return min(max(int(qx), 0), width - 1), min(max(int(qy), 0), height - 1)


class Operator:
    """Base class: subclasses set ``spec``, implement ``run`` and one ``job_<name>`` generator per
    action in the spec. Instances live on the worker thread and may keep caches (``self.memo``,
    bound to the image key) and learned state between runs."""

    spec: ClassVar[OperatorSpec]
    memo_capacity: ClassVar[int] = 8
    # Image > Apply (backends/full_resolution.py): how the primary picture is made at the original's
    # resolution: "warp" or "pointwise" (``full_resolution`` below), "resized" (the live picture,
    # resized); "" = the result is not an edit of the image, and ``not_an_edit`` says why.
    edit: ClassVar[str] = ""
    not_an_edit: ClassVar[str] = "its result is not a picture of the image"

    def __init__(self) -> None:
        self.memo = Memo(self.memo_capacity)
        self.image_key: Hashable = None
        self._keyless_image: Optional[torch.Tensor] = None

    # -- what callers use ----------------------------------------------------------------------
    def compute(self, image: torch.Tensor, params: Mapping[str, Any], query: Query,
                image_key: Hashable = None) -> Result:
        """Binds the memo to ``image_key`` and runs. ``params`` are validated values. The image an
        operator sees is finite and in [0, 1] (NaN as 0, infinities clipped), checked once per image."""
        image = self._finite(image)
        self.bind_image(image, image_key)
        try:
            return self.run(image, params, query)
        except ParamError:
            raise
        except ValueError as exc:  # a core's refusal (a shape, a size): said to the user in its own words
            raise ParamError(str(exc)) from exc

    def _finite(self, image: torch.Tensor) -> torch.Tensor:
        cached = self.__dict__.get("_finite_cache")
        if cached is not None and cached[0] is image:
            return cached[1]
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[2] < 1 or image.shape[3] < 1:
            raise ParamError(f"{self.spec.name}: expected an image (1, 3, H, W), got {tuple(image.shape)}")
        finite = image
        if image.device.type == "cpu" and not torch.isfinite(image).all():  # (an accelerator's image was made
            # finite before it was uploaded: the engine checks the pixels once per image)
            finite = torch.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
        self._finite_cache = (image, finite)
        return finite

    def start(self, action: str, image: torch.Tensor, params: Mapping[str, Any], query: Query,
              image_key: Hashable = None, args: Optional[Mapping[str, Any]] = None) -> Iterator[JobUpdate]:
        """The generator of the job ``action`` (one of the spec's actions); ``args`` (plain data,
        e.g. the model file a person chose) are its keyword arguments."""
        names = [a.name for a in self.spec.actions]
        if action not in names:
            known = ", ".join(names) if names else "none"
            raise ParamError(f"{self.spec.name} has no action {action!r} (its actions: {known})")
        image = self._finite(image)
        self.bind_image(image, image_key)
        return getattr(self, f"job_{action}")(image, params, query, **dict(args or {}))

    def bind_image(self, image: torch.Tensor, image_key: Hashable = None) -> None:
        """Names the image the memo belongs to. Without a key (a script, a test) the tensor object
        itself names it; it is kept referenced, so its identity cannot be reused meanwhile."""
        if image_key is None:
            if image is not self._keyless_image:
                self._keyless_image = image
                self._keyless_count = getattr(self, "_keyless_count", 0) + 1
            image_key = ("unkeyed", self._keyless_count)
        else:
            self._keyless_image = None
        self.image_key = image_key
        self.memo.bind(image_key)

    # -- what operators implement --------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        """``image`` is (1, 3, H, W) float32 in [0, 1] on the compute device; ``query`` may be None."""
        raise NotImplementedError

    def full_resolution(self, live: torch.Tensor, full: torch.Tensor, params: Mapping[str, Any],
                        query: Query) -> torch.Tensor:
        """For ``edit`` "warp" or "pointwise": the primary picture (1, 3, H', W') made from ``full``
        (the original's pixels) with what was fitted, clicked or measured on ``live`` (the view)."""
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget learned state (fitted offsets, trained weights) and caches."""
        self.memo.clear()


class UnknownOperator(KeyError):
    def __str__(self) -> str:
        return f"unknown operator {self.args[0]!r}; try --list"


_REGISTRY: dict[str, type[Operator]] = {}
_DISCOVERED = False


def register(cls: type[Operator]) -> type[Operator]:
    name = cls.spec.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"operator {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """For test doubles: take an operator out of the registry again."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import backends.ops as ops_pkg

    for info in pkgutil.iter_modules(ops_pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"backends.ops.{info.name}")
    _DISCOVERED = True


def operator_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def operator_class(name: str) -> type[Operator]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOperator(name) from None


def spec_of(name: str) -> OperatorSpec:
    return operator_class(name).spec


def families() -> dict[str, list[OperatorSpec]]:
    """Family name to its operators' specs, both sorted, for the picker and ``--list``."""
    _discover()
    out: dict[str, list[OperatorSpec]] = {}
    for cls in _REGISTRY.values():
        out.setdefault(cls.spec.family, []).append(cls.spec)
    return {fam: sorted(specs, key=lambda s: s.title) for fam, specs in sorted(out.items())}


def validated_params(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return validate(spec_of(name).params, values)
