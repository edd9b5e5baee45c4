"""Spatial transformer: identities (1e-5), agreement with F.affine_grid + F.grid_sample (1e-6),
pixel-exact shifts, the registration fit recovering a known rotation, scale and shift (angle
within 1 degree, scale within 2%, shift within 1 px at 96 x 96, 120 Adam steps), TPS clicks, and the layers."""

from __future__ import annotations

import cv2
import pytest
import torch
import torch.nn.functional as F

from backends.imageio import load_image
from backends.layers import CurveLayer, ImageLayer, MetricsLayer, PointsLayer, SamplingGridLayer, complete
from backends.ops.spatial_transformer import affine_sampling_grid, affine_transform, spatial_transform
from backends.registry import operator_class, validated_params
from backends.warp import (
    compose_affine,
    control_lattice,
    decompose_affine,
    frame_centre,
    sampling_map_from_theta,
    theta_from_sampling_map,
    tps_grid,
)
from explorer.image_sources import sample_path

IDENTITY_TOL = 1e-5
CORE_TOL = 1e-6
DISPLAY_GRID_TOL = 1e-5  # the operator's separable grid rounds differently from affine_grid (1e-7 normalized)
ANGLE_TOL_DEG = 1.0
SCALE_TOL = 0.02
SHIFT_TOL_PX = 1.0

OP = "spatial_transformer"


