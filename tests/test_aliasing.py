"""The aliasing operator through compute: its layers, the error curve that settles once per stack
and vertical shift, the odd working grid; and what each panel DRAWS against computations written
out here from the drawn working input: the residual and the shifted-back output for a shift along
x only on a non-square grid (a shift along y, or the wrong sign, draws something else), zero for
no shift, near zero for a whole pixel, and the curve at the current shift equal to the metric."""

import numpy as np
import pytest
import torch

from backends.functional.aliasing import conv_stack, fourier_shift, random_stack
from backends.layers import complete
from backends.ops.aliasing import SWEEP, Aliasing, smooth_odd, working_grid
from backends.params import validate

SPEC = Aliasing.spec


def _image(h=70, w=100):
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 9, 12, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _compute(op, image, **values):
    with torch.no_grad():  # as the worker runs it
        return op.compute(image, validate(SPEC.params, values), None)


def _stacks(values):
    w, b = random_stack(values.get("layers", 2), 8, values.get("seed", 0))
    factor, filter, cutoff = int(values.get("oversampling", "2")), values.get("filter", "ideal"), values.get("cutoff", 1.0)
    return (lambda z: conv_stack(z, w, b, factor, None)), (lambda z: conv_stack(z, w, b, factor, filter, cutoff))


def _expected(x, values, dx, dy):
    """(shifted back, |residual|) of each stack, written out: T_-d(stack(T_d x)) and its distance to stack(x)."""
    out = []
    for stack in _stacks(values):
        back = fourier_shift(stack(fourier_shift(x, dx, dy)), -dx, -dy)
        out.append((back[0, 0].numpy(), (back - stack(x))[0, 0].abs().numpy()))
    return out


def test_layers_and_a_curve_that_settles_once_per_stack_and_vertical_shift():
    op, image = Aliasing(), _image()
    first = _compute(op, image)
    assert first.names == ("Residual", "Shifted back", "Working input", "Metrics")
    assert first.pending == ("Equivariance error",) and first.settle is not None
    full = complete(first)
    assert full.names == ("Residual", "Shifted back", "Equivariance error", "Working input", "Metrics")
    assert _compute(op, image, shift_x=0.7).settle is None  # the curve does not depend on shift_x
    assert _compute(op, image, shift_y=0.4).settle is not None
    metrics = full.layer("Metrics").values
    assert {"input ms", "unshifted ms", "shifted ms", "error curve ms"} <= set(metrics)
    assert float(metrics["error ratio (unfiltered / filtered)"].rstrip("x")) > 3


def test_the_working_grid_is_odd_with_small_prime_factors_and_keeps_the_aspect():
    assert [smooth_odd(n) for n in (3, 10, 50, 81, 95)] == [3, 9, 49, 81, 105]
    assert working_grid(70, 100, 81) == (63, 81)  # 56.7 lies between 49 and 63, nearer 63
    x = _compute(Aliasing(), _image(), resolution="63").layer("Working input").image
    h, w = x.shape
    assert w == 63 and h % 2 == 1 and abs(h / w - 0.7) < 0.1


@pytest.mark.parametrize("values", [dict(shift_x=0.3), dict(shift_x=0.45, filter="sinc", cutoff=0.7, layers=1, seed=3)])
def test_the_residual_and_shifted_back_panels_draw_the_definition(values):
    result = _compute(Aliasing(), _image(), **values)
    x = torch.from_numpy(np.asarray(result.layer("Working input").image))[None, None]
    residual = np.asarray(result.layer("Residual").maps)
    back = np.asarray(result.layer("Shifted back").maps)
    expected = _expected(x, values, values["shift_x"], 0.0)
    for i, (b, r) in enumerate(expected):
        np.testing.assert_allclose(back[i], b, atol=1e-4)
        np.testing.assert_allclose(residual[i], r, atol=1e-4)
    swapped = _expected(x, values, 0.0, values["shift_x"])  # a shift along y instead
    assert np.abs(residual[0] - swapped[0][1]).max() > 10 * 1e-4
    wrong_sign = _expected(x, values, -values["shift_x"], 0.0)
    assert np.abs(residual[0] - wrong_sign[0][1]).max() > 10 * 1e-4
    assert result.layer("Residual").labels[0] == "unfiltered"


def test_no_shift_is_exact_and_a_whole_pixel_nearly_so():
    op, image = Aliasing(), _image()
    zero = _compute(op, image, shift_x=0.0, shift_y=0.0)
    assert float(np.abs(np.asarray(zero.layer("Residual").maps)).max()) == 0.0
    assert zero.layer("Metrics").values["equivariance PSNR unfiltered (dB)"] == "exact"
    whole = _compute(op, image, shift_x=1.0, shift_y=1.0)
    maps = np.asarray(whole.layer("Residual").maps)
    outputs = np.asarray(whole.layer("Shifted back").maps)
    assert maps.max() < 1e-4 * np.abs(outputs).max()


def test_the_curve_at_the_current_shift_is_the_metric():
    result = complete(_compute(Aliasing(), _image(), shift_x=0.3, shift_y=0.2))
    curve = result.layer("Equivariance error")
    metrics = result.layer("Metrics").values
    i = int(np.argmin(np.abs(SWEEP - 0.3)))
    for series, name in (("unfiltered", "RMS residual unfiltered"), ("filtered (ideal)", "RMS residual filtered")):
        xs, ys = curve.series[series]
        assert xs[i] == pytest.approx(0.3)
        assert f"{ys[i]:.3g}%" == metrics[name]
    assert curve.series["this shift"][0].tolist() == pytest.approx([0.3, 0.3])
    flat = complete(_compute(Aliasing(), _image(), shift_y=0.0)).layer("Equivariance error").series
    for series in ("unfiltered", "filtered (ideal)"):
        ys = flat[series][1]
        assert ys[0] == 0.0 and ys[-1] < 1e-2  # no shift and a whole pixel: exact up to rounding
    assert flat["unfiltered"][1][5] > 1.0  # half a pixel: the unfiltered stack is off by more than 1%
    assert flat["filtered (ideal)"][1][5] < 1e-2  # and a whole pixel of the twice finer grid for the filtered one
    assert flat["unfiltered"][1][3] > 3 * flat["filtered (ideal)"][1][3]


def test_spec():
    assert SPEC.primary == "Residual" and not SPEC.uses_query
