"""Deformable-kernel cores: kernel sampling and the convolution against naive float64 loops
(1e-10), zero offsets against F.conv2d with the kernel space's central crop (1e-5 in float32),
the global path against the per-pixel path, gradcheck in float64, the module twin; the splatted
kernel against deform_conv2d with the same offsets at every pixel (1e-10); the depthwise
convolution (shifted windows and FFT) against F.conv2d; tap offsets of a zoom and a turn written
out by hand; the receptive field of one layer; the kernel-space patterns; shape errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backends.functional.affine import compose_affine
from backends.functional.deformable import deform_conv2d
from backends.functional.deformable_kernels import (
    SPACE_PATTERNS,
    DeformableKernelConv2d,
    affine_tap_offsets,
    deform_kernel_conv2d,
    depthwise_same,
    pattern_space,
    receptive_field,
    sample_kernel,
    splat_taps,
    tap_grid,
)

NAIVE_TOL = 1e-10  # float64, same arithmetic up to summation order
TORCH_TOL = 1e-5  # float32 against F.conv2d / deform_conv2d


def naive_bilinear(grid, x: float, y: float) -> float:
    """``grid`` (S, S) read at column x, row y: bilinear between cell centres, zero outside."""
    s = grid.shape[-1]
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < s and 0 <= xx < s:
                total += wy * wx * float(grid[yy, xx])
    return total


def naive_deform_kernel_conv(x, offset, space, k, bias=None, dilation=1, groups=1):
    """out[n, o, y, x] = sum over the group's channels c and taps (i, j) of
    space[o, c] at (centre + j - K//2 + dx, centre + i - K//2 + dy) times x[n, g c, y + (i - K//2) d, x + (j - K//2) d]."""
    n, c_in, h, w = x.shape
    c_out, per, s, _ = space.shape
    centre, half = (s - 1) / 2, k // 2
    out = torch.zeros(n, c_out, h, w, dtype=torch.float64)
    for b in range(n):
        for o in range(c_out):
            g = o // (c_out // groups)
            for yy in range(h):
                for xx in range(w):
                    acc = 0.0 if bias is None else float(bias[o])
                    for i in range(k):
                        for j in range(k):
                            t = i * k + j
                            oy = offset[b, 2 * t, 0 if offset.shape[2] == 1 else yy, 0 if offset.shape[3] == 1 else xx]
                            ox = offset[b, 2 * t + 1, 0 if offset.shape[2] == 1 else yy, 0 if offset.shape[3] == 1 else xx]
                            py, px = yy + (i - half) * dilation, xx + (j - half) * dilation
                            if not (0 <= py < h and 0 <= px < w):
                                continue
                            for c in range(per):
                                wt = naive_bilinear(space[o, c], centre + j - half + float(ox), centre + i - half + float(oy))
                                acc += wt * float(x[b, g * per + c, py, px])
                    out[b, o, yy, xx] = acc
    return out


def test_sampled_kernels_equal_a_naive_bilinear_loop():
    g = torch.Generator().manual_seed(1)
    space = torch.randn(2, 1, 7, 7, generator=g, dtype=torch.float64)
    offset = torch.randn(1, 18, 3, 4, generator=g, dtype=torch.float64) * 2.5  # some taps fall outside: zero there
    ours = sample_kernel(space, offset, 3)
    assert ours.shape == (1, 2, 1, 9, 3, 4)
    for o in range(2):
        for t in range(9):
            i, j = divmod(t, 3)
            for yy in range(3):
                for xx in range(4):
                    expected = naive_bilinear(space[o, 0], 3 + j - 1 + float(offset[0, 2 * t + 1, yy, xx]),
                                              3 + i - 1 + float(offset[0, 2 * t, yy, xx]))
                    assert abs(float(ours[0, o, 0, t, yy, xx]) - expected) < NAIVE_TOL


@pytest.mark.parametrize("groups, dilation, per_pixel", [(1, 1, True), (2, 2, True), (2, 1, False)])
def test_the_convolution_equals_a_naive_loop(groups, dilation, per_pixel):
    g = torch.Generator().manual_seed(groups * 10 + dilation)
    x = torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64)
    space = torch.randn(4, 4 // groups, 5, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 18, 6 if per_pixel else 1, 5 if per_pixel else 1, generator=g, dtype=torch.float64)
    ours = deform_kernel_conv2d(x, offset, space, 3, bias, dilation, groups)
    torch.testing.assert_close(ours, naive_deform_kernel_conv(x, offset, space, 3, bias, dilation, groups),
                               atol=NAIVE_TOL, rtol=0)


@pytest.mark.parametrize("k, s", [(3, 3), (3, 9), (5, 11)])
def test_zero_offsets_give_the_plain_convolution_with_the_central_crop(k, s):
    g = torch.Generator().manual_seed(k * s)
    x = torch.rand(2, 3, 20, 17, generator=g)
    space = torch.randn(6, 3, s, s, generator=g)
    m = (s - k) // 2
    ref = F.conv2d(x, space[..., m: m + k, m: m + k], padding=k // 2)
    for offset in (torch.zeros(2, 2 * k * k, 1, 1), torch.zeros(2, 2 * k * k, 20, 17)):
        torch.testing.assert_close(deform_kernel_conv2d(x, offset, space, k), ref, atol=TORCH_TOL, rtol=TORCH_TOL)


def test_one_offset_for_every_pixel_equals_the_per_pixel_path():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 9, 11, generator=g, dtype=torch.float64)
    space = torch.randn(2, 1, 9, 9, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 50, 1, 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(deform_kernel_conv2d(x, offset, space, 5, groups=2),
                               deform_kernel_conv2d(x, offset.expand(-1, -1, 9, 11), space, 5, groups=2),
                               atol=NAIVE_TOL, rtol=0)


def test_gradcheck_input_offset_space_and_bias():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # Offsets away from whole cells: bilinear sampling has kinks there.
    offset = (torch.rand(1, 18, 5, 4, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    space = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c, d: deform_kernel_conv2d(a, b, c, 3, d), (x, offset, space, bias),
                                    eps=1e-6, atol=1e-7)


def test_module_equals_functional():
    torch.manual_seed(0)
    mod = DeformableKernelConv2d(4, 6, 3, 7, dilation=2, groups=2).double()
    x = torch.randn(2, 4, 8, 9, dtype=torch.float64)
    offset = torch.randn(2, 18, 8, 9, dtype=torch.float64)
    out = mod(x, offset)
    assert out.shape == (2, 6, 8, 9)
    torch.testing.assert_close(out, deform_kernel_conv2d(x, offset, mod.weight_space, 3, mod.bias, 2, 2), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["zoom", "shrink", "rotate", "shear"])
def test_the_splatted_kernel_equals_deform_conv2d_with_the_same_offsets_everywhere(kind):
    m = {"zoom": compose_affine(scale=1.7), "shrink": compose_affine(scale=0.6), "rotate": compose_affine(angle_deg=33),
         "shear": compose_affine(shear=0.45)}[kind][:2, :2]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 15, 12, generator=g, dtype=torch.float64)
    kernel = torch.randn(9, generator=g, dtype=torch.float64)
    offset = affine_tap_offsets(m, 3).view(1, 18, 1, 1).expand(1, 18, 15, 12)
    ref = deform_conv2d(x, offset, kernel.view(1, 1, 3, 3).expand(2, 1, 3, 3), padding=1)
    splat = splat_taps(kernel, tap_grid(3, dtype=torch.float64) @ m.T)
    torch.testing.assert_close(depthwise_same(x, splat), ref, atol=NAIVE_TOL, rtol=0)
    assert float(splat.sum()) == pytest.approx(float(kernel.sum()))


@pytest.mark.parametrize("size, keep, dtype", [(5, 0.5, torch.float64), (17, 1.0, torch.float64), (17, 0.1, torch.float32),
                                               (3, 1.0, torch.float32), (11, 0.5, torch.float32)])
def test_depthwise_same_equals_f_conv2d(size, keep, dtype):
    """A sparse kernel (shifted windows), a dense 17 x 17 one (the FFT), and in float32 OpenCV's
    direct sums up to 11 x 11, on a non-square image, against float64 F.conv2d."""
    g = torch.Generator().manual_seed(size)
    x = torch.rand(2, 3, 16, 23, generator=g, dtype=torch.float64)
    kernel = torch.randn(size, size, generator=g, dtype=torch.float64) * (torch.rand(size, size, generator=g) < keep)
    ref = F.conv2d(x, kernel.expand(3, 1, size, size), padding=size // 2, groups=3)
    out = depthwise_same(x.to(dtype), kernel.to(dtype))
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, atol=NAIVE_TOL if dtype == torch.float64 else 2e-5, rtol=0)


def test_tap_offsets_of_a_zoom_and_a_turn():
    """A zoom by 2 moves tap (x=1, y=-1) to (2, -2): offset (dy, dx) = (-1, 1). A turn by 90° counter-
    clockwise on screen (y down) takes the tap right of the centre (x=1, y=0) to above it (0, -1)."""
    zoom = affine_tap_offsets(torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64), 3).view(9, 2)
    assert zoom[2].tolist() == [-1.0, 1.0]  # tap 2: row 0 (y = -1), column 2 (x = 1)
    assert zoom[4].tolist() == [0.0, 0.0]
    turn = affine_tap_offsets(compose_affine(angle_deg=90.0)[:2, :2], 3).view(9, 2)
    torch.testing.assert_close(turn[5], torch.tensor([-1.0, -1.0], dtype=torch.float64), atol=1e-12, rtol=0)  # (1, 0) -> (0, -1)


def test_the_receptive_field_of_one_layer_is_the_kernel_placed_at_the_query():
    """out(q) = sum_t w_t x(q + t): the gradient at q + t is |w_t| (x right, y down)."""
    space = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = torch.rand(1, 1, 10, 14, dtype=torch.float64)
    q = (9, 3)
    erf = receptive_field(lambda a: deform_kernel_conv2d(a, torch.zeros(1, 18, 1, 1, dtype=torch.float64), space, 3), x, q)
    expected = torch.zeros(10, 14, dtype=torch.float64)
    expected[q[1] - 1: q[1] + 2, q[0] - 1: q[0] + 2] = space[0, 0].abs()
    torch.testing.assert_close(erf, expected, atol=NAIVE_TOL, rtol=0)


@pytest.mark.parametrize("name", SPACE_PATTERNS)
@pytest.mark.parametrize("size", [3, 9, 15])
def test_kernel_space_patterns(name, size):
    k = pattern_space(name, size)
    assert k.shape == (size, size) and torch.isfinite(k).all()
    if name == "gaussian":
        assert float(k.sum()) == pytest.approx(1.0)
    else:
        assert float(k.abs().sum()) == pytest.approx(2.0)
    if name in ("gabor", "log"):
        assert abs(float(k.sum())) < 1e-9
    if name == "edge":
        torch.testing.assert_close(k, -k.flip(-1))  # odd in x


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"kernel_size 5.*3x3.*\(1, 1, 3, 3\)"):
        sample_kernel(torch.rand(1, 1, 3, 3), torch.zeros(1, 50, 1, 1), 5)
    with pytest.raises(ValueError, match=r"\(N, 18, Ho, Wo\).*\(1, 8, 1, 1\)"):
        sample_kernel(torch.rand(1, 1, 5, 5), torch.zeros(1, 8, 1, 1), 3)
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\).*\(1, 3, 6, 6\)"):
        deform_kernel_conv2d(torch.rand(1, 3, 6, 6), torch.zeros(1, 18, 1, 1), torch.rand(2, 2, 5, 5), 3, groups=2)
    with pytest.raises(ValueError, match=r"\(1, 18, 6, 5\)"):
        deform_kernel_conv2d(torch.rand(1, 1, 6, 6), torch.zeros(1, 18, 6, 5), torch.rand(1, 1, 5, 5), 3)
    with pytest.raises(ValueError, match="even margin"):
        deform_kernel_conv2d(torch.rand(1, 1, 6, 6), torch.zeros(1, 18, 1, 1), torch.rand(1, 1, 6, 6), 3)
