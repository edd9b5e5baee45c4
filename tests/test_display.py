"""What the worker hands the UI for scalar maps: palette indices for the layer's levels, NaN
transparent, and the same indices for the same array (so unchanged panels skip repainting)."""

import numpy as np
import torch

from backends.layers import FeatureMapsLayer, HeatmapLayer, ImageLayer, Result
from explorer.display import DisplayEncoder
from widgets.colormaps import indexed_table, lookup_table
from widgets.encoding import auto_levels, rgb_to_uint8, to_indexed
from widgets.mosaic import tile


def test_indices_span_the_levels_and_nan_is_the_transparent_zero():
    values = np.array([[-1.0, 0.0, 0.5], [1.0, 2.0, np.nan]], np.float32)
    idx = to_indexed(values, (0.0, 1.0))
    assert idx.dtype == np.uint8
    assert idx.tolist() == [[1, 1, 128], [255, 255, 0]]  # clipped below and above, 0.5 in the middle
    table = indexed_table("viridis")
    assert table[0, 3] == 0 and (table[1:, 3] == 255).all()
    np.testing.assert_allclose(table[[1, 255], :3].astype(int), lookup_table("viridis")[[0, 255]].astype(int), atol=2)


def test_rgb_pictures_round_to_the_nearest_byte_in_any_memory_order():
    values = torch.tensor([-0.5, 0.0, 1.6 / 255, 0.4, 0.999, 1.0, 2.0, 0.25]).reshape(2, 2, 2)
    planar = torch.stack([values[0], values[1], values[0].flip(0)])  # (3, 2, 2) channels first
    planar[2, 1, 1] = float("nan")
    view = planar.permute(1, 2, 0).numpy()  # (H, W, 3) over channel planes, as operators return
    clipped = np.nan_to_num(np.clip(np.asarray(view, np.float64), 0, 1), nan=0.0)
    expected = np.rint(clipped * 255).astype(np.uint8)  # no value here is within rounding of a tie
    for rgb in (view, np.ascontiguousarray(view), np.ascontiguousarray(view, np.float64)):
        out = rgb_to_uint8(rgb)
        assert out.dtype == np.uint8 and out.flags.c_contiguous and out.shape == (2, 2, 3)
        np.testing.assert_array_equal(out, expected)
    assert expected[0, 0].tolist() == [0, 255, 2] and expected[1, 1].tolist() == [102, 64, 0]  # clipped; NaN black
    assert rgb_to_uint8(np.array([[np.inf, -np.inf]], np.float32)).tolist() == [[255, 0]]


def test_overlay_palettes_ramp_their_alpha_like_the_float_path():
    table = indexed_table("inferno", 0.8)
    assert table[0, 3] == 0 and table[1, 3] == 0 and table[255, 3] == int(0.8 * 255)
    assert (np.diff(table[1:, 3].astype(int)) >= 0).all()


def test_auto_levels_ignore_non_finite_values_and_widen_a_flat_map():
    assert auto_levels(np.array([np.nan, 2.0, np.inf, 5.0])) == (2.0, 5.0)
    assert auto_levels(np.full(4, 3.0)) == (3.0, 4.0)


def test_index_mosaics_keep_their_type_with_transparent_gaps():
    mosaic, origins = tile(np.full((3, 4, 5), 7, np.uint8), gap=2)
    assert mosaic.dtype == np.uint8 and set(np.unique(mosaic)) == {0, 7} and len(origins) == 3


def test_the_encoder_turns_scalar_layers_into_indices_once_per_array():
    encoder = DisplayEncoder()
    maps = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    maps[0, 0, 0] = np.nan
    rgb = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    result = Result((HeatmapLayer("h", maps[0]), FeatureMapsLayer("f", maps, labels=tuple("abcd"), levels=(0.0, 0.5)),
                     ImageLayer("grey", maps[1]), ImageLayer("rgb", rgb)))
    first, again = encoder.encode(result), encoder.encode(result)
    heat, feats, grey, colour = first.layers
    assert heat.maps.dtype == np.uint8 and heat.maps[0, 0] == 0 and heat.levels == auto_levels(maps[0])
    assert feats.levels == (0.0, 0.5) and (feats.maps == to_indexed(maps, (0.0, 0.5))).all()
    assert grey.image.dtype == np.uint8 and colour.image.dtype == np.uint8 and colour.image.flags["C_CONTIGUOUS"]
    assert all(a is b for a, b in zip([lay.maps if hasattr(lay, "maps") else lay.image for lay in first.layers],
                                      [lay.maps if hasattr(lay, "maps") else lay.image for lay in again.layers]))


