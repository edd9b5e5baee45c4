"""Every registered operator honours the contract: valid specs, and a run on a small odd-sized
image that returns well-formed layers of known kinds with finite values."""

import numpy as np
import pytest
import torch

from backends.layers import INPUT, LAYER_KINDS, complete, materialize
from backends.params import defaults
from backends.registry import families, operator_class, operator_names, spec_of

OPERATORS = [n for n in operator_names() if not n.startswith("_")]


def test_families_list_every_operator_once():
    listed = [s.name for specs in families().values() for s in specs]
    assert sorted(listed) == sorted(operator_names())


@pytest.mark.parametrize("name", OPERATORS)
def test_spec_defaults_are_within_their_own_ranges(name):
    spec = spec_of(name)
    assert spec.title and spec.family and spec.description
    names = [p.name for p in spec.params]
    assert len(names) == len(set(names))
    for p in spec.params:
        assert p.coerce(p.default) == p.default


@pytest.mark.parametrize("name", OPERATORS)
def test_enabled_when_names_real_parameters_and_values(name):
    params = {p.name: p for p in spec_of(name).params}
    for p in params.values():
        for other, allowed in p.enabled_when:
            assert other in params and other != p.name, f"{p.name}: enabled_when names {other!r}"
            for value in allowed:
                params[other].coerce(value)  # each a value the other parameter can take


def _default_result(name):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 67, 91)
    with torch.no_grad():
        return materialize(complete(operator_class(name)().compute(image, defaults(spec_of(name).params), (30, 20))))


@pytest.mark.parametrize("name", OPERATORS)
def test_run_with_defaults_gives_well_formed_layers_and_its_primary_and_tabs(name):
    result = _default_result(name)
    assert result.layers, "an operator must show something"
    spec, names = spec_of(name), set(result.names)
    assert not spec.primary or spec.primary in names, f"primary {spec.primary!r} is not among {sorted(names)}"
    grouped = [m for _theme, members in spec.tabs for m in members]
    assert len(grouped) == len(set(grouped)), "a panel in two tab groups"
    for theme, members in spec.tabs:  # a group may name panels of other modes; at least one is drawn here
        assert not members or set(members) & names, f"tab {theme!r} names no panel the defaults draw"
    assert len(set(result.names)) == len(result.names)
    for layer in result.layers:
        assert layer.kind in LAYER_KINDS
        for field in ("image", "maps", "grid", "origins", "vectors"):
            arr = getattr(layer, field, None)
            if arr is not None:
                assert isinstance(arr, np.ndarray), f"{layer.name}.{field} is {type(arr)}"
                if field in ("image", "maps"):  # NaN is drawn transparent (e.g. the zeros a dilation inserts)
                    assert not np.isinf(arr).any() and not np.isnan(arr).all(), f"{layer.name}.{field}"
                else:
                    assert np.isfinite(arr).all(), f"{layer.name}.{field} has non-finite values"
        bg = getattr(layer, "background", None)
        assert bg is None or isinstance(bg, np.ndarray) or bg is INPUT


def test_gallery_settings_and_bench_sweeps_name_real_parameters_and_values():
    from backends.params import is_active, validate
    from explorer.bench import SETUP, SWEEPS
    from explorer.gallery import TELLING

    for op, settings in TELLING.items():
        for _title, values in settings:
            validate(spec_of(op).params, values)
    for op, (param, values) in SWEEPS.items():
        for v in values:
            params = validate(spec_of(op).params, {**SETUP.get(op, {}), param: v})
            assert is_active(next(p for p in spec_of(op).params if p.name == param), params), (op, param)  # it acts
