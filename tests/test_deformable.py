"""The deformable operator through compute/start: its layers, the live fit and learned state,
what its memoized stages keep, and what its panels DRAW, each against a computation written out
here: offset arrows and sampling points of analytic warps on a non-square image with an
asymmetric query (so a swap of x and y changes the answer), and the sampling points' brightness
(|weight| x the v2 colour mask) from bilinear reads done by hand. The cores are tested in
test_functional_deformable.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.kernels import make_kernel
from backends.layers import CurveLayer, HeatmapLayer, ImageLayer, MetricsLayer, PointsLayer, VectorFieldLayer
from backends.ops.deformable import DeformableConvolution
from backends.params import ParamError, is_active, validate

H, W = 40, 64  # non-square
QUERY = (41, 13)  # far from the centre and from the diagonal
ARROW_TOL = 1e-4  # float32 fields against float64 by hand, coordinates up to ~60 px
BRIGHTNESS_TOL = 1e-5  # float32 bilinear reads and exp against float64 by hand


def _params(**values):
    return validate(DeformableConvolution.spec.params, values)


def _compute(op, img, query=None, image_key=None, **values):
    with torch.no_grad():  # as the worker runs it
        return op.compute(img, _params(**values), query, image_key)


def _image(h=H, w=W, seed=0) -> torch.Tensor:
    """A smooth random texture: bilinear fits need structure at a few scales."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=g)
    fine = torch.rand(1, 3, h // 2, w // 2, generator=g)
    up = lambda t: F.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)  # noqa: E731
    return (0.7 * up(coarse) + 0.3 * up(fine)).clamp(0, 1)


def _taps(k: int = 3, d: int = 2) -> np.ndarray:
    """(K, 2) regular taps (x, y) about the pixel, row-major: x varies fastest."""
    c = (np.arange(k) - k // 2) * d
    return np.array([(x, y) for y in c for x in c], np.float64)


def _rotation(strength: float) -> np.ndarray:
    """The 'rotate' warp's turn, 45 deg * strength, counter-clockwise on screen (y down)."""
    a = math.radians(45.0 * strength)
    return np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])


