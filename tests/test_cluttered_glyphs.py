"""The cluttered, distorted digits: deterministic, balanced, and their affine says where the glyph is."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from backends.data import cluttered_glyphs as cg
from backends.data.glyphs import FONTS, draw_glyph
from backends.functional.affine import affine_transform, compose_affine


def test_shapes_dtypes_and_range():
    x, y, p = cg.sample(37, 3)
    assert x.shape == (37, 1, cg.SIZE, cg.SIZE) and x.dtype == torch.float32
    assert y.shape == (37,) and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.6
    assert p["affine"].shape == (37, 2, 3) and p["theta"].shape == (37, 2, 3) and p["centre"].shape == (37, 2)
    assert np.abs(p["angle"]).max() <= 45.0 and p["scale"].min() >= 0.6 and p["scale"].max() <= 1.1
    assert torch.equal(y, torch.from_numpy(p["label"]))
    assert cg.sample(0, 1)[0].shape == (0, 1, cg.SIZE, cg.SIZE)


def test_deterministic_per_seed():
    a, la, pa = cg.sample(20, 11)
    b, lb, pb = cg.sample(20, 11)
    c, _, _ = cg.sample(20, 12)
    assert torch.equal(a, b) and torch.equal(la, lb) and np.array_equal(pa["affine"], pb["affine"])
    assert not torch.equal(a, c)


def test_labels_balanced():
    _, y, _ = cg.sample(1003, 4)
    counts = torch.bincount(y, minlength=10)
    assert int(counts.min()) == 100 and int(counts.max()) == 101
    assert len(cg.CLASSES) == 10


def test_affine_matches_compose_affine():
    p = cg.sample_params(12, 5)
    c = cg.CANONICAL_CENTRE
    for i in range(12):
        t = p["centre"][i] - np.array(c)
        m = compose_affine(float(p["angle"][i]), float(p["scale"][i]), float(p["shear"][i]), float(t[0]), float(t[1]), c)
        np.testing.assert_allclose(p["affine"][i], m[:2].numpy(), atol=1e-4)


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum()


def test_affine_maps_the_glyph_centroid_where_it_is_drawn():
    """Independent check: draw the upright glyph separately, take its ink centroid in the canonical
    frame, push it through the returned affine, and compare with the centroid of the drawn ink
    (centroids commute with affine maps). Tolerance 0.35 px at 48x48 (resampling)."""
    p = cg.sample_params(40, 8)
    for i in range(40):
        flags = FONTS[int(p["font"][i])] | (cv2.FONT_ITALIC if p["italic"][i] else 0)
        ink, _, _ = draw_glyph(cg.CLASSES[int(p["label"][i])], flags, int(p["thickness"][i]), 2 * cg.GLYPH_HEIGHT, 96)
        ys, xs = np.nonzero(ink)
        box_centre = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
        canonical = np.array(cg.CANONICAL_CENTRE) + (_centroid(ink.astype(np.float64)) - box_centre) / 2
        expected = p["affine"][i] @ np.append(canonical, 1.0)
        drawn = _centroid(cg.render(p, i, clutter=False).astype(np.float64))
        assert np.abs(drawn - expected).max() < 0.35, (i, drawn, expected)
        assert 0 <= p["centre"][i].min() and p["centre"][i].max() <= cg.SIZE - 1


def test_theta_rectifies_the_glyph():
    """Sampling the drawn glyph through theta gives back the upright glyph (IoU of the inks)."""
    p = cg.sample_params(10, 9)
    for i in range(10):
        drawn = torch.from_numpy(cg.render(p, i, clutter=False))[None, None]
        crop = affine_transform(drawn, torch.from_numpy(p["theta"][i])[None].float())[0, 0].numpy()
        flags = FONTS[int(p["font"][i])] | (cv2.FONT_ITALIC if p["italic"][i] else 0)
        ink, cx, cy = draw_glyph(cg.CLASSES[int(p["label"][i])], flags, int(p["thickness"][i]), 2 * cg.GLYPH_HEIGHT, 96)
        shift = np.float32([[1, 0, 47.5 - cx], [0, 1, 47.5 - cy]])
        upright = cv2.resize(cv2.warpAffine(ink, shift, (96, 96)), (48, 48), interpolation=cv2.INTER_AREA) / 255.0
        a, b = crop > 0.3 * crop.max(), upright > 0.3
        assert (a & b).sum() / (a | b).sum() > 0.6, i


def test_clutter_is_fragments_around_the_glyph():
    p = cg.sample_params(30, 10)
    extra = [float((cg.render(p, i) - cg.render(p, i, clutter=False)).clip(0).sum()) for i in range(30)]
    assert min(extra) > 0.0  # every item has clutter
    assert p["fragments"].min() >= 3 and p["fragments"].max() <= 6


def test_test_set_is_fixed():
    x, y, _ = cg.test_set()
    assert x.shape[0] == cg.TEST_SIZE and torch.equal(torch.bincount(y), torch.full((10,), cg.TEST_SIZE // 10))
    assert torch.equal(cg.test_set()[0][:50], x[:50])


def test_from_image_inverts_bright_images():
    rgb = torch.ones(1, 3, 60, 80)
    rgb[..., 20:40, 35:45] = 0.1  # a dark bar on white, in the centre square
    out = cg.from_image(rgb)
    assert out.shape == (1, 1, cg.SIZE, cg.SIZE) and out.dtype == torch.float32
    assert float(out[0, 0, 24, 24]) > 0.95 and float(out[0, 0, 2, 2]) < 0.05
    dark = 1.0 - rgb  # already bright on dark: kept
    assert float(cg.from_image(dark)[0, 0, 24, 24]) > 0.95 and float(cg.from_image(dark)[0, 0, 2, 2]) < 0.05
    assert float(cg.from_image(torch.full((1, 3, 30, 30), 0.4)).abs().max()) == 0.0  # flat image: no ink


def test_the_placed_view_is_the_view_nearest_resized_into_its_square_in_bytes_black_around_it():
    view = torch.rand(1, 1, cg.SIZE, cg.SIZE, generator=torch.Generator().manual_seed(4))
    view[0, 0, 0, 0], view[0, 0, 1, 0] = -0.5, 1.5  # out of range: clipped
    for height, width in ((512, 512), (300, 517), (1000, 37)):
        x0, y0, side = cg.view_box(height, width)
        placed = cg.placed_view(view, height, width)
        assert placed.dtype == torch.uint8 and placed.shape == (height, width, 3)
        rows = (torch.arange(side) * cg.SIZE) // side  # nearest: the view pixel each screen pixel falls in
        expected = (view[0, 0].clamp(0, 1) * 255).round().to(torch.uint8)[rows][:, rows]
        for c in range(3):
            assert torch.equal(placed[y0: y0 + side, x0: x0 + side, c], expected)
        inside = torch.zeros(height, width, dtype=torch.bool)
        inside[y0: y0 + side, x0: x0 + side] = True
        assert not placed[~inside].any()  # black around the square
