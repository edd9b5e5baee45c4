"""The dilated operator through compute: its layers and metrics, the strided output's place, and
what its panels DRAW against computations written out here: the query's taps (non-square image,
asymmetric query), the stack ERF's support placed at the query, and the "stack coverage" metric
against the analytic support's share of the box, for rate sets whose shares differ. The cores
are tested in test_functional_dilated.py."""

import numpy as np
import pytest
import torch

from backends.functional.dilated import stack_support
from backends.functional.kernels import make_kernel
from backends.ops.dilated import DilatedConvolution
from backends.params import is_active, validate

QUERY = (70, 29)  # asymmetric, far from the border of a 128 x 96 image


def _compute(op, image, query, **values):
    with torch.no_grad():  # as the worker runs it
        return op.compute(image, validate(DilatedConvolution.spec.params, values), query)


def test_operator_returns_named_layers_and_consistent_metrics():
    result = _compute(DilatedConvolution(), torch.rand(1, 3, 64, 80), (10, 20),
                      dilation=3, kernel_size="5", stack_layers=2, rate_1=1, rate_2=2)
    assert result.names == ("Output", "Dilated kernel", "Receptive field", "Stack effective receptive field", "Metrics")
    metrics = result.layer("Metrics").values
    assert metrics["receptive field (1 layer)"] == "13 x 13"
    assert metrics["receptive field (stack)"] == "13 x 13"  # 1 + (1 + 2) * 4
    assert metrics["parameters"] == 3 * 2 * 25  # Sobel pair per RGB channel
    assert {"output ms", "stack ERF ms"} <= set(metrics)


def test_the_query_taps_are_drawn_dilation_apart_row_by_row():
    """Non-square image, asymmetric query: tap (i, j) reads (qx + (j - 2) d, qy + (i - 2) d)."""
    qx, qy, d = 21, 44, 3
    points = _compute(DilatedConvolution(), torch.rand(1, 3, 64, 80), (qx, qy), dilation=d, kernel_size="5",
                      kernel="sobel").layer("Receptive field")
    c = (np.arange(5) - 2) * d
    expected = np.array([(qx + x, qy + y) for y in c for x in c], np.float32)
    np.testing.assert_array_equal(np.asarray(points.sets[0].points), expected)
    np.testing.assert_allclose(points.sets[0].values, np.abs(make_kernel("sobel", 5)).reshape(-1))
    np.testing.assert_array_equal(np.asarray(points.sets[1].points), [[qx, qy]])


def test_strided_output_is_placed_on_the_input_frame():
    out = _compute(DilatedConvolution(), torch.rand(1, 3, 31, 40), None, kernel="gaussian", stride=2).layer("Output")
    assert tuple(out.image.shape) == (16, 20, 3)
    assert out.extent == (0.0, 0.0, 40.0, 31.0)


RATE_SETS = [((2, 2, 2), 3), ((1, 2, 5), 3), ((3, 3), 3), ((1, 3), 5), ((2, 4), 3)]


@pytest.mark.parametrize("rates, k", RATE_SETS)
def test_stack_coverage_is_the_analytic_support_share_of_the_box(rates, k):
    """Box weights, a query far from the border: the share of the stack's box whose ERF reaches
    the query is the share of ``stack_support`` that is True (gridding leaves holes)."""
    values = dict(kernel_size=str(k), stack_layers=len(rates), stack_box_weights=True,
                  **{f"rate_{i + 1}": r for i, r in enumerate(rates)})
    result = _compute(DilatedConvolution(), torch.rand(1, 3, 96, 128), QUERY, **values)
    share = float(stack_support(k, rates).mean())
    assert result.layer("Metrics").values["stack coverage"] == f"{share:.1%}"
    assert f"{share:.0%} of the" in result.layer("Stack effective receptive field").caption


def test_the_coverage_metric_tells_gridding_from_full_cover():
    shares = {rates: _compute(DilatedConvolution(), torch.rand(1, 3, 96, 128), QUERY, stack_layers=3,
                              **{f"rate_{i + 1}": r for i, r in enumerate(rates)}).layer("Metrics").values["stack coverage"]
              for rates in ((2, 2, 2), (1, 2, 5))}
    assert shares == {(2, 2, 2): f"{49 / 169:.1%}", (1, 2, 5): "100.0%"}