@pytest.mark.parametrize("source", ["swirl", "zoom", "rotate", "shear", "random", "edges", "learned"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_compute_gives_the_named_layers(source, version):
    op = DeformableConvolution()
    result = _compute(op, _image(48, 64), (20, 30), offsets=source, version=version,
                      kernel="sobel_x" if source == "edges" else "gaussian")
    names = ["Deformable output", "Regular convolution", "Offset field", "Sampling points"]
    names += ["Modulation"] if version == "v2" else []  # v1 has none: the metrics say so
    names += ["Fit target", "Fit loss", "Metrics"] if source == "learned" else ["Metrics"]
    assert list(result.names) == names
    out = result.layer("Deformable output")
    assert isinstance(out, ImageLayer) and tuple(out.image.shape[:2]) == (48, 64)
    field = result.layer("Offset field")
    assert isinstance(field, VectorFieldLayer) and field.origins.shape == field.vectors.shape and 20 <= len(field.origins) <= 9 * 40 * 40
    points = result.layer("Sampling points")
    assert isinstance(points, PointsLayer) and points.sets[1].points.shape == (9, 2)
    assert points.sets[1].join_to == (20.0, 30.0)
    if version == "v2":
        mod = result.layer("Modulation")
        assert isinstance(mod, HeatmapLayer) and tuple(mod.maps.shape) == (48, 64)
    metrics = result.layer("Metrics")
    assert isinstance(metrics, MetricsLayer) and {"offsets ms", "deformable ms", "regular ms"} <= set(metrics.values)


# -- what the panels draw ----------------------------------------------------------------------------


def _arrows(result) -> tuple[np.ndarray, np.ndarray]:
    field = result.layer("Offset field")
    return np.asarray(field.origins, np.float64), np.asarray(field.vectors, np.float64)


def test_centre_tap_arrows_of_a_shear_slide_x_by_the_row_below_the_query():
    """shear: the tap at (x, y) reads (x + strength / 2 * (y - query y), y)."""
    origins, vectors = _arrows(_compute(DeformableConvolution(), _image(), QUERY, offsets="shear", strength=0.6, arrows="centre tap"))
    assert origins[:, 0].max() > H and (origins >= 0).all() and (origins[:, 0] < W).all() and (origins[:, 1] < H).all()
    expected = np.stack([0.3 * (origins[:, 1] - QUERY[1]), np.zeros(len(origins))], 1)
    np.testing.assert_allclose(vectors, expected, atol=ARROW_TOL)


def test_mean_offset_arrows_of_a_zoom_point_at_the_query():
    """zoom by 2**strength about the query: pixel p's taps read q + (p + t - q) / 2**strength, so
    their mean offset is (2**-strength - 1) (p - q)."""
    origins, vectors = _arrows(_compute(DeformableConvolution(), _image(), QUERY, offsets="zoom", strength=0.5, arrows="mean offset"))
    np.testing.assert_allclose(vectors, (2 ** -0.5 - 1) * (origins - np.array(QUERY)), atol=ARROW_TOL)


def test_centre_tap_arrows_of_a_rotation_turn_about_the_query():
    origins, vectors = _arrows(_compute(DeformableConvolution(), _image(), QUERY, offsets="rotate", strength=0.7, arrows="centre tap"))
    rel = origins - np.array(QUERY)
    np.testing.assert_allclose(vectors, rel @ _rotation(0.7).T - rel, atol=ARROW_TOL)


@pytest.mark.parametrize("strength", [0.5, -0.8])
def test_sampling_points_of_a_rotation_are_the_taps_turned_about_the_query(strength):
    points = _compute(DeformableConvolution(), _image(), QUERY, offsets="rotate", strength=strength).layer("Sampling points")
    regular, deformed, query = (np.asarray(s.points, np.float64) for s in points.sets)
    np.testing.assert_allclose(regular, np.array(QUERY) + _taps(), atol=ARROW_TOL)
    np.testing.assert_allclose(deformed, np.array(QUERY) + _taps() @ _rotation(strength).T, atol=ARROW_TOL)
    np.testing.assert_array_equal(query, [QUERY])
    assert points.sets[1].join_to == (float(QUERY[0]), float(QUERY[1]))


def test_sampling_points_of_a_shear_move_along_x_only():
    points = _compute(DeformableConvolution(), _image(), QUERY, offsets="shear", strength=-0.4, dilation=3).layer("Sampling points")
    taps = _taps(3, 3)
    expected = np.array(QUERY) + taps + np.stack([-0.2 * taps[:, 1], np.zeros(9)], 1)
    np.testing.assert_allclose(np.asarray(points.sets[1].points, np.float64), expected, atol=ARROW_TOL)


def test_sampling_point_brightness_is_the_absolute_kernel_weight_in_v1():
    """sobel_x differentiates along x: its middle column (taps straight above and below) is 0."""
    points = _compute(DeformableConvolution(), _image(), QUERY, offsets="rotate", kernel="sobel_x").layer("Sampling points")
    values = np.asarray(points.sets[1].values, np.float64)
    np.testing.assert_allclose(values, np.abs(make_kernel("sobel_x", 3)).reshape(-1), atol=0)
    assert (values[_taps()[:, 0] == 0] == 0).all() and (values[_taps()[:, 0] != 0] > 0).all()


def _bilinear(img: torch.Tensor, x: float, y: float) -> np.ndarray:
    """(C,) colour of (C, H, W) at pixel coordinates (x, y); corners outside read 0."""
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(img.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < img.shape[1] and 0 <= xx < img.shape[2]:
                out += wy * wx * img[:, yy, xx].double().numpy()
    return out


@pytest.mark.parametrize("query", [(30, 11), (9, 33)])
def test_sampling_point_brightness_in_v2_is_weight_times_the_colour_mask_at_the_query(query):
    """Each tap of the query pixel weighs |kernel| x exp(-mean_c (tap colour - pixel colour)^2 / 2 sigma^2),
    the tap colour read bilinearly where the rotated tap lands."""
    img, sigma, strength = _image(), 0.15, 0.5
    points = _compute(DeformableConvolution(), img, query, offsets="rotate", strength=strength, version="v2",
                      mask_sigma=sigma).layer("Sampling points")
    where = np.array(query) + _taps() @ _rotation(strength).T
    pixel = img[0, :, query[1], query[0]].double().numpy()
    mask = np.array([math.exp(-((_bilinear(img[0], x, y) - pixel) ** 2).mean() / (2 * sigma ** 2)) for x, y in where])
    expected = np.abs(make_kernel("gaussian", 3)).reshape(-1) * mask
    assert mask.min() < 0.9  # the mask varies across taps: a read elsewhere would differ
    np.testing.assert_allclose(np.asarray(points.sets[1].values, np.float64), expected, atol=BRIGHTNESS_TOL)


@pytest.mark.parametrize("query", [(30, 11), (9, 33)])
def test_the_v2_modulation_caption_sums_up_the_query_mask_and_v1_has_no_modulation_panel(query):
    """The caption gives min, mean and max of the query's 9 tap weights (the same colour mask,
    by hand), not the nine numbers; v1 leaves the panel out and says so in the metrics."""
    img, sigma, strength = _image(), 0.15, 0.5
    result = _compute(DeformableConvolution(), img, query, offsets="rotate", strength=strength, version="v2", mask_sigma=sigma)
    where = np.array(query) + _taps() @ _rotation(strength).T
    pixel = img[0, :, query[1], query[0]].double().numpy()
    mask = np.array([math.exp(-((_bilinear(img[0], x, y) - pixel) ** 2).mean() / (2 * sigma ** 2)) for x, y in where])
    summary = f"min {mask.min():.2f}, mean {mask.mean():.2f}, max {mask.max():.2f}"
    assert result.layer("Modulation").caption.endswith(f"the query's taps: {summary}")
    metrics = result.layer("Metrics").values
    assert metrics["mask at query min / mean / max"] == f"{mask.min():.2f} / {mask.mean():.2f} / {mask.max():.2f}"
    v1 = _compute(DeformableConvolution(), img, query, offsets="rotate", strength=strength, version="v1")
    assert "Modulation" not in v1.names and v1.layer("Metrics").values["modulation"] == "none (v1)"
    assert "v1 (no modulation" in v1.layer("Deformable output").caption


def test_tap_patterns_are_few_enlarged_taps_with_arrows_of_their_offsets():
    """shear: the tap t of pixel p reads (p + t) + (strength / 2 (p_y + t_y - q_y), 0). Each
    pattern is the 9 regular taps enlarged about p by the layer's scale; each arrow is that tap's
    offset (so its colour, by length, is the offset's length)."""
    field = _compute(DeformableConvolution(), _image(), QUERY, offsets="shear", strength=0.6,
                     arrows="tap pattern").layer("Offset field")
    origins = np.asarray(field.origins, np.float64).reshape(9, -1, 2)
    vectors = np.asarray(field.vectors, np.float64).reshape(9, -1, 2)
    assert origins.shape[1] <= 12 * 8  # about 10 patterns along the long side
    centres = origins.mean(0)  # the taps are symmetric about their pixel
    np.testing.assert_allclose((origins - centres) / field.scale, np.repeat(_taps()[:, None], origins.shape[1], 1),
                               atol=ARROW_TOL)
    reads_y = centres[None, :, 1] + _taps()[:, None, 1]
    np.testing.assert_allclose(vectors, np.stack([0.3 * (reads_y - QUERY[1]), np.zeros_like(reads_y)], -1), atol=ARROW_TOL)
    spacing = np.diff(np.unique(centres[:, 0])).min()
    assert field.scale * (np.abs(_taps()) + np.abs(vectors).max()).max() <= 0.5 * spacing + ARROW_TOL  # no overlap


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in DeformableConvolution.spec.params}
    inactive = lambda **v: [n for n, spec in by_name.items() if not is_active(spec, _params(**v))]  # noqa: E731
    fit = ["fit_rotate", "fit_scale", "fit_shear", "fit_steps", "fit_lr", "fit_size"]
    assert inactive(offsets="swirl", version="v1") == ["seed", "mask_sigma"] + fit
    assert inactive(offsets="random", version="v2") == fit
    assert inactive(offsets="learned", version="v2") == ["strength", "seed", "mask_sigma"]
    assert DeformableConvolution.spec.primary == "Deformable output"


# -- stages, the fit, learned state ------------------------------------------------------------------


def test_kept_stages_hand_back_the_same_tensors():
    op, img = DeformableConvolution(), _image()
    first = _compute(op, img, QUERY, image_key="a")
    again = _compute(op, img, QUERY, image_key="a")
    assert again.layer("Deformable output").image is first.layer("Deformable output").image
    stronger = _compute(op, img, QUERY, image_key="a", strength=0.3)
    assert stronger.layer("Regular convolution").image is first.layer("Regular convolution").image
    assert not torch.equal(stronger.layer("Deformable output").image, first.layer("Deformable output").image)
    moved = _compute(op, img, (10, 30), image_key="a")  # the swirl turns about the query
    assert not torch.equal(moved.layer("Deformable output").image, first.layer("Deformable output").image)


def test_the_fit_needs_learned_offsets_and_unknown_actions_are_refused():
    op, img = DeformableConvolution(), _image()
    with pytest.raises(ParamError, match="learned"):
        op.start("fit", img, _params(offsets="swirl"), None)
    with pytest.raises(ParamError, match="has no action"):
        op.start("train", img, _params(offsets="learned"), None)


def test_fit_lowers_the_loss_and_compute_shows_the_learned_offsets():
    op = DeformableConvolution()
    img = _image(64, 64)
    values = dict(offsets="learned", version="v2", fit_steps=30, fit_size="64", fit_rotate=10.0)
    with torch.no_grad():  # the worker thread runs jobs with autograd off too
        updates = list(op.start("fit", img, _params(**values), None, image_key="img"))
    assert len(updates) == 30 and updates[-1].progress == 1.0 and updates[-1].result is not None
    curve = updates[-1].result.layer("Fit loss")
    assert isinstance(curve, CurveLayer) and len(curve.series["MSE"][1]) == 30
    losses = curve.series["MSE"][1]
    assert losses[-1] < 0.5 * losses[0], losses
    shown = _compute(op, img, None, "img", **values)
    assert float(shown.layer("Metrics").values["mean |offset| px"]) > 0.1
    assert shown.layer("Metrics").values["fit steps"] == 30
    changed = _compute(op, img, None, "img", **{**values, "fit_rotate": 20.0})  # another target: no fit to show
    assert changed.layer("Metrics").values["mean |offset| px"] == 0.0
    other = _compute(op, img, None, "another image", **values)  # the fit belongs to its image
    assert other.layer("Metrics").values["mean |offset| px"] == 0.0
    op.reset_state()
    assert _compute(op, img, None, "img", **values).layer("Metrics").values["mean |offset| px"] == 0.0
