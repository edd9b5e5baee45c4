"""The convolution family through compute: its layers, and what each panel draws against a
computation written here: the output against ``F.conv2d`` with the variant's groups and weights
(and the shuffle as reshape-transpose-reshape), the contributions against autograd times the
input at a non-square image and asymmetric query, the taps' places on the input frame, the
connectivity cells by group (with and without the shuffle), and the cost rows against the
formulas. The cores are tested in test_functional_conv_family.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.features import feature_bank
from backends.layers import complete
from backends.ops.conv_family import INPUTS, VARIANTS, ConvolutionFamily, family_weights
from backends.params import is_active, validate

TORCH_TOL = dict(atol=1e-5, rtol=1e-5)  # float32, the same convolutions in another order
H, W = 72, 100  # non-square: a working map of 72 x 100 (the bank never upscales)
QUERY = (61, 23)  # asymmetric


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def channels(image):
    bank = feature_bank(image, side=128)
    return bank.maps[:, [bank.labels.index(label) for label, _ in INPUTS]]


def _compute(image, query=QUERY, **values):
    op = ConvolutionFamily()
    with torch.no_grad():  # as the worker runs it
        return complete(op.compute(image, validate(ConvolutionFamily.spec.params, values), query))


def _shuffle(x, g):
    n, c, h, w = x.shape
    return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


def _reference(variant, x, w, k):
    """The variant with F.conv2d and the matching groups, written out here."""
    c = x.shape[1]
    if variant == "standard":
        return F.conv2d(x, w.standard, padding=k // 2)
    if variant == "depthwise":
        return F.conv2d(x, w.depthwise, padding=k // 2, groups=c)
    if variant == "pointwise":
        return F.conv2d(x, w.pointwise)
    if variant == "separable":
        return F.conv2d(F.conv2d(x, w.depthwise, padding=k // 2, groups=c), w.separable_pointwise)
    out = F.conv2d(x, w.group, padding=k // 2, groups=w.groups)
    out = _shuffle(out, w.groups) if w.shuffle else out
    return out if variant == "group" else F.conv2d(out, w.pair_pointwise, groups=w.groups)


def test_layers_primary_and_tabs(image):
    result = _compute(image)
    assert result.names == ("Output", "All variants", "Input channels", "Connectivity", "Receptive field",
                            "Contributions", "Cost", "Metrics")
    assert ConvolutionFamily.spec.primary == "Output"
    tabbed = {n for _, names in ConvolutionFamily.spec.tabs for n in names}
    assert tabbed <= set(result.names)


def test_the_cost_panel_settles_after_a_weight_change(image):
    op = ConvolutionFamily()
    with torch.no_grad():
        first = op.compute(image, validate(ConvolutionFamily.spec.params, {"seed": 3}), QUERY)
        assert first.pending == ("Cost",) and "Cost" not in first.names
        complete(first)
        again = op.compute(image, validate(ConvolutionFamily.spec.params, {"seed": 3, "channel": 4}), QUERY)
    assert again.settle is None and "Cost" in again.names


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_equals_conv2d_with_the_variants_groups_and_weights(image, channels, variant):
    k, c_out, m, g = 5, 16, 3, 4
    result = _compute(image, variant=variant, kernel_size=str(k), out_channels=str(c_out), multiplier=m, groups=str(g),
                      seed=7)
    w = family_weights(8, c_out, k, m, g, True, 7)
    expected = _reference(variant, channels, w, k)[0]
    maps = torch.as_tensor(result.layer("Output").maps)
    assert maps.shape == expected.shape == ((24 if variant == "depthwise" else c_out), H, W)
    torch.testing.assert_close(maps, expected, **TORCH_TOL)


def test_the_group_convolution_is_the_standard_one_inside_its_groups():
    w = family_weights(8, 16, 3, 1, 2, False, 1)
    torch.testing.assert_close(w.group[:8], w.standard[:8, :4])
    torch.testing.assert_close(w.group[8:], w.standard[8:, 4:])


@pytest.mark.parametrize("variant, channel", [("group pair", 5), ("separable", 12), ("depthwise", 3), ("pointwise", 9)])
def test_contributions_are_the_gradient_times_the_input(image, channels, variant, channel):
    """Tile i: d out[channel] / d input[i] in the k x k window around the clicked working pixel,
    times the input there, by autograd of the reference; NaN tiles for inputs it does not read."""
    k = 3
    result = _compute(image, variant=variant, kernel_size=str(k), groups="4", channel=channel, seed=2)
    w = family_weights(8, 16, k, 2, 4, True, 2)
    x = channels.clone().requires_grad_(True)
    with torch.enable_grad():
        _reference(variant, x, w, k)[0, channel - 1, QUERY[1], QUERY[0]].backward()
    kv = 1 if variant == "pointwise" else k
    r = kv // 2
    grad = x.grad[0, :, QUERY[1] - r: QUERY[1] + r + 1, QUERY[0] - r: QUERY[0] + r + 1]
    window = channels[0, :, QUERY[1] - r: QUERY[1] + r + 1, QUERY[0] - r: QUERY[0] + r + 1]
    tiles = torch.as_tensor(result.layer("Contributions").maps)
    scale = tiles.shape[-1] // kv
    shown = tiles[:, ::scale, ::scale]
    reads = grad.flatten(1).ne(0).any(1)
    assert torch.isnan(shown[~reads]).all() and not torch.isnan(shown[reads]).any()
    torch.testing.assert_close(shown[reads], (grad * window)[reads], **TORCH_TOL)
    value = float(result.layer("Metrics").values[next(n for n in result.layer("Metrics").values if "clicked" in n)])
    assert value == pytest.approx(float((grad * window).sum()), abs=1e-4)


def test_the_taps_are_drawn_on_the_input_frame_around_the_query():
    """A 512 x 256 image works at 128 x 64: a working pixel is 4 x 4 input pixels."""
    image = torch.rand(1, 3, 256, 512, generator=torch.Generator().manual_seed(3))
    qx, qy = 301, 97
    layer = _compute(image, (qx, qy), variant="standard", kernel_size="3").layer("Receptive field")
    cx, cy = (qx + 0.5) // 4, (qy + 0.5) // 4
    expected = [((cx + dx + 0.5) * 4 - 0.5, (cy + dy + 0.5) * 4 - 0.5) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    np.testing.assert_allclose(np.asarray(layer.sets[0].points), expected)
    assert layer.boxes[0] == ((cx - 1) * 4, (cy - 1) * 4, 12.0, 12.0)


@pytest.mark.parametrize("shuffle", [True, False])
def test_connectivity_cells_follow_the_groups_and_the_shuffle(image, shuffle):
    """Group conv, g = 2, C_out = 8: output o reads group (o mod 2) after the shuffle, group
    o // 4 without; a read cell holds 1 + its input's group, an unread one 0."""
    layer = _compute(image, variant="group", out_channels="8", groups="2", shuffle=shuffle).layer("Connectivity")
    picture = np.asarray(layer.image)
    cell_h, cell_w = (picture.shape[0] + 1) // 8, (picture.shape[1] + 1) // 8
    cells = picture[cell_h // 2:: cell_h, cell_w // 2:: cell_w]
    group_in = np.arange(8) // 4
    group_out = np.arange(8) % 2 if shuffle else np.arange(8) // 4
    np.testing.assert_array_equal(cells, np.where(group_out[:, None] == group_in[None, :], 1 + group_in[None, :], 0))
    assert layer.categories == ("no link", "group 1", "group 2")
    assert "(group 1: horiz to 135°; group 2: red to texture)" in layer.caption
    assert len(layer.row_labels) == 8 and layer.column_labels == tuple(s for _, s in INPUTS)
    assert (picture[cell_h - 1] == -1).all()  # a black line between rows of cells


def test_the_pair_mixes_every_group_only_with_the_shuffle(image):
    mixed = np.asarray(_compute(image, variant="group pair", groups="4").layer("Connectivity").image)
    apart = np.asarray(_compute(image, variant="group pair", groups="4", shuffle=False).layer("Connectivity").image)
    assert (mixed[mixed >= 0] > 0).all()  # every cell read
    assert (apart == 0).sum() > 0


def test_cost_rows_and_bars_follow_the_formulas(image):
    c_in, c_out, k, m, g = 8, 32, 7, 3, 8
    result = _compute(image, kernel_size=str(k), out_channels=str(c_out), multiplier=m, groups=str(g))
    metrics = result.layer("Metrics").values
    expected = {"standard k x k": c_out * c_in * k * k, "depthwise": c_in * m * k * k, "pointwise 1 x 1": c_out * c_in,
                "group conv": c_out * (c_in // g) * k * k, "depthwise separable": c_in * m * k * k + c_in * m * c_out,
                "two group layers": c_out * (c_in // g) * k * k + c_out * (c_out // g)}
    for title, params in expected.items():
        assert metrics[f"{title}: parameters"] == params
        assert metrics[f"{title}: multiply-adds"] == params * H * W
        assert metrics[f"{title}: time ms"] > 0
    bars = result.layer("Cost")
    standard = expected["standard k x k"]
    np.testing.assert_allclose(bars.series["parameters"], [100 * p / standard for p in expected.values()], rtol=1e-6)
    np.testing.assert_allclose(bars.series["multiply-adds"], bars.series["parameters"], rtol=1e-6)


def test_depthwise_tiles_name_the_input_and_the_kernel(image):
    out = _compute(image, variant="depthwise", multiplier=3).layer("Output")
    assert out.labels[:4] == ("horiz blur", "horiz d/dx", "horiz d/dy", "45° blur")
    assert len(out.labels) == 24 and out.levels[0] == -out.levels[1]


def test_a_channel_beyond_the_variant_is_its_last_and_said(image):
    result = _compute(image, variant="depthwise", multiplier=1, channel=20)
    assert "channel 20 asked; this variant has 8" in result.layer("Receptive field").caption
    assert result.layer("Contributions").caption.startswith("weight x input for every tap of output texture blur")


def test_the_side_by_side_grid_has_a_row_per_variant(image, channels):
    """Row r, column j: output channel j of variant r, reduced by 2 x 2 means, on one positive scale per row."""
    layer = _compute(image, multiplier=1, out_channels="8", kernel_size="3", seed=4).layer("All variants")
    assert layer.row_labels == VARIANTS and layer.column_labels == tuple(str(j) for j in range(1, 9))
    grid = torch.as_tensor(np.asarray(layer.image))
    th, tw = (grid.shape[0] - 10) // 6, (grid.shape[1] - 14) // 8  # 2 px gaps
    w = family_weights(8, 8, 3, 1, 2, True, 4)
    for r, variant in enumerate(VARIANTS):
        small = F.avg_pool2d(_reference(variant, channels, w, 3), 2)[0]  # 100 x 72 -> 50 x 36 tiles
        row = torch.stack([grid[r * (th + 2): r * (th + 2) + th, j * (tw + 2): j * (tw + 2) + tw] for j in range(8)])
        scale = float((row * small).sum() / (small * small).sum())
        assert scale > 0
        torch.testing.assert_close(row, small * scale, atol=1e-4, rtol=1e-4)
    assert torch.isnan(grid[th: th + 2]).all()  # the gap between rows is blank


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in ConvolutionFamily.spec.params}
    assert not is_active(by_name["shuffle"], validate(ConvolutionFamily.spec.params, {"groups": "1"}))
    assert is_active(by_name["shuffle"], validate(ConvolutionFamily.spec.params, {"groups": "4"}))
