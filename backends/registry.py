"""The operator contract and the registry that lists operators by family.

An operator is a spec (typed parameters, family, help) plus ``run(image, params, query)``. Long
jobs (live fits, training) are ``start(action, ...)`` generators that yield progress and partial
results; the worker steps them so they can be cancelled between steps. Adding an operator means
adding one module under ``backends/ops/``: it is discovered on import, nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Optional

import torch

from backends.layers import Result
from backends.params import ParamSpec, validate

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


@dataclass(frozen=True)
class JobUpdate:
    """One step of a long job: progress in [0, 1] (or None when open-ended) and a partial result."""

    progress: Optional[float]
    message: str = ""
    result: Optional[Result] = None


class Operator:
    """Base class: subclasses set ``spec`` and implement ``run``. Instances live on the worker
    thread and may keep caches and learned state between runs."""

    spec: ClassVar[OperatorSpec]

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        """``image`` is (1, 3, H, W) float32 in [0, 1] on the compute device."""
        raise NotImplementedError

    def start(
        self, action: str, image: torch.Tensor, params: Mapping[str, Any], query: Query
    ) -> Iterator[JobUpdate]:
        raise ValueError(f"{self.spec.name} has no action {action!r}")

    def reset_state(self) -> None:
        """Forget learned state (fitted offsets, trained weights) and caches."""


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
