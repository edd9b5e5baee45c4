"""The deformable convolution cores: deform_conv2d against a naive nested loop (float64, 1e-10),
against F.conv2d for zero and integer offsets (1e-5 in float32), gradcheck in float64, the module
twin, torchvision when present (1e-4); and the global-warp path (taps from one image resampled on
the widened grid) against deform_conv2d at offsets written out by hand from the warp."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backends.functional.affine import compose_affine
from backends.functional.deformable import (
    DeformConv2d,
    deform_conv2d,
    modulated_depthwise,
    offsets_to_xy,
    sample_taps,
    sampling_grid,
    tap_vectors,
)
from backends.functional.global_warp import (
    affine_displacement,
    depthwise_conv,
    depthwise_window_sum,
    global_warp_taps,
    offsets_from_displacement,
    resample_widened,
    swirl_displacement,
    swirl_envelope,
)

NAIVE_TOL = 1e-10  # float64, same arithmetic up to summation order
CONV_TOL = 1e-5  # float32 against F.conv2d
TORCHVISION_TOL = 1e-4  # float32, two implementations
FIELD_TOL = 1e-4  # float32 fields against float64 by hand, coordinates up to ~60 px


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



def test_fast_grid_equals_the_differentiable_grid():
    offset = torch.randn(2, 36, 5, 6, generator=torch.Generator().manual_seed(2))
    fast = sampling_grid(offset, (7, 8), (3, 3), (1, 2), (1, 0), (2, 1))
    tracked = sampling_grid(offset.clone().requires_grad_(True), (7, 8), (3, 3), (1, 2), (1, 0), (2, 1))
    assert torch.equal(fast, tracked.detach())


def test_tap_vectors_and_offset_layout():
    """Taps are row-major (x varies fastest); offsets hold (dy, dx) per tap, offsets_to_xy gives (dx, dy)."""
    taps = tap_vectors(3, 2)
    assert taps.tolist() == [[-2, -2], [0, -2], [2, -2], [-2, 0], [0, 0], [2, 0], [-2, 2], [0, 2], [2, 2]]
    off = torch.zeros(1, 18, 4, 5)
    off[0, 2 * 7] = 3.0  # tap 7's dy
    off[0, 2 * 7 + 1] = -1.0  # tap 7's dx
    xy = offsets_to_xy(off)
    assert xy.shape == (9, 4, 5, 2) and xy[7, 2, 3].tolist() == [-1.0, 3.0] and xy[6].abs().sum() == 0


# -- the global-warp path ----------------------------------------------------------------------------


def _image(h=36, w=52, seed=0) -> torch.Tensor:
    """A smooth random texture, non-square so a swap of x and y changes every answer."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 6, w // 6, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _tap_positions(h: int, w: int, k: int, d: int) -> torch.Tensor:
    """(K, H, W, 2): the regular position (x, y) of every tap of every pixel, 'same' padding."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    c = k // 2
    return torch.stack([torch.stack([xs + (j - c) * d, ys + (i - c) * d], -1) for i in range(k) for j in range(k)])


def _offsets_by_hand(moved: torch.Tensor, regular: torch.Tensor) -> torch.Tensor:
    """(K, H, W, 2) read positions minus regular positions -> torchvision's (1, 2K, H, W) of (dy, dx)."""
    delta = moved - regular
    return torch.stack([delta[..., 1], delta[..., 0]], 1).reshape(1, -1, *delta.shape[1:3]).float()