@pytest.mark.parametrize("rates", [(2, 2, 2), (1, 3)])
def test_the_erf_panel_is_the_support_placed_at_the_query(rates):
    """Where the drawn ERF is non-zero: exactly the analytic support, centred on (qx, qy) in
    (column, row), nothing outside; a transposed placement would miss on a non-square image."""
    values = dict(stack_layers=len(rates), **{f"rate_{i + 1}": r for i, r in enumerate(rates)})
    erf = np.asarray(_compute(DilatedConvolution(), torch.rand(1, 3, 96, 128), QUERY, **values)
                     .layer("Stack effective receptive field").maps)
    support = stack_support(3, rates)
    half = support.shape[0] // 2
    expected = np.zeros((96, 128), bool)
    expected[QUERY[1] - half: QUERY[1] + half + 1, QUERY[0] - half: QUERY[0] + half + 1] = support
    np.testing.assert_array_equal(erf > 0, expected)
    assert float(erf.max()) == pytest.approx(1.0)


def test_the_sobel_kernel_panel_draws_both_kernels_with_blank_inserted_zeros():
    """d/dx left, d/dy right (its transpose), each on its dilated footprint: the taps' weights
    (the zero-weight middle column of d/dx stays 0), NaN (transparent) where the dilation inserts
    zeros, and a transparent gap wider than the tap spacing between the two tiles."""
    d, k = 3, 3
    layer = _compute(DilatedConvolution(), torch.rand(1, 3, 40, 56), None, kernel="sobel", dilation=d).layer("Dilated kernel")
    assert layer.column_labels == ("d/dx", "d/dy")
    picture = np.asarray(layer.image)
    span = d * (k - 1) + 1
    tile = picture.shape[1] // 2
    assert picture.shape == (span, 2 * tile) and tile - span > d
    sobel = make_kernel("sobel", k)
    for t, expected in enumerate((sobel, sobel.T)):
        part = picture[:, t * tile: t * tile + span]
        np.testing.assert_array_equal(part[::d, ::d], expected)
        mask = np.ones((span, span), bool)
        mask[::d, ::d] = False
        assert np.isnan(part[mask]).all()
        assert np.isnan(picture[:, t * tile + span: (t + 1) * tile]).all()
    assert (picture[:, : span][::d, ::d][:, 1] == 0).all()  # d/dx's zero-weight taps are drawn as 0


def test_a_single_kernel_panel_is_one_labelled_tile():
    layer = _compute(DilatedConvolution(), torch.rand(1, 3, 40, 56), None, kernel="gabor", gabor_angle=60.0,
                     kernel_size="5", dilation=2).layer("Dilated kernel")
    assert layer.column_labels == ("gabor 60°",)
    picture = np.asarray(layer.image)
    assert picture.shape == (9, 9)
    np.testing.assert_array_equal(picture[::2, ::2], make_kernel("gabor", 5, 60.0))
    assert np.isnan(picture[1::2]).all() and np.isnan(picture[:, 1::2]).all()


def test_signed_outputs_name_the_colour_channels_in_words():
    out = _compute(DilatedConvolution(), torch.rand(1, 3, 40, 56), None, kernel="laplacian").layer("Output")
    assert out.labels == ("red", "green", "blue")
    lo, hi = out.levels
    assert lo == -hi and 0 < hi <= float(np.abs(np.asarray(out.maps)).max())


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in DilatedConvolution.spec.params}
    values = validate(DilatedConvolution.spec.params, {"kernel": "sobel", "stack_layers": 2})
    assert not is_active(by_name["gabor_angle"], values) and not is_active(by_name["seed"], values)
    assert is_active(by_name["rate_2"], values) and not is_active(by_name["rate_3"], values)
    values = validate(DilatedConvolution.spec.params, {"kernel": "gabor", "stack_layers": 4})
    assert is_active(by_name["gabor_angle"], values) and is_active(by_name["rate_4"], values)
    assert is_active(by_name["seed"], validate(DilatedConvolution.spec.params, {"kernel": "random"}))
    assert DilatedConvolution.spec.primary == "Output"
