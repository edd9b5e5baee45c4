"""Deformable convolution: the core against a naive nested loop (float64, 1e-10), against
F.conv2d for zero and integer offsets (1e-5 in float32), gradcheck in float64, torchvision when
present (1e-4), and the operator: layers, the live fit, learned state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backends.layers import CurveLayer, HeatmapLayer, ImageLayer, MetricsLayer, PointsLayer, VectorFieldLayer
from backends.ops.deformable import (
    DeformConv2d,
    bilateral_mask,
    deform_conv2d,
    depthwise_conv,
    depthwise_window_sum,
    global_warp_taps,
    modulated_depthwise,
    resample_widened,
    sample_taps,
    sampling_grid,
)
from backends.registry import operator_class, validated_params
from backends.warp import GLOBAL_WARPS, analytic_offsets, warp_displacement

NAIVE_TOL = 1e-10  # float64, same arithmetic up to summation order
CONV_TOL = 1e-5  # float32 against F.conv2d
TORCHVISION_TOL = 1e-4  # float32, two implementations


def _bilinear(img: torch.Tensor, y: float, x: float) -> float:
    """torchvision's bilinear_interpolate: zero beyond one pixel outside, missing corners read 0."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(img[yy, xx])
    return total


def naive_deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
    n, c_in, h, w = input.shape
    c_out, c_per, kh, kw = weight.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = kh * kw
    n_off_groups = offset.shape[1] // (2 * taps)
    wgroups = c_in // c_per
    out = torch.zeros(n, c_out, ho, wo, dtype=torch.float64)
    for b in range(n):
        for co in range(c_out):
            gw = co // (c_out // wgroups)
            for i in range(ho):
                for j in range(wo):
                    acc = float(bias[co]) if bias is not None else 0.0
                    for cl in range(c_per):
                        ci = gw * c_per + cl
                        og = ci // (c_in // n_off_groups)
                        for a in range(kh):
                            for bb in range(kw):
                                k = a * kw + bb
                                dy = float(offset[b, og * 2 * taps + 2 * k, i, j])
                                dx = float(offset[b, og * 2 * taps + 2 * k + 1, i, j])
                                y = i * stride[0] - padding[0] + a * dilation[0] + dy
                                x = j * stride[1] - padding[1] + bb * dilation[1] + dx
                                v = _bilinear(input[b, ci], y, x)
                                if mask is not None:
                                    v *= float(mask[b, og * taps + k, i, j])
                                acc += float(weight[co, cl, a, bb]) * v
                    out[b, co, i, j] = acc
    return out


