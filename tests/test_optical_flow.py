"""The optical flow operator through compute: its layers and metrics, and what its panels DRAW
against computations written out here: the second image is the content moved right by shift_x
and down by shift_y (a whole-pixel shift compared pixel by pixel on a non-square image); the
arrows recover a known translation (median, not swapped) and the sense of a rotation; the true
tile of the colour picture is the colour coding of A p - p written out here; the legend wheel's
centre is white; warping back lowers the residual; the median endpoint error of a translation
and a rotation stays under the stated bounds. The cores are tested in test_functional_flow.py."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.flow import flow_to_color
from backends.layers import complete
from backends.ops.optical_flow import OpticalFlow
from backends.params import is_active, validate

H, W = 120, 176  # non-square, below the flow size: the flow runs at the input's own size
FLOAT_TOL = 1e-4
TRANSLATION_EPE = 0.2  # px, DIS medium on the texture below (measured about 0.05)
ROTATION_EPE = 0.3  # px, 3 degrees (measured about 0.07)


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    coarse = F.interpolate(torch.rand(1, 3, H // 4, W // 4, generator=g), size=(H, W), mode="bicubic", align_corners=False)
    fine = F.interpolate(torch.rand(1, 3, H // 2, W // 2, generator=g), size=(H, W), mode="bilinear", align_corners=False)
    return (0.7 * coarse + 0.3 * fine).clamp(0, 1)


def _compute(**values):
    with torch.no_grad():  # as the worker runs it; complete: the checks against the true flow settle
        return complete(OpticalFlow().compute(_image(), validate(OpticalFlow.spec.params, values), None))


SHIFT = dict(shift_x=4.0, shift_y=-2.0, rotate=0.0, scale=1.0, preset="medium")


def test_operator_returns_named_layers_and_metrics():
    result = _compute()
    assert result.names == ("Flow colours", "Flow arrows", "Second image", "Warped back", "Residual", "Endpoint error",
                            "Metrics")
    metrics = result.layer("Metrics").values
    assert metrics["flow size"] == f"{W} x {H}"
    assert {"median endpoint error px", "residual before", "residual after (estimated flow)", "flow ms"} <= set(metrics)


def test_the_second_image_moves_the_content_right_and_up_by_the_shifts():
    second = np.asarray(_compute(**SHIFT).layer("Second image").image)
    first = _image()[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(second[10:-10, 14:-10], first[12:-8, 10:-14], atol=FLOAT_TOL)  # (y - 2, x + 4)
    assert np.abs(second[:, :4]).max() == 0  # nothing of the input lands on the first 4 columns


def test_the_arrows_recover_a_translation_and_the_error_is_small():
    result = _compute(**SHIFT)
    arrows = result.layer("Flow arrows")
    origins, vectors = np.asarray(arrows.origins), np.asarray(arrows.vectors)
    inside = (origins[:, 0] > 16) & (origins[:, 0] < W - 16) & (origins[:, 1] > 16) & (origins[:, 1] < H - 16)
    np.testing.assert_allclose(np.median(vectors[inside], axis=0), [4.0, -2.0], atol=0.1)
    metrics = result.layer("Metrics").values
    assert metrics["median endpoint error px"] < TRANSLATION_EPE
    assert metrics["residual after (estimated flow)"] < metrics["residual before"] / 3


def test_a_counter_clockwise_turn_moves_the_right_side_up_and_is_recovered():
    result = _compute(shift_x=0.0, shift_y=0.0, rotate=3.0, preset="medium")
    arrows = result.layer("Flow arrows")
    origins, vectors = np.asarray(arrows.origins), np.asarray(arrows.vectors)
    cx, cy = (W - 1) / 2, (H - 1) / 2
    right = (origins[:, 0] > cx + 30) & (np.abs(origins[:, 1] - cy) < 20)
    below = (origins[:, 1] > cy + 25) & (np.abs(origins[:, 0] - cx) < 30)
    assert right.any() and below.any()
    assert np.median(vectors[right, 1]) < -1.0  # right of the centre: up (y down on screen)
    assert np.median(vectors[below, 0]) > 1.0  # below it: to the right
    assert result.layer("Metrics").values["median endpoint error px"] < ROTATION_EPE


def test_the_true_tile_is_the_colour_coding_of_the_motion_written_out():
    angle, tx, ty = 4.0, 3.0, -1.5
    result = _compute(shift_x=tx, shift_y=ty, rotate=angle)
    picture = np.asarray(result.layer("Flow colours").image)
    a = math.radians(angle)
    cx, cy = (W - 1) / 2, (H - 1) / 2
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    dx, dy = xs - cx, ys - cy
    u = cx + math.cos(a) * dx + math.sin(a) * dy + tx - xs  # content at p goes to c + R (p - c) + t
    v = cy - math.sin(a) * dx + math.cos(a) * dy + ty - ys
    true = torch.from_numpy(np.stack([u, v]))[None]
    expected = flow_to_color(true, float(np.sqrt(u**2 + v**2).max()))[0].permute(1, 2, 0).numpy()
    gap = max(2, W // 40)
    assert picture.shape == (H, 2 * W + gap, 3)
    np.testing.assert_allclose(picture[:, W + gap:], expected, atol=1e-3)
    centre = picture[: H // 3, W - H // 3: W].reshape(-1, 3)  # the legend wheel, top right of the first tile
    assert (np.abs(centre - 1.0).max(axis=1) < 0.02).any()  # its centre: white, no motion


def test_a_shift_brings_the_flow_first_and_the_checks_when_it_settles():
    op, image = OpticalFlow(), _image()
    with torch.no_grad():
        first = op.compute(image, validate(OpticalFlow.spec.params, {"shift_x": 3.0}), None)
        assert first.names[:3] == ("Flow colours", "Flow arrows", "Second image")
        assert first.pending == ("Warped back", "Residual", "Endpoint error")
        assert "median endpoint error px" in complete(first).layer("Metrics").values
        denser = op.compute(image, validate(OpticalFlow.spec.params, {"shift_x": 3.0, "arrow_spacing": 16}), None)
    assert denser.settle is None and "Residual" in denser.names  # the checks are cached


def test_farneback_runs_and_parameters_say_when_they_act():
    metrics = _compute(method="Farneback", **{k: v for k, v in SHIFT.items() if k != "preset"}).layer("Metrics").values
    assert metrics["method"] == "Farneback" and metrics["median endpoint error px"] < 0.5
    specs = {p.name: p for p in OpticalFlow.spec.params}
    dis = validate(OpticalFlow.spec.params, {})
    farneback = {**dis, "method": "Farneback"}
    assert is_active(specs["preset"], dis) and not is_active(specs["preset"], farneback)
    assert is_active(specs["window"], farneback) and not is_active(specs["levels"], dis)


@pytest.mark.parametrize("size", [128, 512])
def test_the_flow_size_never_exceeds_the_image(size):
    assert _compute(flow_size=size).layer("Metrics").values["flow size"] == (f"{W} x {H}" if size >= W else "128 x 87")