AFFINE = torch.tensor([[1.12, 0.27, -3.5], [-0.18, 0.86, 2.25], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _affine_case(h, w, k, d):
    regular = _tap_positions(h, w, k, d)
    moved = regular @ AFFINE[:2, :2].T + AFFINE[:2, 2]
    return affine_displacement(AFFINE, h, w, d * (k // 2)), _offsets_by_hand(moved, regular)


def _swirl_case(h, w, k, d, centre=(30.0, 11.0), angle=2.0, radius=9.0):
    regular = _tap_positions(h, w, k, d)
    r = regular - torch.tensor(centre, dtype=torch.float64)
    phi = angle * torch.exp(-(r ** 2).sum(-1) / (2 * radius ** 2))
    cos, sin = torch.cos(phi), torch.sin(phi)
    # Counter-clockwise on screen (y down): x' = cos x + sin y, y' = -sin x + cos y about the centre.
    moved = torch.stack([cos * r[..., 0] + sin * r[..., 1], -sin * r[..., 0] + cos * r[..., 1]], -1) + torch.tensor(centre, dtype=torch.float64)
    reach = d * (k // 2)
    envelope = swirl_envelope(centre, h, w, reach, radius)
    return swirl_displacement(centre, angle, envelope, reach), _offsets_by_hand(moved, regular)


WARP_CASES = {"affine": _affine_case, "swirl": _swirl_case}


@pytest.mark.parametrize("case", sorted(WARP_CASES))
@pytest.mark.parametrize("k, d", [(3, 2), (5, 1)])
def test_displacement_fields_give_the_offsets_written_out_by_hand(case, k, d):
    h, w = 36, 52
    (dx, dy), by_hand = WARP_CASES[case](h, w, k, d)
    assert dx.shape == (h + 2 * d * (k // 2), w + 2 * d * (k // 2))
    torch.testing.assert_close(offsets_from_displacement(dx, dy, k, d), by_hand, atol=FIELD_TOL, rtol=0)


@pytest.mark.parametrize("case", sorted(WARP_CASES))
@pytest.mark.parametrize("k, d", [(3, 2), (5, 1)])
def test_global_warp_taps_equal_deform_conv2d_at_the_analytic_offsets(case, k, d):
    """The shortcut itself: its taps equal sample_taps at the by-hand offsets, its v1 output and
    its masked v2 output equal deform_conv2d there (1e-5, float32)."""
    img, (h, w) = _image(), (36, 52)
    (dx, dy), offsets = WARP_CASES[case](h, w, k, d)
    reach = d * (k // 2)
    g = torch.Generator().manual_seed(k)
    kernel = torch.rand(k * k, generator=g) - 0.3
    weight = kernel.view(1, 1, k, k).expand(3, 1, k, k)
    expected_taps = sample_taps(img, sampling_grid(offsets, (h, w), (k, k), (1, 1), (reach, reach), (d, d)), k * k)
    taps = global_warp_taps(img, dx, dy, k, d)
    torch.testing.assert_close(taps, expected_taps, atol=CONV_TOL, rtol=0)
    core = deform_conv2d(img, offsets, weight, padding=reach, dilation=d)
    torch.testing.assert_close(depthwise_window_sum(resample_widened(img, dx, dy), kernel, d), core, atol=CONV_TOL, rtol=0)
    mask = torch.rand(1, k * k, h, w, generator=g)
    masked = deform_conv2d(img, offsets, weight, padding=reach, dilation=d, mask=mask)
    torch.testing.assert_close(modulated_depthwise(taps, kernel, mask), masked, atol=CONV_TOL, rtol=0)


@pytest.mark.parametrize("k, d", [(3, 1), (3, 4), (5, 2), (5, 3)])
def test_the_window_sum_is_the_same_in_float32_as_a_float64_loop_over_taps_with_or_without_autograd(k, d):
    """Float32 on the CPU sums in OpenCV (dilated kernels under 11 wide) or in torch (wider, or
    with autograd): either way the naive float64 sum of shifted windows, within float32 rounding,
    on several images and channels of a non-square size; gradients still reach the input."""
    g = torch.Generator().manual_seed(k * 10 + d)
    reach = d * (k // 2)
    widened = torch.rand(2, 3, 17 + 2 * reach, 29 + 2 * reach, generator=g)
    kernel = torch.randn(k * k, generator=g)
    expected = torch.zeros(2, 3, 17, 29, dtype=torch.float64)
    for t in range(k * k):
        i, j = divmod(t, k)
        expected += float(kernel[t]) * widened.double()[..., i * d: i * d + 17, j * d: j * d + 29]
    torch.testing.assert_close(depthwise_window_sum(widened, kernel, d).double(), expected, atol=1e-5, rtol=0)
    leaf = widened.clone().requires_grad_(True)
    depthwise_window_sum(leaf, kernel, d).sum().backward()
    # every tap's window covers the centre pixel: its gradient is the kernel's sum; the corner is
    # read by tap (0, 0) alone
    assert float(leaf.grad[1, 2, reach + 8, reach + 14]) == pytest.approx(float(kernel.sum()), abs=1e-5)
    assert float(leaf.grad[0, 0, 0, 0]) == pytest.approx(float(kernel[0]), abs=1e-6)


def test_the_regular_twin_equals_a_depthwise_conv2d():
    img, kernel = _image(), torch.rand(25, generator=torch.Generator().manual_seed(1))
    expected = F.conv2d(img, kernel.view(1, 1, 5, 5).expand(3, 1, 5, 5), padding=6, dilation=3, groups=3)
    torch.testing.assert_close(depthwise_conv(img, kernel, 3), expected, atol=CONV_TOL, rtol=0)


def test_an_identity_field_reads_the_regular_grid():
    img = _image()
    dx, dy = affine_displacement(compose_affine(), 36, 52, 2)
    assert float(dx.abs().max()) == 0.0 and float(dy.abs().max()) == 0.0
    box = torch.full((9,), 1 / 9)
    torch.testing.assert_close(depthwise_window_sum(resample_widened(img, dx, dy), box, 2), depthwise_conv(img, box, 2),
                               atol=CONV_TOL, rtol=0)


def test_the_global_warp_path_matches_torchvision():
    tv_ops = pytest.importorskip("torchvision.ops")
    img, (h, w), k, d = _image(), (36, 52), 3, 2
    (dx, dy), offsets = _swirl_case(h, w, k, d)
    kernel = torch.rand(9, generator=torch.Generator().manual_seed(3))
    weight = kernel.view(1, 1, 3, 3).expand(3, 1, 3, 3).contiguous()
    ref = tv_ops.deform_conv2d(img, offsets, weight, padding=d, dilation=d)
    assert torch.allclose(depthwise_window_sum(resample_widened(img, dx, dy), kernel, d), ref, atol=TORCHVISION_TOL)


@pytest.mark.parametrize("key", [(Ellipsis, slice(None), slice(None)), (Ellipsis, slice(3, None, 16), slice(5, None, 16)),
                                 (Ellipsis, slice(7, 8), slice(11, 12)), (Ellipsis, slice(None, None, 4), slice(None, None, 4))])
def test_offsets_made_where_read_equal_the_whole_field_at_those_pixels(key):
    from backends.functional.global_warp import DisplacementOffsets

    h, w, k, d = 36, 52, 3, 2
    (dx, dy), _ = _swirl_case(h, w, k, d)
    lazy = DisplacementOffsets(dx, dy, k, d)
    whole = offsets_from_displacement(dx, dy, k, d)
    assert lazy.shape == whole.shape
    torch.testing.assert_close(lazy[key], whole[key], atol=0, rtol=0)
    torch.testing.assert_close(lazy.full(), whole, atol=0, rtol=0)