def _case(seed=0, n=2, c_in=4, c_out=4, h=6, w=7, k=(3, 3), groups=1, off_groups=1, stride=(1, 1), padding=(1, 1),
          dilation=(1, 1), spread=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ho = (h + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1
    x = torch.rand(n, c_in, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c_in // groups, *k, generator=g, dtype=dtype)
    offset = (torch.rand(n, 2 * off_groups * k[0] * k[1], ho, wo, generator=g, dtype=dtype) - 0.5) * 2 * spread
    mask = torch.rand(n, off_groups * k[0] * k[1], ho, wo, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return x, offset, weight, mask, bias


LAYOUTS = [
    dict(),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    dict(k=(2, 3), padding=(1, 0)),
    dict(groups=2, off_groups=2),
    dict(groups=4, c_out=8, off_groups=1, dilation=(2, 2), padding=(2, 2)),
    dict(off_groups=4, stride=(2, 2), spread=4.0),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_mask", [False, True])
def test_matches_naive_loop(layout, with_mask):
    x, offset, weight, mask, bias = _case(**layout)
    kw = dict(stride=layout.get("stride", (1, 1)), padding=layout.get("padding", (1, 1)), dilation=layout.get("dilation", (1, 1)))
    m = mask if with_mask else None
    ours = deform_conv2d(x, offset, weight, bias, mask=m, **kw)
    ref = naive_deform_conv2d(x, offset, weight, bias, mask=m, **kw)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=NAIVE_TOL, rtol=0)


@pytest.mark.parametrize("layout", [dict(), dict(stride=2, padding=2, dilation=2), dict(groups=2)])
def test_zero_offsets_equal_conv2d(layout):
    layout = dict(layout)
    groups = layout.pop("groups", 1)
    x = torch.rand(2, 4, 13, 11)
    weight = torch.randn(6, 4 // groups, 3, 3)
    bias = torch.randn(6)
    ref = F.conv2d(x, weight, bias, groups=groups, **{"padding": 1, **layout})
    offset = torch.zeros(2, 18, *ref.shape[2:])
    ours = deform_conv2d(x, offset, weight, bias, **{"padding": 1, **layout})
    assert torch.allclose(ours, ref, atol=CONV_TOL)


def test_integer_offsets_are_a_shifted_convolution():
    x = torch.rand(1, 3, 16, 16)
    weight = torch.randn(2, 3, 3, 3)
    dy, dx = 2, -1
    offset = torch.tensor([dy, dx], dtype=torch.float32).repeat(9).view(1, 18, 1, 1).expand(1, 18, 16, 16)
    ours = deform_conv2d(x, offset.contiguous(), weight, padding=1)
    shifted = torch.zeros_like(x)  # shifted[i, j] = x[i + dy, j + dx], zero outside
    shifted[:, :, : 16 - dy, 1:] = x[:, :, dy:, : 16 + dx]
    ref = F.conv2d(shifted, weight, padding=1)
    # Taps that land beyond the padded border read zeros in both; compare away from it.
    assert torch.allclose(ours[..., 1:-3, 2:-1], ref[..., 1:-3, 2:-1], atol=CONV_TOL)


def test_mask_of_ones_equals_v1():
    x, offset, weight, mask, bias = _case(seed=3, groups=2, off_groups=2)
    ones = torch.ones_like(mask)
    assert torch.allclose(deform_conv2d(x, offset, weight, bias, padding=1, mask=ones),
                          deform_conv2d(x, offset, weight, bias, padding=1), atol=NAIVE_TOL)


def test_gradcheck_all_inputs():
    x, offset, weight, mask, bias = _case(seed=5, n=1, c_in=2, c_out=2, h=3, w=4, k=(2, 2), off_groups=2, padding=(0, 1), spread=1.3)
    # Offsets away from integers: bilinear sampling has kinks there, where finite differences lie.
    offset = offset.floor() + 0.25 + 0.5 * torch.rand_like(offset)
    tensors = [t.clone().requires_grad_(True) for t in (x, offset, weight, mask, bias)]

    def fn(xx, oo, ww, mm, bb):
        return deform_conv2d(xx, oo, ww, bb, stride=1, padding=(0, 1), dilation=1, mask=mm)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6)


def test_module_equals_functional():
    torch.manual_seed(0)
    mod = DeformConv2d(4, 6, 3, padding=1, groups=2).double()
    x, offset, _, mask, _ = _case(seed=7)
    assert torch.allclose(mod(x, offset, mask), deform_conv2d(x, offset, mod.weight, mod.bias, padding=1, mask=mask))


def test_empty_batch_and_errors():
    weight = torch.randn(2, 3, 3, 3)
    out = deform_conv2d(torch.rand(0, 3, 8, 8), torch.zeros(0, 18, 8, 8), weight, padding=1)
    assert out.shape == (0, 2, 8, 8)
    with pytest.raises(ValueError, match="offset has 17 channels"):
        deform_conv2d(torch.rand(1, 3, 8, 8), torch.zeros(1, 17, 8, 8), weight, padding=1)
    with pytest.raises(ValueError, match="mask is"):
        deform_conv2d(torch.rand(1, 3, 8, 8), torch.zeros(1, 18, 8, 8), weight, padding=1, mask=torch.ones(1, 8, 8, 8))


@pytest.mark.parametrize("with_mask", [False, True])
def test_matches_torchvision(with_mask):
    tv_ops = pytest.importorskip("torchvision.ops")
    x, offset, weight, mask, bias = _case(seed=11, n=2, c_in=4, c_out=6, h=12, w=10, groups=2, off_groups=2,
                                          stride=(2, 1), padding=(1, 2), dilation=(1, 2), dtype=torch.float32)
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), mask=mask if with_mask else None)
    ours = deform_conv2d(x, offset, weight, bias, **kw)
    ref = tv_ops.deform_conv2d(x, offset, weight, bias, **kw)
    assert torch.allclose(ours, ref, atol=TORCHVISION_TOL)


# -- offset fields and the operator ------------------------------------------------------------------


def _image(h=48, w=64, seed=0) -> torch.Tensor:
    """A smooth random texture: bilinear fits need structure at a few scales."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=g)
    fine = torch.rand(1, 3, h // 2, w // 2, generator=g)
    up = lambda t: F.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)  # noqa: E731
    return (0.7 * up(coarse) + 0.3 * up(fine)).clamp(0, 1)


def test_shear_offsets_follow_the_warp():
    off = analytic_offsets("shear", 0.4, (10.0, 12.0), 20, 30, 3, 2)
    assert off.shape == (1, 18, 20, 30)
    dy, dx = off[0, 0::2], off[0, 1::2]  # (K, H, W)
    tap_y = torch.tensor([-2.0, -2, -2, 0, 0, 0, 2, 2, 2])[:, None, None]
    rows = torch.arange(20.0)[None, :, None]
    assert torch.allclose(dy, torch.zeros_like(dy), atol=1e-6)
    assert torch.allclose(dx, (0.2 * (rows + tap_y - 12.0)).expand_as(dx), atol=1e-5)


def test_v2_bilateral_path_equals_the_core_with_that_mask():
    img = _image()
    off = analytic_offsets("swirl", 0.7, (30.0, 20.0), 48, 64, 3, 2)
    kernel = torch.rand(9)
    grid = sampling_grid(off, (48, 64), (3, 3), (1, 1), (2, 2), (2, 2))
    taps = sample_taps(img, grid, 9)
    mask = bilateral_mask(taps, img, 0.2)
    ours = modulated_depthwise(taps, kernel, mask)
    core = deform_conv2d(img, off, kernel.view(1, 1, 3, 3).expand(3, 1, 3, 3), padding=2, dilation=2, mask=mask)
    assert torch.allclose(ours, core, atol=CONV_TOL)


def _run(op, img, query=None, **values):
    with torch.no_grad():  # as the worker runs it
        return op.run(img, validated_params("deformable", values), query)


@pytest.mark.parametrize("source", ["swirl", "zoom", "rotate", "shear", "random", "edges", "learned"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_run_gives_the_named_layers(source, version):
    op = operator_class("deformable")()
    img = _image()
    result = _run(op, img, (20, 30), offsets=source, version=version, kernel="sobel_x" if source == "edges" else "gaussian")
    names = ["Deformable output", "Regular convolution", "Offset field", "Sampling points", "Modulation", "Metrics"]
    if source == "learned":
        names[5:5] = ["Fit target", "Fit loss"]
    assert list(result.names) == names
    out = result.layer("Deformable output")
    assert isinstance(out, ImageLayer) and tuple(out.image.shape[:2]) == (48, 64)
    field = result.layer("Offset field")
    assert isinstance(field, VectorFieldLayer) and field.origins.shape == field.vectors.shape and 20 <= len(field.origins) <= 9 * 40 * 40
    points = result.layer("Sampling points")
    assert isinstance(points, PointsLayer) and points.sets[1].points.shape == (9, 2)
    assert points.sets[1].join_to == (20.0, 30.0)
    mod = result.layer("Modulation")
    assert isinstance(mod, HeatmapLayer) and tuple(mod.maps.shape) == (48, 64)
    assert isinstance(result.layer("Metrics"), MetricsLayer)


def test_fit_lowers_the_loss_and_run_shows_the_learned_offsets():
    op = operator_class("deformable")()
    img = _image(64, 64)
    params = validated_params("deformable", dict(offsets="learned", version="v2", fit_steps=30, fit_size="64", fit_rotate=10.0))
    with pytest.raises(ValueError, match="learned"):
        op.start("fit", img, {**params, "offsets": "swirl"}, None)
    with torch.no_grad():  # the worker thread runs jobs with autograd off too
        updates = list(op.start("fit", img, params, None))
    assert len(updates) == 30 and updates[-1].progress == 1.0 and updates[-1].result is not None
    losses = op._fit.losses
    assert losses[-1] < 0.5 * losses[0], losses
    curve = updates[-1].result.layer("Fit loss")
    assert isinstance(curve, CurveLayer) and len(curve.series["MSE"][1]) == 30
    shown = _run(op, img, None, **{**params, "fit_steps": 30})
    assert float(shown.layer("Metrics").values["mean |offset| px"]) > 0.1
    assert shown.layer("Metrics").values["fit steps"] == 30
    changed = _run(op, img, None, **{**params, "fit_rotate": 20.0})  # another target: no fit to show
    assert changed.layer("Metrics").values["mean |offset| px"] == 0.0
    op.reset_state()
    assert _run(op, img, None, **params).layer("Metrics").values["mean |offset| px"] == 0.0


def test_fast_grid_equals_the_differentiable_grid():
    offset = torch.randn(2, 36, 5, 6)
    fast = sampling_grid(offset, (7, 8), (3, 3), (1, 2), (1, 0), (2, 1))
    tracked = sampling_grid(offset.clone().requires_grad_(True), (7, 8), (3, 3), (1, 2), (1, 0), (2, 1))
    assert torch.equal(fast, tracked.detach())


@pytest.mark.parametrize("kind", GLOBAL_WARPS)
@pytest.mark.parametrize("k, d", [(3, 2), (5, 1)])
def test_a_global_warp_reads_every_tap_from_one_resampled_image(kind, k, d):
    """The operator's fast path for warps of the plane equals the general core: the taps to
    sample_taps at the same offsets, the v1 output to deform_conv2d, both to 1e-5."""
    img, (h, w), q = _image(), (48, 64), (30.0, 20.0)
    off = analytic_offsets(kind, 0.6, q, h, w, k, d)
    dx, dy = warp_displacement(kind, 0.6, q, h, w, d * (k // 2))
    reach = d * (k // 2)
    expected = sample_taps(img, sampling_grid(off, (h, w), (k, k), (1, 1), (reach, reach), (d, d)), k * k)
    torch.testing.assert_close(global_warp_taps(img, dx, dy, k, d), expected, atol=CONV_TOL, rtol=0)
    kernel = torch.rand(k * k, generator=torch.Generator().manual_seed(k))
    core = deform_conv2d(img, off, kernel.view(1, 1, k, k).expand(3, 1, k, k), padding=reach, dilation=d)
    torch.testing.assert_close(depthwise_window_sum(resample_widened(img, dx, dy), kernel, d), core, atol=CONV_TOL, rtol=0)


def test_the_regular_twin_equals_a_depthwise_conv2d():
    img, kernel = _image(), torch.rand(25, generator=torch.Generator().manual_seed(1))
    expected = F.conv2d(img, kernel.view(1, 1, 5, 5).expand(3, 1, 5, 5), padding=6, dilation=3, groups=3)
    torch.testing.assert_close(depthwise_conv(img, kernel, 3), expected, atol=CONV_TOL, rtol=0)


def test_the_global_warp_path_matches_torchvision():
    tv_ops = pytest.importorskip("torchvision.ops")
    img, (h, w), k, d = _image(), (48, 64), 3, 2
    dx, dy = warp_displacement("swirl", 0.8, (30.0, 20.0), h, w, d)
    kernel = torch.rand(9, generator=torch.Generator().manual_seed(3))
    weight = kernel.view(1, 1, 3, 3).expand(3, 1, 3, 3).contiguous()
    ref = tv_ops.deform_conv2d(img, analytic_offsets("swirl", 0.8, (30.0, 20.0), h, w, k, d), weight, padding=d, dilation=d)
    assert torch.allclose(depthwise_window_sum(resample_widened(img, dx, dy), kernel, d), ref, atol=TORCHVISION_TOL)