def test_a_panel_whose_picture_did_not_change_gets_last_frames_array_so_its_view_skips_the_redraw():
    encoder = DisplayEncoder()
    back = torch.rand(16, 16, 3)
    grey = torch.rand(6, 6)
    grey[0, 0] = float("nan")

    def frame(heat: torch.Tensor) -> Result:  # every array built anew, as an operator rebuilds unchanged panels
        return encoder.encode(Result((ImageLayer("picture", back.clone()), ImageLayer("grey", grey.clone()),
                                      HeatmapLayer("heat", heat.clone(), background=back.clone(), levels=(0.0, 1.0)),
                                      ImageLayer("kept float", back.clone() * 2, levels=(0.0, 2.0)))))

    heat = torch.zeros(16, 16)
    first, same = frame(heat), frame(heat)
    for a, b in zip(first.layers, same.layers):
        for field in ("image", "maps", "background"):
            if getattr(a, field, None) is not None:
                assert getattr(a, field) is getattr(b, field), (a.name, field)
    heat[15, 3] = 0.5  # one pixel of one map, in the last row (past the rows compared first)
    changed = frame(heat)
    assert changed.layers[2].maps is not same.layers[2].maps and changed.layers[2].maps[15, 3] == to_indexed(np.float32([0.5]), (0.0, 1.0))[0]
    assert changed.layers[2].background is same.layers[2].background and changed.layers[0].image is same.layers[0].image


def test_a_picture_several_panels_share_in_one_frame_is_converted_once():
    from backends.layers import PointSet, PointsLayer

    back = torch.rand(16, 16, 3)
    points = PointSet(np.array([[1.0, 1.0]]))
    result = DisplayEncoder().encode(Result((PointsLayer("a", (points,), background=back),
                                             HeatmapLayer("b", np.zeros((16, 16), np.float32), background=back))))
    a, b = result.layers
    assert a.background is b.background and a.background.dtype == np.uint8


def test_tensors_rgb_backgrounds_and_job_results_all_reach_the_views_in_display_form():
    from backends.layers import INPUT, PointSet, PointsLayer

    encoder = DisplayEncoder()
    back = torch.rand(6, 7, 3, generator=torch.Generator().manual_seed(2))
    result = Result((PointsLayer("p", (PointSet(torch.zeros(2, 2)),), background=back),
                     PointsLayer("q", (PointSet(np.zeros((1, 2), np.float32)),), background=INPUT),
                     HeatmapLayer("t", torch.linspace(0, 1, 12).view(3, 4))))
    p, q, t = encoder.encode(result).layers
    assert p.background.dtype == np.uint8 and p.background.shape == (6, 7, 3)
    np.testing.assert_array_equal(p.background, np.clip(back.numpy() * 255 + 0.5, 0, 255).astype(np.uint8))
    assert isinstance(p.sets[0].points, np.ndarray) and q.background is INPUT
    assert t.maps.dtype == np.uint8 and t.levels == (0.0, 1.0) and t.maps[0, 0] == 1 and t.maps[-1, -1] == 255


def test_pictures_read_straight_from_tensors_are_new_arrays_the_operator_cannot_change_later():
    """Pictures and maps convert from their tensors without a float copy; what reaches the UI is
    still its own array, so a tensor an operator reuses in place never changes a drawn frame."""
    rgb = torch.rand(8, 8, 3)
    heat = torch.rand(8, 8)
    grey = torch.rand(8, 8, 3).double()  # kept as floats (levels other than 0..1): copied
    result = DisplayEncoder().encode(Result((ImageLayer("rgb", rgb), HeatmapLayer("h", heat, levels=(0.0, 1.0)),
                                             ImageLayer("wide", grey, levels=(0.0, 2.0)))))
    shown_rgb, shown_heat, shown_wide = result.layers
    expected = np.clip(np.floor(rgb.numpy() * 255 + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(shown_rgb.image, expected)
    np.testing.assert_array_equal(shown_heat.maps, to_indexed(heat.numpy(), (0.0, 1.0)))
    before = (shown_rgb.image.copy(), shown_heat.maps.copy(), shown_wide.image.copy())
    rgb.fill_(0.0), heat.fill_(0.0), grey.fill_(0.0)
    for after, kept in zip((shown_rgb.image, shown_heat.maps, shown_wide.image), before):
        np.testing.assert_array_equal(after, kept)
    assert shown_wide.image.dtype == np.float32
