"""Typed parameter specs: the GUI form, the CLI ``--set`` parser and validation all read these."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Union


class ParamError(ValueError):
    """A parameter name or value that the operator does not accept."""


# When a parameter does anything: every (other parameter, values it must take) pair must hold,
# e.g. (("kernel", ("gabor",)),) for the Gabor angle. Plain data, so forms and --list read it.
Conditions = tuple[tuple[str, tuple[Any, ...]], ...]
SHOWN_CHARS = 40  # a value echoed in a message is cut to this: a pasted essay must not fill the window


def shown(value: Any) -> str:
    """``value`` as a message quotes it, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 2] + "…" + text[-1]


def _finite(name: str, value: Any, expected: str) -> float:
    """``value`` as a finite float, or a ParamError that says what was ``expected``."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ParamError(f"{name}: expected {expected}, got {shown(value)}") from None
    if not math.isfinite(v):
        raise ParamError(f"{name}: expected {expected}, got {shown(value)}")
    return v


@dataclass(frozen=True)
class FloatParam:
    name: str
    default: float
    minimum: float
    maximum: float
    step: float = 0.01
    help: str = ""
    enabled_when: Conditions = ()
    kind: str = "float"

    def coerce(self, value: Any) -> float:
        v = _finite(self.name, value, "a finite number")
        if not (self.minimum <= v <= self.maximum):
            raise ParamError(f"{self.name}: {v:g} is outside [{self.minimum:g}, {self.maximum:g}]")
        return v


@dataclass(frozen=True)
class IntParam:
    name: str
    default: int
    minimum: int
    maximum: int
    step: int = 1
    help: str = ""
    enabled_when: Conditions = ()
    kind: str = "int"

    def coerce(self, value: Any) -> int:
        f = _finite(self.name, value, "an integer")
        if f != int(f):
            raise ParamError(f"{self.name}: expected an integer, got {shown(value)}")
        v = int(f)
        if not (self.minimum <= v <= self.maximum):
            raise ParamError(f"{self.name}: {v} is outside [{self.minimum}, {self.maximum}]")
        return v


@dataclass(frozen=True)
class ChoiceParam:
    name: str
    default: str
    choices: tuple[str, ...]
    help: str = ""
    enabled_when: Conditions = ()
    kind: str = "choice"

    def coerce(self, value: Any) -> str:
        v = str(value)
        if v not in self.choices:
            raise ParamError(f"{self.name}: {shown(v)} is not one of {', '.join(self.choices)}")
        return v


@dataclass(frozen=True)
class BoolParam:
    name: str
    default: bool
    help: str = ""
    enabled_when: Conditions = ()
    kind: str = "bool"

    def coerce(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ParamError(f"{self.name}: expected true or false, got {shown(value)}")


@dataclass(frozen=True)
class SeedParam:
    name: str
    default: int = 0
    help: str = "Random seed: the same seed gives the same result."
    enabled_when: Conditions = ()
    kind: str = "seed"
    minimum: int = 0
    maximum: int = 2**31 - 1

    def coerce(self, value: Any) -> int:
        return IntParam(self.name, self.default, self.minimum, self.maximum).coerce(value)


@dataclass(frozen=True)
class PointParam:
    """A point in image coordinates (x, y), as fractions of width and height in [0, 1]."""

    name: str
    default: tuple[float, float] = (0.5, 0.5)
    help: str = ""
    enabled_when: Conditions = ()
    kind: str = "point"

    def coerce(self, value: Any) -> tuple[float, float]:
        if isinstance(value, str):
            value = value.replace("(", "").replace(")", "").split(",")
        try:
            x, y = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ParamError(f"{self.name}: expected 'x,y' fractions, got {shown(value)}") from None
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ParamError(f"{self.name}: ({x:g}, {y:g}) is outside [0, 1] x [0, 1]")
        return (x, y)


ParamSpec = Union[FloatParam, IntParam, ChoiceParam, BoolParam, SeedParam, PointParam]


def defaults(specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    return {s.name: s.default for s in specs}


def validate(specs: tuple[ParamSpec, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``values``, each coerced; unknown names are an error."""
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(values) - set(by_name), key=str)
    if unknown:
        raise ParamError(f"unknown parameter {shown(unknown[0])}; known: {', '.join(by_name)}")
    out = defaults(specs)
    for name, value in values.items():
        out[name] = by_name[name].coerce(value)
    return out


def is_active(spec: ParamSpec, values: Mapping[str, Any]) -> bool:
    """Whether ``spec`` does anything given the other parameters' ``values``."""
    return all(values.get(name) in allowed for name, allowed in spec.enabled_when)


def inactive_reason(spec: ParamSpec) -> str:
    """Why a parameter may be greyed out: 'only when kernel is gabor', 'only when steps is 3..9'."""
    parts = [f"{name} is {_values_text(allowed)}" for name, allowed in spec.enabled_when]
    return "only when " + " and ".join(parts) if parts else ""


def _values_text(values: tuple[Any, ...]) -> str:
    """'a or b', with runs of consecutive integers written as 'lo..hi'."""
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if len(ints) == len(values) and len(ints) > 2 and sorted(ints) == list(range(min(ints), max(ints) + 1)):
        return f"{min(ints)}..{max(ints)}"
    return " or ".join(str(v) for v in values)


def describe(spec: ParamSpec) -> str:
    """One line for ``--list``."""
    if isinstance(spec, (FloatParam, IntParam)):
        rng = f"[{spec.minimum:g}..{spec.maximum:g}]"
    elif isinstance(spec, ChoiceParam):
        rng = "{" + "|".join(spec.choices) + "}"
    elif isinstance(spec, PointParam):
        rng = "x,y in [0,1]"
    elif isinstance(spec, SeedParam):
        rng = "seed"
    else:
        rng = "true|false"
    when = inactive_reason(spec)
    return f"{spec.name}={spec.default} {rng}  {spec.help}{f' ({when})' if when else ''}".rstrip()
