"""Parameter specs validate, coerce and reject with messages that name the parameter."""

import pytest

from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, ParamError, PointParam, SeedParam, validate

SPECS = (
    FloatParam("gain", 1.0, 0.0, 2.0),
    IntParam("size", 3, 1, 9),
    ChoiceParam("mode", "a", ("a", "b")),
    BoolParam("flag", False),
    SeedParam("seed"),
    PointParam("centre"),
)


def test_defaults_fill_missing_values():
    assert validate(SPECS, {}) == {"gain": 1.0, "size": 3, "mode": "a", "flag": False, "seed": 0, "centre": (0.5, 0.5)}


def test_strings_from_the_command_line_are_coerced():
    got = validate(SPECS, {"gain": "1.5", "size": "7", "mode": "b", "flag": "true", "seed": "42", "centre": "0.2,0.8"})
    assert got == {"gain": 1.5, "size": 7, "mode": "b", "flag": True, "seed": 42, "centre": (0.2, 0.8)}


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"gain": 3}, "gain: 3 is outside"),
        ({"gain": "loud"}, "gain: expected a finite number"),
        ({"size": 2.5}, "size: expected an integer"),
        ({"mode": "c"}, "'c' is not one of a, b"),
        ({"flag": "maybe"}, "flag: expected true or false"),
        ({"centre": "2,2"}, "outside [0, 1]"),
        ({"colour": 1}, "unknown parameter 'colour'"),
        ({"size": "nan"}, "size: expected an integer, got 'nan'"),
        ({"size": float("inf")}, "size: expected an integer, got inf"),
        ({"size": 1e400}, "size: expected an integer"),
        ({"gain": "inf"}, "gain: expected a finite number"),
        ({"gain": float("nan")}, "gain: expected a finite number"),
        ({"centre": "nan,0.5"}, "outside [0, 1]"),
    ],
)
def test_bad_values_raise_a_readable_error(values, fragment):
    with pytest.raises(ParamError, match=None) as info:
        validate(SPECS, values)
    assert fragment in str(info.value)


def test_a_long_value_is_quoted_short_in_the_message():
    with pytest.raises(ParamError) as info:
        validate(SPECS, {"mode": "x" * 5000})
    assert len(str(info.value)) < 120 and "…" in str(info.value)


def test_when_a_parameter_applies_is_said_in_words():
    from backends.params import inactive_reason

    radius = IntParam("radius", 0, 0, 12, enabled_when=(("code", tuple(range(128))),))
    angle = FloatParam("angle", 0.0, 0.0, 180.0, enabled_when=(("kernel", ("gabor", "random")), ("size", ("3",))))
    assert inactive_reason(radius) == "only when code is 0..127"
    assert inactive_reason(angle) == "only when kernel is gabor or random and size is 3"
