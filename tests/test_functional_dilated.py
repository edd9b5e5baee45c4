"""Dilated convolution cores against torch's own conv2d (float32, 1e-5), a naive loop (float64,
1e-10), explicit padding, float64 gradcheck, the module twin; the kernel bank; and the receptive
field of a stack, by autograd against the analytic support."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.dilated import (
    DilatedConv2d,
    dilated_conv2d,
    effective_receptive_field,
    same_padding,
    stack_support,
)
from backends.functional.kernels import KERNEL_NAMES, dilate_kernel, make_kernel


def naive_dilated(x: np.ndarray, k: np.ndarray, d: int, stride: int = 1) -> np.ndarray:
    """Zero-padded 'same' dilated correlation of one channel, by loops."""
    h, w = x.shape
    n = k.shape[0]
    c = n // 2
    out = np.zeros((-(-h // stride), -(-w // stride)))
    for oy in range(out.shape[0]):
        for ox in range(out.shape[1]):
            acc = 0.0
            for i in range(n):
                for j in range(n):
                    y, xx = oy * stride + (i - c) * d, ox * stride + (j - c) * d
                    if 0 <= y < h and 0 <= xx < w:
                        acc += k[i, j] * x[y, xx]
            out[oy, ox] = acc
    return out


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("k", [3, 5])
def test_equals_torch_conv2d_with_dilation(d, k):
    torch.manual_seed(d * 10 + k)
    x = torch.rand(2, 3, 40, 37)
    w = torch.randn(4, 3, k, k)
    b = torch.randn(4)
    ours = dilated_conv2d(x, w, b, dilation=d)
    ref = F.conv2d(x, w, b, dilation=d, padding=d * (k - 1) // 2)
    assert ours.shape == (2, 4, 40, 37)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d, stride", [(1, 1), (2, 1), (3, 2), (4, 3)])
def test_equals_a_naive_loop(d, stride):
    rng = np.random.default_rng(d)
    x = rng.random((13, 11))
    k = rng.standard_normal((3, 3))
    ours = dilated_conv2d(torch.from_numpy(x)[None, None], torch.from_numpy(k)[None, None], stride=stride, dilation=d)
    np.testing.assert_allclose(ours[0, 0].numpy(), naive_dilated(x, k, d, stride), atol=1e-10)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_match_explicit_padding(mode):
    x = torch.rand(1, 1, 20, 20)
    w = torch.randn(1, 1, 3, 3)
    padded = F.pad(x, (4, 4, 4, 4), mode=mode)
    torch.testing.assert_close(dilated_conv2d(x, w, dilation=4, padding_mode=mode), F.conv2d(padded, w, dilation=4))


def test_reflect_padding_larger_than_the_image_is_a_clear_error():
    with pytest.raises(ValueError, match="reflect padding of 48 px"):
        dilated_conv2d(torch.rand(1, 1, 30, 30), torch.rand(1, 1, 7, 7), dilation=16, padding_mode="reflect")


def test_identity_kernel_returns_the_input():
    x = torch.rand(1, 3, 16, 16)
    w = torch.from_numpy(make_kernel("identity", 5)).expand(3, 1, 5, 5)
    torch.testing.assert_close(dilated_conv2d(x, w, dilation=3, groups=3), x)


def test_dilated_kernel_places_taps_dilation_apart():
    k = make_kernel("random", 3, seed=1)
    big = dilate_kernel(k, 4)
    assert big.shape == (9, 9)
    np.testing.assert_array_equal(big[::4, ::4], k)
    assert np.count_nonzero(big) == np.count_nonzero(k)


@pytest.mark.parametrize("name", KERNEL_NAMES)
@pytest.mark.parametrize("size", [3, 5, 7])
def test_every_bank_kernel_is_finite_and_sized(name, size):
    k = make_kernel(name, size, angle_deg=45, seed=3)
    assert k.shape == (size, size) and np.isfinite(k).all() and np.abs(k).sum() > 0


@pytest.mark.parametrize("rates", [[2, 2, 2], [1, 2, 5], [3], [1, 2, 4, 8]])
def test_effective_receptive_field_matches_analytic_support(rates):
    k = 3
    box = torch.ones(1, 1, k, k)
    size = 101
    q = (50, 50)
    erf = effective_receptive_field(torch.rand(1, 1, size, size), box, rates, "zeros", q)
    support = stack_support(k, rates)
    half = support.shape[0] // 2
    window = erf[q[1] - half : q[1] + half + 1, q[0] - half : q[0] + half + 1].numpy()
    np.testing.assert_array_equal(window > 0, support)
    outside = erf.clone()
    outside[q[1] - half : q[1] + half + 1, q[0] - half : q[0] + half + 1] = 0
    assert float(outside.abs().max()) == 0.0


def test_equal_rates_leave_gridding_holes_that_mixed_rates_fill():
    assert not stack_support(3, [2, 2, 2]).all()
    assert stack_support(3, [1, 2, 5]).all()


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_erf_near_the_border_equals_whole_image_autograd(mode):
    """The cropped fast path must agree with plain autograd on the whole image."""
    img = torch.rand(1, 1, 40, 40)
    k = torch.rand(1, 1, 3, 3)
    q = (2, 3)
    ours = effective_receptive_field(img, k, [2, 3], mode, q)
    x = img.clone().requires_grad_(True)
    y = dilated_conv2d(dilated_conv2d(x, k, dilation=2, padding_mode=mode), k, dilation=3, padding_mode=mode)
    y[0, 0, q[1], q[0]].backward()
    torch.testing.assert_close(ours, x.grad[0, 0].abs())


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_gradcheck_input_weight_and_bias(mode):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 2, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda xx, ww, bb: dilated_conv2d(xx, ww, bb, stride=2, dilation=2, padding_mode=mode),
                                    (x, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_module_equals_functional(mode):
    torch.manual_seed(0)
    mod = DilatedConv2d(4, 6, 5, stride=2, dilation=3, padding_mode=mode, groups=2).double()
    x = torch.rand(2, 4, 23, 17, dtype=torch.float64)
    out = mod(x)
    assert out.shape == (2, 6, 12, 9)
    torch.testing.assert_close(out, dilated_conv2d(x, mod.weight, mod.bias, 2, 3, mode, 2), atol=0, rtol=0)


def test_shape_errors_print_both_numbers():
    with pytest.raises(ValueError, match=r"\(N, 6, H, W\).*\(1, 4, 9, 9\)"):
        dilated_conv2d(torch.rand(1, 4, 9, 9), torch.rand(2, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match="k odd"):
        dilated_conv2d(torch.rand(1, 1, 9, 9), torch.rand(1, 1, 4, 4))
    assert same_padding(5, 3) == 6
