"""The spatial transformer operator through compute/start: identities (1e-5), matrix and compose
modes, the registration fit recovering a known rotation, scale and shift (angle within 1 degree,
scale within 2%, shift within 1 px at 96 x 96, 120 Adam steps), TPS clicks, the settling inverse
map, and what the panels DRAW against computations written out here: the sampling grid and the
frame's corners of a non-symmetric theta (shear, anisotropic scale, shift) on a non-square image,
and the TPS inverse map undoing the forward warp. The cores are tested in
test_functional_affine.py and test_functional_tps.py."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.affine import affine_transform
from backends.functional.tps import control_lattice, tps_apply, tps_fit
from backends.imageio import load_image
from backends.layers import INPUT, CurveLayer, ImageLayer, MetricsLayer, PointsLayer, SamplingGridLayer, complete
from backends.ops.spatial_transformer import SpatialTransformer
from backends.params import ParamError, is_active, validate
from explorer.image_sources import sample_path

IDENTITY_TOL = 1e-5
DISPLAY_GRID_TOL = 1e-5  # the operator's separable grid rounds differently from affine_grid (1e-7 normalized)
GRID_POINT_TOL = 1e-4  # float32 panel points against float64 by hand, up to ~60 px
ANGLE_TOL_DEG = 1.0
SCALE_TOL = 0.02
SHIFT_TOL_PX = 1.0
INVERSE_TOL = 0.01  # mean |inverse map - input| inside the frame, a 4% TPS jitter on a smooth image
THETA = ((1.15, 0.35, 0.1), (-0.1, 0.8, -0.15))  # shear, anisotropic scale, shift: not symmetric


def _params(**values):
    return validate(SpatialTransformer.spec.params, values)


def _photo(size: int = 96) -> torch.Tensor:
    pixels = cv2.resize(load_image(sample_path("chelsea")).pixels, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def _texture(h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def _smooth(h: int = 48, w: int = 72) -> torch.Tensor:
    coarse = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _run(op, image, query=None, image_key=None, **values):
    with torch.no_grad():  # as the worker runs it, settling panels included
        return complete(op.compute(image, _params(**values), query, image_key))


def _shown(result, name: str) -> torch.Tensor:
    return torch.as_tensor(result.layer(name).image).permute(2, 0, 1)[None]


def _matrix(theta=THETA) -> dict:
    return dict(mode="matrix", **{f"theta_{r + 1}{c + 1}": theta[r][c] for r in range(2) for c in range(3)})


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("values", [
    dict(rotate=0.0, scale=1.0, translate_x=0.0),
    dict(mode="matrix"),
    dict(warp="tps", tps_jitter=0.0),
])
def test_identity_gives_the_input(values, align_corners):
    image = _texture()
    for interpolation in ("bilinear", "bicubic", "nearest"):
        result = _run(SpatialTransformer(), image, align_corners=align_corners, interpolation=interpolation, **values)
        assert torch.allclose(_shown(result, "Warped output"), image, atol=IDENTITY_TOL), interpolation
        assert torch.allclose(_shown(result, "Inverse map"), image, atol=IDENTITY_TOL), interpolation


def test_matrix_mode_is_theta_and_compose_mode_moves_content_by_pixels():
    image = _texture()
    _, _, h, w = image.shape
    result = _run(SpatialTransformer(), image, **_matrix())
    ref = affine_transform(image, torch.tensor([THETA]))
    assert torch.allclose(_shown(result, "Warped output"), ref, atol=DISPLAY_GRID_TOL)
    # Content shifted 4 px right and 3 px down lands exactly there, whatever align_corners says.
    for ac in (False, True):
        result = _run(SpatialTransformer(), image, rotate=0.0, scale=1.0, translate_x=4 / w, translate_y=3 / h, align_corners=ac)
        shown = _shown(result, "Warped output")
        assert torch.allclose(shown[..., 3:, 4:], image[..., :-3, :-4], atol=IDENTITY_TOL)
        back = _shown(result, "Inverse map")
        assert torch.allclose(back[..., :-3, :-4], image[..., :-3, :-4], atol=IDENTITY_TOL)


def _theta_in_pixels(points: np.ndarray, w: int, h: int, align_corners: bool) -> np.ndarray:
    """Output pixels (N, 2) -> the input pixels theta reads, by hand: to normalized, theta, back."""
    if align_corners:
        u, v = points[:, 0] * 2 / (w - 1) - 1, points[:, 1] * 2 / (h - 1) - 1
    else:
        u, v = (2 * points[:, 0] + 1) / w - 1, (2 * points[:, 1] + 1) / h - 1
    (a, b, c), (d, e, f) = THETA
    un, vn = a * u + b * v + c, d * u + e * v + f
    if align_corners:
        return np.stack([(un + 1) * (w - 1) / 2, (vn + 1) * (h - 1) / 2], 1)
    return np.stack([((un + 1) * w - 1) / 2, ((vn + 1) * h - 1) / 2], 1)


@pytest.mark.parametrize("align_corners", [False, True])
def test_the_sampling_grid_panel_is_theta_applied_in_pixels(align_corners):
    """Grid point (row i, column j) sits at output pixel (x_j, y_i) and is drawn where theta reads it."""
    h, w = 40, 56
    result = _run(SpatialTransformer(), _texture(h, w), align_corners=align_corners, **_matrix())
    layer = result.layer("Sampling grid")
    grid = np.asarray(layer.grid, np.float64)
    ys, xs = np.linspace(0, h - 1, 33), np.linspace(0, w - 1, 33)
    lattice = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)  # rows of y, columns of x
    np.testing.assert_allclose(grid.reshape(-1, 2), _theta_in_pixels(lattice, w, h, align_corners), atol=GRID_POINT_TOL)
    frame = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    outline = np.asarray(layer.outline, np.float64)  # 24 points a side, clockwise from the top-left corner
    np.testing.assert_allclose(outline[::24], _theta_in_pixels(frame, w, h, align_corners), atol=GRID_POINT_TOL)


def test_the_tps_inverse_map_undoes_the_forward_warp():
    """A mild TPS warp: the output sampled back through the inverse map is the input again,
    inside the frame; the forward warp alone is far from it."""
    image = _smooth()
    result = _run(SpatialTransformer(), image, warp="tps", tps_points="9", tps_jitter=0.04, tps_seed=2)
    inner = (slice(None), slice(None), slice(8, -8), slice(12, -12))
    forward = float((_shown(result, "Warped output") - image)[inner].abs().mean())
    back = float((_shown(result, "Inverse map") - image)[inner].abs().mean())
    assert back < INVERSE_TOL < 0.5 * forward, (back, forward)


@pytest.mark.parametrize("align_corners", [False, True])
def test_fit_recovers_a_known_rotation_scale_and_shift(align_corners):
    image = _photo(96)
    values = dict(rotate=0.0, scale=1.0, translate_x=0.0, translate_y=0.0, align_corners=align_corners,
                  target_rotate=20.0, target_scale=1.15, target_tx=0.06, target_ty=-0.04, fit_steps=120)
    op = SpatialTransformer()
    with torch.no_grad():  # the worker runs jobs with autograd off; the fit turns it on itself
        updates = list(op.start("fit", image, _params(**values), None))
    assert len(updates) == 120 and updates[-1].progress == 1.0
    curve = updates[-1].result.layer("Fit loss")
    assert isinstance(curve, CurveLayer) and curve.series["MSE"][1][-1] < 0.01 * curve.series["MSE"][1][0]
    shown = _run(op, image, **values)  # compute shows the fitted transform, labelled as fitted
    found = shown.layer("Metrics").values
    assert found["fit steps"] == 120
    assert abs(found["fitted content angle deg"] - 20.0) < ANGLE_TOL_DEG
    assert abs(found["fitted content scale"] / 1.15 - 1) < SCALE_TOL
    tx, ty = (float(v) for v in re.findall(r"-?\d+\.\d+", found["fitted content shift px"]))
    assert abs(tx - 0.06 * 96) < SHIFT_TOL_PX and abs(ty + 0.04 * 96) < SHIFT_TOL_PX
    assert found["fitted theta row 1"].count(" ") == 2 and "content angle deg" not in found
    caption = shown.layer("Warped output").caption
    assert caption.startswith("fitted (120 Adam steps") and f"turned {found['fitted content angle deg']:.1f} deg" in caption
    # ...until a parameter of the fit changes.
    assert _run(op, image, **{**values, "rotate": 5.0}).layer("Metrics").values["content angle deg"] == pytest.approx(5.0)


def test_tps_fit_lowers_the_loss_and_keeps_its_targets():
    image = _photo(64)
    values = dict(warp="tps", tps_jitter=0.0, target_rotate=10.0, fit_steps=80, fit_size="64")
    op = SpatialTransformer()
    with torch.no_grad():
        updates = list(op.start("fit", image, _params(**values), None))
    losses = updates[-1].result.layer("Fit loss").series["MSE"][1]
    assert losses[-1] < 0.1 * losses[0]
    shown = _run(op, image, **values)
    moved = shown.layer("Metrics").values["fitted mean target shift px"]
    assert moved > 1.0 and shown.layer("Metrics").values["fitted max target shift px"] >= moved
    assert shown.layer("Warped output").caption.startswith(f"fitted TPS targets (80 Adam steps): 9 control points, "
                                                           f"targets moved {moved:.1f} px on average")
    with torch.no_grad():
        reset = list(op.start("reset", image, _params(**values), None))
    assert len(reset) == 1 and reset[0].result.layer("Metrics").values["mean target shift px"] == 0.0
    assert _run(op, image, **values).layer("Metrics").values["mean target shift px"] == 0.0
    with pytest.raises(ParamError, match="has no action"):
        op.start("train", image, _params(**values), None)


def test_a_click_moves_the_nearest_tps_target():
    image = _texture(40, 40)
    op = SpatialTransformer()
    values = dict(warp="tps", tps_points="9", tps_jitter=0.0, align_corners=True)
    first = _run(op, image, (20, 20), **values)  # the default query is not a click
    assert first.layer("Metrics").values["mean target shift px"] == 0.0
    clicked = _run(op, image, (5, 3), **values)  # nearest target: the top-left corner (0, 0)
    targets = clicked.layer("Control points").sets[2].points
    assert torch.allclose(torch.as_tensor(targets[0]), torch.tensor([5.0, 3.0]), atol=1e-4)
    assert torch.allclose(torch.as_tensor(targets[1:]), torch.as_tensor(first.layer("Control points").sets[2].points[1:]))
    assert _run(op, image, (5, 3), **{**values, "interpolation": "nearest"}).layer("Metrics").values["mean target shift px"] > 0
    op.reset_state()
    assert _run(op, image, (5, 3), **values).layer("Metrics").values["mean target shift px"] == 0.0


def test_clicked_targets_belong_to_their_image():
    image = _texture(40, 40)
    op = SpatialTransformer()
    values = dict(warp="tps", tps_points="9", tps_jitter=0.0)
    _run(op, image, (20, 20), "a", **values)
    assert _run(op, image, (5, 3), "a", **values).layer("Metrics").values["mean target shift px"] > 0
    assert _run(op, image, (5, 3), "b", **values).layer("Metrics").values["mean target shift px"] == 0.0


@pytest.mark.parametrize("warp", ["affine", "tps"])
def test_run_gives_the_layers(warp):
    image = _texture(40, 56)
    result = _run(SpatialTransformer(), image, (10, 12), warp=warp)
    spline = ("Control points",) if warp == "tps" else ()  # an affine map's outline is on the grid panel
    assert result.names == ("Warped output", "Sampling grid") + spline + ("Inverse map", "Fit target", "Fit loss", "Metrics")
    assert isinstance(result.layer("Warped output"), ImageLayer) and tuple(result.layer("Warped output").image.shape) == (40, 56, 3)
    grid = result.layer("Sampling grid")
    assert isinstance(grid, SamplingGridLayer) and grid.grid.shape == (33, 33, 2) and grid.outline.shape == (96, 2)
    assert not spline or isinstance(result.layer("Control points"), PointsLayer)
    metrics = result.layer("Metrics")
    assert isinstance(metrics, MetricsLayer) and {"warp ms", "inverse ms"} <= set(metrics.values)


def test_a_warp_change_shows_the_output_first_and_the_inverse_map_once_it_settles():
    op, image = SpatialTransformer(), _texture(40, 56)
    with torch.no_grad():
        fast = op.compute(image, _params(rotate=17.0), None)
        assert fast.pending == ("Inverse map",) and "Inverse map" not in fast.names
        settled = fast.settle()
        assert settled.names == ("Warped output", "Sampling grid", "Inverse map", "Fit target", "Fit loss", "Metrics")
        again = op.compute(image, _params(rotate=17.0), (5, 5))
        assert again.settle is None  # the inverse is kept...
        assert again.layer("Inverse map").image is settled.layer("Inverse map").image  # ...the very same tensor


def _folds_by_hand(w: int, h: int, points: int, jitter: float, seed: int) -> np.ndarray:
    """The output pixels (H, W) where the spline's Jacobian determinant is <= 0 against its
    median's sign: the jittered lattice of the tps_* parameters, the spline at every pixel centre
    (align_corners off) in float64, central differences by numpy."""
    n = int(round(points ** 0.5))
    controls = control_lattice(n).double()
    g = torch.Generator().manual_seed(seed)
    targets = control_lattice(n) + torch.randn(control_lattice(n).shape, generator=g) * (2.0 * jitter)
    xs, ys = (2 * np.arange(w) + 1) / w - 1, (2 * np.arange(h) + 1) / h - 1
    grid = torch.from_numpy(np.stack(np.meshgrid(xs, ys), -1))
    reads = tps_apply(tps_fit(controls, targets.double()), controls, grid).numpy()
    dx_dr, dx_dc = np.gradient(reads[..., 0])
    dy_dr, dy_dc = np.gradient(reads[..., 1])
    det = dx_dc * dy_dr - dy_dc * dx_dr
    return det * np.sign(np.median(det)) <= 0


def test_a_fold_free_warp_reports_no_fold():
    for values in (dict(), dict(warp="tps", tps_jitter=0.04, tps_seed=2), _matrix(((-1.0, 0.2, 0.0), (0.1, 0.9, 0.0)))):
        result = _run(SpatialTransformer(), _smooth(), **values)  # the mirror (theta_11 < 0) turns, but never folds
        assert result.layer("Metrics").values["folded"] == "0.0%", values
        assert "not invertible" not in result.layer("Inverse map").caption
        assert result.layer("Sampling grid").background is INPUT and result.layer("Warped output").boxes == ()


def test_a_folding_spline_is_marked_and_its_inverse_map_disowned():
    """jitter 0.15, seed 1, 9 points: the targets cross, so the grid turns over on part of the
    frame; the share matches the determinant by hand, the grid panel tints what those pixels
    read, and the inverse map's caption says it means nothing there."""
    image = _smooth(48, 72)
    result = _run(SpatialTransformer(), image, warp="tps", tps_points="9", tps_jitter=0.15, tps_seed=1)
    by_hand = _folds_by_hand(72, 48, 9, 0.15, 1)
    shown = float(result.layer("Metrics").values["folded"].rstrip("%")) / 100
    assert by_hand.mean() > 0.05 and shown == pytest.approx(by_hand.mean(), abs=0.02)
    boxed = np.zeros_like(by_hand)  # the output's boxes hold the folded pixels
    for x, y, bw, bh in result.layer("Warped output").boxes:
        assert 0 <= x and 0 <= y and x + bw <= 72 and y + bh <= 48
        boxed[int(y): int(y + bh), int(x): int(x + bw)] = True
    assert (by_hand & boxed).sum() >= 0.9 * by_hand.sum() and boxed.mean() < 0.6
    assert "not invertible there, so this inverse map is not meaningful" in result.layer("Inverse map").caption
    assert "folded on" in result.layer("Warped output").caption
    background = torch.as_tensor(result.layer("Sampling grid").background)
    rgb = image[0].permute(1, 2, 0)
    tinted = (background - rgb).abs().amax(-1) > 1e-6
    assert 0 < float(tinted.float().mean()) < 0.5
    assert (background[tinted][:, 0] - background[tinted][:, 1:].amax(-1) > rgb[tinted][:, 0] - rgb[tinted][:, 1:].amax(-1)).all()


def test_a_singular_matrix_is_all_folded():
    result = _run(SpatialTransformer(), _smooth(), **_matrix(((1.0, 0.5, 0.0), (2.0, 1.0, 0.0))))  # det 0
    assert result.layer("Metrics").values["folded"] == "100.0%"
    assert "not invertible" in result.layer("Inverse map").caption


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in SpatialTransformer.spec.params}
    inactive = lambda **v: [n for n, spec in by_name.items() if not is_active(spec, _params(**v))]  # noqa: E731
    thetas = [f"theta_{r}{c}" for r in (1, 2) for c in (1, 2, 3)]
    compose = ["rotate", "scale", "shear", "translate_x", "translate_y"]
    tps = ["tps_points", "tps_jitter", "tps_seed"]
    assert inactive(warp="affine", mode="compose") == thetas + tps
    assert inactive(warp="affine", mode="matrix") == compose + tps
    assert inactive(warp="tps") == ["mode"] + compose + thetas
    assert SpatialTransformer.spec.primary == "Warped output"
