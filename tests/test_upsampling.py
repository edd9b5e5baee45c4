"""The upsampling lab through compute: its layers, and what each panel draws against a
computation written here: the transposed output against ``F.conv_transpose2d`` of the reduced
image (float32, 1e-5) and its size against the formula, the other methods against torch's
interpolate, max unpooling and pixel shuffle; the tap-count cells against the per-phase counts
(uniform exactly when s divides k); where one input pixel goes (transposed: s i + d j - p; nearest:
its s x s block; unpooling: the block's maximum); the alias energy bars against the spectrum of
each output. The cores are tested in test_functional_upsampling.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.upsampling import spectrum_summary, taps_per_phase
from backends.imaging import long_side_size, luminance, resize
from backends.layers import complete
from backends.ops.upsampling import METHODS, REFERENCE_SIDE, Upsampling
from backends.params import ParamError, is_active, validate

TORCH_TOL = dict(atol=1e-5, rtol=1e-5)  # float32, torch's op against the zero-insertion core
H, W = 90, 132  # non-square


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))


def _compute(image, query=None, **values):
    with torch.no_grad():  # as the worker runs it, with every panel settled
        return complete(Upsampling().compute(image, validate(Upsampling.spec.params, values), query))


def _reference(image, s):
    """The full-resolution image the lab works on, and its s x s block means (the input)."""
    ref = resize(image, long_side_size(image.shape[-2], image.shape[-1], REFERENCE_SIDE, multiple=s))
    return ref, F.avg_pool2d(ref, s)


def _box(k, s, c=3):
    return torch.full((c, 1, k, k), s * s / (k * k))


def test_layers_and_primary(image):
    result = _compute(image)
    assert result.names == ("Output", "All outputs", "Kernel overlap", "Spectra", "Checkerboard energy",
                            "Scatter of one input pixel", "Metrics")
    assert Upsampling.spec.primary == "Output"


def test_a_first_seen_value_shows_the_chosen_method_at_once_and_every_method_when_it_rests(image):
    """Six methods and their spectra are the slow part of a value not seen before: they settle."""
    op = Upsampling()
    params = validate(Upsampling.spec.params, {"kernel_size": 5})
    with torch.no_grad():
        fast = op.compute(image, params, None)
        assert fast.names == ("Output", "Kernel overlap", "Scatter of one input pixel", "Metrics")
        assert set(fast.pending) == {"All outputs", "Spectra", "Checkerboard energy"}
        full = complete(fast)
        np.testing.assert_array_equal(np.asarray(fast.layer("Output").image), np.asarray(full.layer("Output").image))
        again = op.compute(image, params, None)  # every method cached now: the whole frame at once
    assert again.settle is None and again.names == full.names


@pytest.mark.parametrize("k, s, p, q, d", [(3, 2, 1, 1, 1), (4, 2, 1, 0, 1), (5, 3, 0, 2, 1), (3, 2, 2, 1, 2)])
def test_transposed_output_equals_torch_on_the_reduced_image(image, k, s, p, q, d):
    result = _compute(image, kernel_size=k, stride=s, padding=p, output_padding=q, dilation=d)
    _, low = _reference(image, s)
    expected = F.conv_transpose2d(low, _box(k, s), stride=s, padding=p, output_padding=q, groups=3, dilation=d)[0]
    shown = torch.as_tensor(np.asarray(result.layer("Output").image)).permute(2, 0, 1)
    torch.testing.assert_close(shown, expected.clamp(0, 1), **TORCH_TOL)
    rows = (low.shape[-2] - 1) * s - 2 * p + d * (k - 1) + q + 1
    assert shown.shape[1] == rows == result.layer("Metrics").values["transposed output rows (n-1)s - 2p + d(k-1) + q + 1"]
    ref_h, ref_w = low.shape[-2] * s, low.shape[-1] * s
    assert result.layer("Output").extent == (0.0, 0.0, W * shown.shape[2] / ref_w, H * shown.shape[1] / ref_h)


def test_the_other_methods_equal_their_definitions(image):
    s, k = 3, 3
    ref, low = _reference(image, s)
    lumas = torch.as_tensor(_compute(image, stride=s, kernel_size=k).layer("All outputs").maps)
    pooled, idx = F.max_pool2d(ref, s, return_indices=True)
    expected = {
        "nearest": F.interpolate(low, scale_factor=s, mode="nearest"),
        "bilinear": F.interpolate(low, scale_factor=s, mode="bilinear", align_corners=False),
        "max unpool": F.max_unpool2d(pooled, idx, s, output_size=ref.shape[-2:]),
        "resize + conv": F.conv2d(F.interpolate(low, scale_factor=s), _box(k, 1), padding=1, groups=3),
        "pixel shuffle": F.conv_transpose2d(low, _box(k, s), stride=s, groups=3)[..., : ref.shape[-2], : ref.shape[-1]],
    }
    for name, out in expected.items():
        torch.testing.assert_close(lumas[METHODS.index(name)], luminance(out.clamp(0, 1))[0, 0], **TORCH_TOL)


def test_max_unpooling_keeps_each_blocks_maximum_in_place(image):
    s = 2
    ref, _ = _reference(image, s)
    out = torch.as_tensor(np.asarray(_compute(image, method="max unpool", stride=s).layer("Output").image))
    kept = out.permute(2, 0, 1) != 0
    assert int(kept.sum()) == ref.shape[1] * (ref.shape[2] // s) * (ref.shape[3] // s)
    torch.testing.assert_close(out.permute(2, 0, 1)[kept], ref[0][kept].clamp(0, 1))
    blocks = ref[0].unfold(1, s, s).unfold(2, s, s).amax((-1, -2))
    torch.testing.assert_close(out.permute(2, 0, 1).unfold(1, s, s).unfold(2, s, s).amax((-1, -2)), blocks)


@pytest.mark.parametrize("k, s", [(3, 2), (4, 2), (5, 3), (6, 3), (7, 4), (4, 4), (2, 3)])
def test_the_overlap_cells_are_the_taps_per_phase(image, k, s):
    """Cell (row, column) of the window from output pixel ``start``: the row's phase count times
    the column's; one category exactly when s divides k."""
    layer = _compute(image, kernel_size=k, stride=s, padding=0, output_padding=0).layer("Kernel overlap")
    start, n = int(layer.row_labels[0]), len(layer.row_labels)
    assert start % s == 0 and layer.column_labels == layer.row_labels
    picture = np.asarray(layer.image)
    cell = (picture.shape[0] + 1) // n
    index = picture[cell // 2:: cell, cell // 2:: cell]
    counts = np.array([int(c.split()[0]) for c in layer.categories])[index]
    phases = taps_per_phase(k, s)
    rows = np.arange(start, start + n) % s
    np.testing.assert_array_equal(counts, np.outer(phases[rows], phases[rows]))
    assert (len(layer.categories) == 1) == (k % s == 0)
    assert ("uniform" in layer.caption) == (k % s == 0)


def test_a_flat_input_comes_out_as_the_kernels_phase_sums(image):
    caption = _compute(image, kernel_size=3, stride=2).layer("Kernel overlap").caption
    assert "between 0.44 and 1.78" in caption  # box taps of 4/9: 1, 2 or 4 of them
    assert "comes out flat (1.00)" in _compute(image, kernel_size=4, stride=2, kernel="bilinear").layer(
        "Kernel overlap").caption


@pytest.mark.parametrize("k, s, p, d", [(3, 2, 1, 1), (5, 3, 2, 2), (4, 4, 0, 1)])
def test_the_scatter_of_a_transposed_input_pixel_is_the_kernel_stamped_at_s_i_minus_p(image, k, s, p, d):
    qx, qy = 77, 31  # input frame pixels
    ref, low = _reference(image, s)
    ix, iy = int((qx + 0.5) * low.shape[-1] / W), int((qy + 0.5) * low.shape[-2] / H)
    layer = _compute(image, (qx, qy), kernel_size=k, stride=s, padding=p, output_padding=0, dilation=d).layer(
        "Scatter of one input pixel")
    expected = {(s * ix + d * b - p, s * iy + d * a - p) for a in range(k) for b in range(k)}
    assert {tuple(map(int, pt)) for pt in np.asarray(layer.sets[0].points)} == expected
    np.testing.assert_allclose(layer.sets[0].values, 1.0, atol=1e-6)  # a box kernel: equal weights
    np.testing.assert_allclose(np.asarray(layer.sets[1].points), [((ix + 0.5) * s - 0.5, (iy + 0.5) * s - 0.5)])
    assert f"({ix}, {iy})" in layer.caption


def test_nearest_sends_a_pixel_to_its_block_and_unpooling_to_its_maximum(image):
    qx, qy, s = 100, 20, 3
    ref, low = _reference(image, s)
    ix, iy = int((qx + 0.5) * low.shape[-1] / W), int((qy + 0.5) * low.shape[-2] / H)
    near = _compute(image, (qx, qy), method="nearest", stride=s).layer("Scatter of one input pixel")
    block = {(s * ix + b, s * iy + a) for a in range(s) for b in range(s)}
    assert {tuple(map(int, pt)) for pt in np.asarray(near.sets[0].points)} == block
    assert near.boxes == ((float(s * ix), float(s * iy), float(s), float(s)),)
    unpool = _compute(image, (qx, qy), method="max unpool", stride=s).layer("Scatter of one input pixel")
    _, idx = F.max_pool2d(ref, s, return_indices=True)
    flat = int(idx[0, 0, iy, ix])
    assert [tuple(map(int, pt)) for pt in np.asarray(unpool.sets[0].points)] == [(flat % ref.shape[-1], flat // ref.shape[-1])]


def test_the_alias_energy_bars_are_each_outputs_spectrum_share(image):
    s = 2
    result = _compute(image, stride=s, kernel_size=3, padding=1, output_padding=1)
    _, low = _reference(image, s)
    bars = dict(zip(result.layer("Checkerboard energy").labels,
                    result.layer("Checkerboard energy").series["energy at alias frequencies"]))
    out = F.conv_transpose2d(low, _box(3, s), stride=s, padding=1, output_padding=1, groups=3)
    assert bars["transposed"] == pytest.approx(100 * spectrum_summary(luminance(out)[0, 0], s)[1], rel=1e-4)
    nearest = F.interpolate(low, scale_factor=s, mode="nearest")
    assert bars["nearest"] == pytest.approx(100 * spectrum_summary(luminance(nearest)[0, 0], s)[1], abs=1e-4)
    assert bars["nearest"] < 1e-3 and bars["transposed"] > 10 * max(bars["bilinear"], bars["resize + conv"], 1e-3)
    assert bars["pixel shuffle"] > 10 * max(bars["bilinear"], 1e-3)
    labels = result.layer("Spectra").labels
    assert labels[METHODS.index("transposed")] == f"transposed {bars['transposed']:.0f}%"


def test_spectra_are_drawn_at_half_size_zero_frequency_in_the_centre(image):
    maps = np.asarray(_compute(image, stride=2).layer("Spectra").maps)
    ref, _ = _reference(image, 2)
    assert maps.shape == (6, ref.shape[-2] // 2, ref.shape[-1] // 2)


def test_an_output_padding_the_stride_cannot_take_is_a_clear_error(image):
    with pytest.raises(ParamError, match="output_padding: 2 must be smaller than the stride 2 or the dilation 1"):
        _compute(image, stride=2, output_padding=2)
    with pytest.raises(ParamError, match="padding"):
        _compute(torch.rand(1, 3, 8, 8), stride=4, kernel_size=1, padding=3, output_padding=0)


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in Upsampling.spec.params}
    nearest = validate(Upsampling.spec.params, {"method": "nearest"})
    assert not any(is_active(by_name[n], nearest) for n in ("kernel", "padding", "output_padding", "dilation"))
    shuffle = validate(Upsampling.spec.params, {"method": "pixel shuffle"})
    assert is_active(by_name["dilation"], shuffle) and not is_active(by_name["padding"], shuffle)
    assert is_active(by_name["seed"], validate(Upsampling.spec.params, {"kernel": "random"}))