def _photo(size: int = 96) -> torch.Tensor:
    pixels = cv2.resize(load_image(sample_path("chelsea")).pixels, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def _texture(h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def _run(op, image, query=None, **values):
    with torch.no_grad():  # as the worker runs it, settling panels included
        return complete(op.run(image, validated_params(OP, values), query))


def _shown(result, name: str) -> torch.Tensor:
    return torch.as_tensor(result.layer(name).image).permute(2, 0, 1)[None]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("values", [
    dict(rotate=0.0, scale=1.0, translate_x=0.0),
    dict(mode="matrix"),
    dict(warp="tps", tps_jitter=0.0),
])
def test_identity_gives_the_input(values, align_corners):
    image = _texture()
    for interpolation in ("bilinear", "bicubic", "nearest"):
        result = _run(operator_class(OP)(), image, align_corners=align_corners, interpolation=interpolation, **values)
        assert torch.allclose(_shown(result, "Warped output"), image, atol=IDENTITY_TOL), interpolation
        assert torch.allclose(_shown(result, "Inverse map"), image, atol=IDENTITY_TOL), interpolation


@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_with_controls_in_place_is_the_identity_grid(align_corners):
    controls = control_lattice(4)
    for step in (1, 4):
        grid = tps_grid(controls, controls.clone(), (23, 31), align_corners, step)
        identity = F.affine_grid(torch.eye(2, 3)[None], [1, 1, 23, 31], align_corners=align_corners)
        assert torch.allclose(grid, identity, atol=IDENTITY_TOL)


def test_core_agrees_with_affine_grid_and_grid_sample():
    image = _texture()
    theta = torch.tensor([[[0.9, -0.3, 0.1], [0.25, 1.1, -0.2]]])
    for ac in (False, True):
        for mode in ("bilinear", "nearest", "bicubic"):
            for pad in ("zeros", "border", "reflection"):
                ref = F.grid_sample(image, F.affine_grid(theta, list(image.shape), align_corners=ac), mode=mode,
                                    padding_mode=pad, align_corners=ac)
                assert torch.allclose(affine_transform(image, theta, mode, pad, ac), ref, atol=CORE_TOL)
    with pytest.raises(ValueError, match="padding"):
        spatial_transform(image, torch.zeros(1, 4, 4, 2), "bilinear", "wrap")


def test_matrix_mode_is_theta_and_compose_mode_moves_content_by_pixels():
    image = _texture()
    _, _, h, w = image.shape
    theta = dict(theta_11=0.8, theta_12=0.1, theta_13=0.05, theta_21=-0.2, theta_22=1.2, theta_23=0.0)
    result = _run(operator_class(OP)(), image, mode="matrix", **theta)
    ref = affine_transform(image, torch.tensor([[[0.8, 0.1, 0.05], [-0.2, 1.2, 0.0]]]))
    assert torch.allclose(_shown(result, "Warped output"), ref, atol=DISPLAY_GRID_TOL)
    # Content shifted 4 px right and 3 px down lands exactly there, whatever align_corners says.
    for ac in (False, True):
        result = _run(operator_class(OP)(), image, rotate=0.0, scale=1.0, translate_x=4 / w, translate_y=3 / h, align_corners=ac)
        shown = _shown(result, "Warped output")
        assert torch.allclose(shown[..., 3:, 4:], image[..., :-3, :-4], atol=IDENTITY_TOL)
        back = _shown(result, "Inverse map")
        assert torch.allclose(back[..., :-3, :-4], image[..., :-3, :-4], atol=IDENTITY_TOL)


def test_pixel_maps_round_trip_through_theta():
    content = compose_affine(20.0, 1.15, 0.1, 5.0, -3.0, frame_centre(60, 40))
    parts = decompose_affine(content, frame_centre(60, 40))
    assert parts == pytest.approx({"angle": 20.0, "scale": 1.15, "shear": 0.1, "tx": 5.0, "ty": -3.0}, abs=1e-9)
    for ac in (False, True):
        theta = theta_from_sampling_map(content, (60, 40), (60, 40), ac)
        assert torch.allclose(sampling_map_from_theta(theta, (60, 40), (60, 40), ac), content, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_fit_recovers_a_known_rotation_scale_and_shift(align_corners):
    image = _photo(96)
    params = validated_params(OP, dict(rotate=0.0, scale=1.0, translate_x=0.0, translate_y=0.0, align_corners=align_corners,
                                       target_rotate=20.0, target_scale=1.15, target_tx=0.06, target_ty=-0.04, fit_steps=120))
    op = operator_class(OP)()
    with torch.no_grad():  # the worker runs jobs with autograd off; the fit turns it on itself
        updates = list(op.start("fit", image, params, None))
    assert len(updates) == 120 and updates[-1].progress == 1.0
    theta = op._fit.theta.detach().double()
    content = torch.linalg.inv(sampling_map_from_theta(theta, (96, 96), (96, 96), align_corners))
    found = decompose_affine(content, frame_centre(96, 96))
    assert abs(found["angle"] - 20.0) < ANGLE_TOL_DEG
    assert abs(found["scale"] / 1.15 - 1) < SCALE_TOL
    assert abs(found["tx"] - 0.06 * 96) < SHIFT_TOL_PX and abs(found["ty"] + 0.04 * 96) < SHIFT_TOL_PX
    curve = updates[-1].result.layer("Fit loss")
    assert isinstance(curve, CurveLayer) and curve.series["MSE"][1][-1] < 0.01 * curve.series["MSE"][1][0]
    # run() shows the fitted transform until a parameter of the fit changes.
    assert _run(op, image, **{**params, "fit_steps": 120}).layer("Metrics").values["content angle deg"] == pytest.approx(found["angle"], abs=1e-3)
    assert _run(op, image, **{**params, "rotate": 5.0}).layer("Metrics").values["content angle deg"] == pytest.approx(5.0)


def test_tps_fit_lowers_the_loss_and_keeps_its_targets():
    image = _photo(64)
    params = dict(warp="tps", tps_jitter=0.0, target_rotate=10.0, fit_steps=80, fit_size="64")
    op = operator_class(OP)()
    with torch.no_grad():
        list(op.start("fit", image, validated_params(OP, params), None))
    assert op._fit.losses[-1] < 0.1 * op._fit.losses[0]
    moved = _run(op, image, **params).layer("Metrics").values["mean target shift px"]
    assert moved > 1.0
    list(op.start("reset", image, validated_params(OP, params), None))
    assert _run(op, image, **params).layer("Metrics").values["mean target shift px"] == 0.0


def test_a_click_moves_the_nearest_tps_target():
    image = _texture(40, 40)
    op = operator_class(OP)()
    values = dict(warp="tps", tps_points="9", tps_jitter=0.0, align_corners=True)
    first = _run(op, image, (20, 20), **values)  # the default query is not a click
    assert first.layer("Metrics").values["mean target shift px"] == 0.0
    clicked = _run(op, image, (5, 3), **values)  # nearest target: the top-left corner (0, 0)
    targets = clicked.layer("Source quadrilateral").sets[2].points
    assert torch.allclose(torch.as_tensor(targets[0]), torch.tensor([5.0, 3.0]), atol=1e-4)
    assert torch.allclose(torch.as_tensor(targets[1:]), torch.as_tensor(first.layer("Source quadrilateral").sets[2].points[1:]))
    assert _run(op, image, (5, 3), **{**values, "interpolation": "nearest"}).layer("Metrics").values["mean target shift px"] > 0
    op.reset_state()
    assert _run(op, image, (5, 3), **values).layer("Metrics").values["mean target shift px"] == 0.0


@pytest.mark.parametrize("warp", ["affine", "tps"])
def test_run_gives_the_layers(warp):
    image = _texture(40, 56)
    result = _run(operator_class(OP)(), image, (10, 12), warp=warp)
    assert result.names == ("Warped output", "Sampling grid", "Source quadrilateral", "Inverse map", "Fit target", "Fit loss", "Metrics")
    assert isinstance(result.layer("Warped output"), ImageLayer) and tuple(result.layer("Warped output").image.shape) == (40, 56, 3)
    grid = result.layer("Sampling grid")
    assert isinstance(grid, SamplingGridLayer) and grid.grid.shape == (33, 33, 2) and grid.outline.shape == (96, 2)
    assert isinstance(result.layer("Source quadrilateral"), PointsLayer)
    assert isinstance(result.layer("Metrics"), MetricsLayer)


def test_a_warp_change_shows_the_output_first_and_the_inverse_map_once_it_settles():
    op, image = operator_class(OP)(), _texture(40, 56)
    with torch.no_grad():
        fast = op.run(image, validated_params(OP, {"rotate": 17.0}), None)
        assert fast.pending == ("Inverse map",) and "Inverse map" not in fast.names
        assert fast.settle().names == ("Warped output", "Sampling grid", "Source quadrilateral", "Inverse map",
                                       "Fit target", "Fit loss", "Metrics")
        assert op.run(image, validated_params(OP, {"rotate": 17.0}), (5, 5)).settle is None  # the inverse is kept


@pytest.mark.parametrize("align_corners", [False, True])
def test_the_display_grid_equals_affine_grid(align_corners):
    theta = torch.tensor([[0.9, -0.35, 0.12], [0.3, 1.1, -0.05]], dtype=torch.float64)
    ref = F.affine_grid(theta[None].float(), [1, 1, 37, 53], align_corners=align_corners)
    ours = affine_sampling_grid(theta, 37, 53, align_corners, torch.empty(0))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
