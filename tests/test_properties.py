"""Every registered operator, on odd images (1xN, Nx1, tiny, flat, NaN and infinity in the pixels)
and every parameter at and beyond its bounds: it returns layers of the kinds it promises, with
finite geometry, or raises the project's own error with a message; never anything else.

Hypothesis draws the cases from a fixed seed (derandomized), so a failure reproduces."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.layers import LAYER_TYPES, complete, materialize
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError, defaults
from backends.registry import operator_class, operator_names, spec_of

OPERATORS = [n for n in operator_names() if not n.startswith("_")]
EXAMPLES = int(os.environ.get("OPSCOPE_PROPERTY_EXAMPLES", 12))  # per operator and property: the suite's
# time budget, not a statement of coverage; set more for a long local run
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def images() -> st.SearchStrategy[torch.Tensor]:
    """(1, 3, H, W) in [0, 1]: thin, tiny and flat shapes, and pixels that are NaN or infinite."""
    sides = st.sampled_from([1, 2, 3, 7, 33, 64])
    fills = st.sampled_from(["random", "flat", "nan", "inf", "checker"])
    return st.builds(_image, sides, sides, fills, st.integers(0, 2**16))


def _image(h: int, w: int, fill: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, h, w, generator=g)
    if fill == "flat":
        img.fill_(0.5)
    elif fill == "checker":
        img = ((torch.arange(h)[:, None] + torch.arange(w)[None]) % 2).float().expand(1, 3, h, w).clone()
    elif fill in ("nan", "inf"):
        img.view(-1)[:: max(1, img.numel() // 5)] = math.nan if fill == "nan" else math.inf
    return img


def valid_values(name: str) -> st.SearchStrategy[dict]:
    """Every parameter at a bound, its default, or anywhere between."""
    out = {}
    for p in spec_of(name).params:
        if isinstance(p, FloatParam):
            out[p.name] = st.one_of(st.sampled_from([p.minimum, p.maximum, p.default]),
                                    st.floats(p.minimum, p.maximum, allow_nan=False))
        elif isinstance(p, IntParam):
            out[p.name] = st.one_of(st.sampled_from([p.minimum, p.maximum, p.default]), st.integers(p.minimum, p.maximum))
        elif isinstance(p, ChoiceParam):
            out[p.name] = st.sampled_from(p.choices)
        else:
            out[p.name] = st.just(p.default)
    return st.fixed_dictionaries(out)


def beyond(p) -> st.SearchStrategy:
    """Values a parameter must refuse."""
    if isinstance(p, (FloatParam, IntParam)):
        return st.sampled_from([p.maximum + 1, p.minimum - 1, p.maximum * 10 + 1e9, math.nan, math.inf, -math.inf, 1e400,
                                "twelve", None])
    if isinstance(p, ChoiceParam):
        return st.sampled_from(["no such choice", "", "x" * 10_000, None])
    return st.sampled_from(["not a value"])


def check_result(result) -> None:
    result = materialize(complete(result))
    assert result.layers
    for layer in result.layers:
        assert isinstance(layer, LAYER_TYPES), type(layer)
        for field in ("origins", "vectors", "grid"):
            arr = getattr(layer, field, None)
            if arr is not None:
                assert np.isfinite(arr).all(), f"{layer.name}.{field} is not finite"


def compute_or_explain(name: str, image: torch.Tensor, params: dict, query) -> None:
    """Layers of the promised kinds, or a ParamError saying in a sentence what cannot be done here."""
    try:
        with torch.no_grad():
            result = operator_class(name)().compute(image, params, query)
    except ParamError as exc:
        assert str(exc) and len(str(exc)) < 400
        return
    check_result(result)


@pytest.mark.parametrize("name", OPERATORS)
@SETTINGS
@given(image=images(), query=st.tuples(st.integers(-5, 70), st.integers(-5, 70)))
def test_odd_images_give_layers_or_a_message(name, image, query):
    compute_or_explain(name, image, defaults(spec_of(name).params), query)


@pytest.mark.parametrize("name", OPERATORS)
@SETTINGS
@given(data=st.data())
def test_parameters_anywhere_in_their_ranges_compute_or_explain(name, data):
    compute_or_explain(name, _image(24, 40, "random", 0), data.draw(valid_values(name)), (30, 10))


@pytest.mark.parametrize("name", OPERATORS)
@SETTINGS
@given(data=st.data())
def test_a_parameter_beyond_its_bounds_is_refused_with_its_name(name, data):
    from backends.params import validate

    spec = data.draw(st.sampled_from([p for p in spec_of(name).params if p.kind not in ("bool", "point")] or [None]))
    if spec is None:
        return
    value = data.draw(beyond(spec))
    with pytest.raises(ParamError) as info:
        validate(spec_of(name).params, {spec.name: value})
    assert spec.name in str(info.value) and len(str(info.value)) < 300
