"""Upsampling cores: the transposed convolution (zero insertion + convolution) against
``F.conv_transpose2d`` (float32 1e-5, float64 1e-10) and a naive scatter loop (float64 1e-10), and
as the adjoint of ``F.conv2d`` (<conv x, y> = <x, conv^T y>, float64, 1e-10); max unpooling
against ``F.max_unpool2d`` and unpool(pool(x)) keeping the maxima in place, zeros elsewhere; the
tap-count map against a naive count, uniform exactly when the stride divides the kernel size;
pixel shuffle against ``F.pixel_shuffle`` and inverting ``F.pixel_unshuffle``; the sub-pixel
convolution (phase kernels, then pixel shuffle) equal to the transposed one; resize-convolve; the alias energy share; gradcheck;
module twins."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.upsampling import (
    PixelShuffle,
    ResizeConv2d,
    TransposedConv2d,
    alias_energy_fraction,
    alias_mask,
    bilinear_kernel,
    conv_transpose2d,
    log_spectrum,
    max_unpool2d,
    overlap_count,
    phase_sums,
    pixel_shuffle,
    pixel_unshuffle,
    resize_conv2d,
    spectrum_summary,
    subpixel_conv_transpose2d,
    subpixel_weight,
    taps_per_phase,
    transposed_output_size,
    zero_insert,
)

NAIVE_TOL = dict(atol=1e-10, rtol=0)  # float64, the same arithmetic up to summation order
TORCH_TOL = dict(atol=1e-5, rtol=1e-5)  # float32 against torch's op


def naive_transposed(x: np.ndarray, w: np.ndarray, s: int, p: int, q: int, d: int) -> np.ndarray:
    """One group, one image: input pixel (i, j) of channel c adds x * w[c, o, a, b] to output
    (s i + d a - p, s j + d b - p) of channel o, by loops."""
    c_in, h, wd = x.shape
    _, c_out, k, _ = w.shape
    oh, ow = transposed_output_size(h, k, s, p, q, d), transposed_output_size(wd, k, s, p, q, d)
    out = np.zeros((c_out, oh, ow))
    for c in range(c_in):
        for i in range(h):
            for j in range(wd):
                for o in range(c_out):
                    for a in range(k):
                        for b in range(k):
                            y, xx = s * i + d * a - p, s * j + d * b - p
                            if 0 <= y < oh and 0 <= xx < ow:
                                out[o, y, xx] += x[c, i, j] * w[c, o, a, b]
    return out


def naive_count(n: int, k: int, s: int, p: int, q: int, d: int) -> np.ndarray:
    """Taps landing on each output pixel: the scatter loop of ones through a kernel of ones."""
    return naive_transposed(np.ones((1, n, n)), np.ones((1, 1, k, k)), s, p, q, d)[0]


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


CASES = [(3, 2, 1, 1, 1), (4, 2, 1, 0, 1), (3, 3, 0, 2, 1), (5, 2, 2, 1, 2), (2, 1, 0, 0, 1), (3, 2, 0, 1, 3)]


@pytest.mark.parametrize("k, s, p, q, d", CASES)
def test_transposed_equals_the_naive_scatter_loop(k, s, p, q, d):
    x, w = _rand(2, 5, 4, seed=k * 10 + s), _rand(2, 3, k, k, seed=s)
    ours = conv_transpose2d(x[None], w, stride=s, padding=p, output_padding=q, dilation=d)[0]
    np.testing.assert_allclose(ours.numpy(), naive_transposed(x.numpy(), w.numpy(), s, p, q, d), **NAIVE_TOL)


@pytest.mark.parametrize("k, s, p, q, d", CASES)
@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_equals_torch(k, s, p, q, d, groups):
    x, w, b = _rand(2, 4, 6, 5, seed=1), _rand(4, 3, k, k, seed=2), _rand(3 * groups, seed=3)
    args = dict(stride=s, padding=p, output_padding=q, groups=groups, dilation=d)
    torch.testing.assert_close(conv_transpose2d(x, w, b, **args), F.conv_transpose2d(x, w, b, **args), **NAIVE_TOL)
    torch.testing.assert_close(conv_transpose2d(x.float(), w.float(), b.float(), **args),
                               F.conv_transpose2d(x.float(), w.float(), b.float(), **args), **TORCH_TOL)


@pytest.mark.parametrize("k, s, p, q, d", CASES)
def test_transposed_is_the_adjoint_of_the_convolution(k, s, p, q, d):
    """<conv(y), x> = <y, conv^T(x)> for every x, y: conv^T is conv's adjoint."""
    x, w = _rand(1, 3, 6, 5, seed=4), _rand(3, 2, k, k, seed=5)
    y = _rand(1, 2, *conv_transpose2d(x, w, stride=s, padding=p, output_padding=q, dilation=d).shape[-2:], seed=6)
    conv_y = F.conv2d(y, w, stride=s, padding=p, dilation=d)
    lhs = float((conv_y * x).sum())
    rhs = float((y * conv_transpose2d(x, w, stride=s, padding=p, output_padding=q, dilation=d)).sum())
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_zero_insertion_puts_pixels_stride_apart():
    x = _rand(1, 1, 3, 4, seed=7)
    z = zero_insert(x, 3)
    assert z.shape == (1, 1, 7, 10) and torch.equal(z[..., ::3, ::3], x)
    assert int((z != 0).sum()) == 12


def test_transposed_with_stride_one_is_a_full_convolution_with_the_flipped_kernel():
    x, w = _rand(1, 1, 5, 6, seed=8), _rand(1, 1, 3, 3, seed=9)
    full = F.conv2d(F.pad(x, (2, 2, 2, 2)), w.flip(-1, -2))
    torch.testing.assert_close(conv_transpose2d(x, w), full, **NAIVE_TOL)


def test_max_unpool_equals_torch_and_keeps_the_maxima_in_place():
    x = _rand(2, 3, 8, 6, seed=10)
    pooled, idx = F.max_pool2d(x, 2, return_indices=True)
    ours = max_unpool2d(pooled, idx, 2)
    torch.testing.assert_close(ours, F.max_unpool2d(pooled, idx, 2), **NAIVE_TOL)
    blocks = x.reshape(2, 3, 4, 2, 3, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 4, 3, 4)
    is_max = blocks == blocks.max(-1, keepdim=True).values
    kept = is_max.reshape(2, 3, 4, 3, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(x.shape)
    assert torch.equal(ours[kept], x[kept])  # each block's maximum where it was
    assert int((ours != 0).sum()) == pooled.numel() and (ours[~kept] == 0).all()  # zeros elsewhere


def test_max_unpool_to_an_odd_size():
    x = _rand(1, 1, 7, 9, seed=11)
    pooled, idx = F.max_pool2d(x, 3, stride=2, return_indices=True)
    torch.testing.assert_close(max_unpool2d(pooled, idx, 3, 2, output_size=(7, 9)),
                               F.max_unpool2d(pooled, idx, 3, 2, output_size=(7, 9)), **NAIVE_TOL)


@pytest.mark.parametrize("k, s", list(itertools.product(range(1, 8), range(1, 5))))
def test_tap_count_is_uniform_exactly_when_the_stride_divides_the_kernel(k, s):
    count = overlap_count(9, 9, k, s)
    np.testing.assert_array_equal(count.numpy(), naive_count(9, k, s, 0, 0, 1))
    inner = count[k - 1: 8 * s + 1, k - 1: 8 * s + 1]  # output pixels every tap can reach
    assert bool((inner == inner[0, 0]).all()) == (k % s == 0)
    phases = taps_per_phase(k, s)
    assert phases.sum() == k
    expected = np.outer(phases, phases)[np.ix_(np.arange(k - 1, 8 * s + 1) % s, np.arange(k - 1, 8 * s + 1) % s)]
    np.testing.assert_array_equal(inner.numpy(), expected)


def test_tap_count_with_padding_output_padding_and_dilation():
    np.testing.assert_array_equal(overlap_count(6, 6, 3, 2, 1, 1, 2).numpy(), naive_count(6, 3, 2, 1, 1, 2))
    assert list(taps_per_phase(3, 2, dilation=2)) == [3, 0]  # even dilation, even stride: odd phases get nothing


def test_phase_sums_are_the_interior_of_a_flat_input():
    kernel = _rand(4, 5, seed=12)[:, :4].contiguous()
    out = conv_transpose2d(torch.ones(1, 1, 9, 9, dtype=torch.float64), kernel[None, None], stride=3)[0, 0]
    sums = phase_sums(kernel, 3)
    for y, x in itertools.product(range(3, 24), range(3, 24)):
        assert abs(float(out[y, x] - sums[y % 3, x % 3])) < 1e-12
    assert torch.allclose(phase_sums(torch.ones(3, 3, dtype=torch.float64), 2),
                          torch.from_numpy(np.outer(taps_per_phase(3, 2), taps_per_phase(3, 2))).double())


def test_the_bilinear_kernel_of_twice_the_stride_has_equal_phases():
    for s in (2, 3, 4):
        sums = phase_sums(torch.from_numpy(bilinear_kernel(2 * s)), s)
        assert torch.allclose(sums, sums[0, 0].expand_as(sums), atol=1e-12)
    assert bilinear_kernel(4)[0].tolist() == [0.25 * 0.25, 0.75 * 0.25, 0.75 * 0.25, 0.25 * 0.25]


@pytest.mark.parametrize("r", [1, 2, 3])
def test_pixel_shuffle_equals_torch_and_inverts_unshuffle(r):
    x = _rand(2, 3 * r * r, 4, 5, seed=r)
    torch.testing.assert_close(pixel_shuffle(x, r), F.pixel_shuffle(x, r), atol=0, rtol=0)
    y = _rand(2, 3, 4 * r, 5 * r, seed=r + 10)
    torch.testing.assert_close(pixel_unshuffle(y, r), F.pixel_unshuffle(y, r), atol=0, rtol=0)
    assert torch.equal(pixel_shuffle(F.pixel_unshuffle(y, r), r), y)
    assert torch.equal(pixel_unshuffle(F.pixel_shuffle(x, r), r), x)


def test_pixel_shuffle_places_channel_a_r_plus_b_at_row_a_column_b():
    x = torch.arange(4.0).reshape(1, 4, 1, 1)
    assert pixel_shuffle(x, 2)[0, 0].tolist() == [[0.0, 1.0], [2.0, 3.0]]


@pytest.mark.parametrize("k, s, d", list(itertools.product([1, 2, 3, 4, 5], [1, 2, 3], [1, 2])))
def test_the_subpixel_phases_shuffled_are_the_transposed_convolution(k, s, d):
    """pixel_shuffle of the s² phase convolutions (left-padded by T - 1): the first H s rows and
    W s columns of the unpadded transposed output, zeros past its end (Shi et al., 2016)."""
    x, w = _rand(1, 2, 5, 6, seed=13), _rand(2, 3, k, k, seed=14)
    full = F.conv_transpose2d(x, w, stride=s, dilation=d)
    sub = subpixel_weight(w, s, d)
    t = sub.shape[-1]
    ours = pixel_shuffle(F.conv2d(F.pad(x, (t - 1, 0, t - 1, 0)), sub), s)
    assert ours.shape == (1, 3, 5 * s, 6 * s)
    h, wd = min(full.shape[-2], 5 * s), min(full.shape[-1], 6 * s)
    torch.testing.assert_close(ours[..., :h, :wd], full[..., :h, :wd], **NAIVE_TOL)
    assert (ours[..., h:, :] == 0).all() and (ours[..., :, wd:] == 0).all()


@pytest.mark.parametrize("k, s, p, q, d", CASES)
def test_subpixel_transposed_convolution_equals_torch(k, s, p, q, d):
    x, w, b = _rand(2, 3, 6, 5, seed=20), _rand(3, 2, k, k, seed=21), _rand(2, seed=22)
    ours = subpixel_conv_transpose2d(x, w, s, p, q, d, bias=b)
    torch.testing.assert_close(ours, F.conv_transpose2d(x, w, b, s, p, q, 1, d), **NAIVE_TOL)
    torch.testing.assert_close(subpixel_conv_transpose2d(x.float(), w.float(), s, p, q, d),
                               F.conv_transpose2d(x.float(), w.float(), None, s, p, q, 1, d), **TORCH_TOL)


def test_resize_conv_is_nearest_resize_then_a_same_convolution():
    x, w = _rand(1, 2, 4, 5, seed=15), _rand(3, 2, 3, 3, seed=16)
    up = x.repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(resize_conv2d(x, w, 2), F.conv2d(up, w, padding=1), **NAIVE_TOL)
    even = _rand(3, 2, 4, 4, seed=17)
    torch.testing.assert_close(resize_conv2d(x, even, 2), F.conv2d(F.pad(up, (1, 2, 1, 2)), even), **NAIVE_TOL)
    box = torch.full((2, 1, 3, 3), 1 / 9, dtype=torch.float64)
    flat = resize_conv2d(torch.ones(1, 2, 6, 6, dtype=torch.float64), box, 2, groups=2)
    assert torch.allclose(flat[..., 1:-1, 1:-1], torch.ones(1, dtype=torch.float64), atol=1e-12)  # no checkerboard inside


def test_alias_energy_is_zero_for_nearest_and_near_one_for_a_checkerboard():
    x = torch.rand(1, 1, 16, 20, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    for s in (2, 3, 4):
        assert alias_energy_fraction(F.interpolate(x, scale_factor=s, mode="nearest"), s) < 1e-20
    board = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    assert alias_energy_fraction(board.double(), 2) == pytest.approx(1.0)
    box = torch.full((1, 1, 3, 3), 4 / 9, dtype=torch.float64)
    checker = conv_transpose2d(x, box, stride=2, padding=1, output_padding=1)
    smooth = conv_transpose2d(x, torch.from_numpy(bilinear_kernel(4))[None, None], stride=2, padding=1)
    assert alias_energy_fraction(checker, 2) > 0.2 > 0.01 > alias_energy_fraction(smooth, 2)
    assert alias_energy_fraction(torch.ones(8, 8), 2) == 0.0


def test_spectrum_summary_crops_to_the_stride_and_centres_zero_frequency():
    x = torch.cos(torch.arange(13.0) * np.pi / 2)[None, :].expand(10, 13)  # a period of 4 along x
    spectrum, share = spectrum_summary(x, 4)
    assert spectrum.shape == (8, 12) and share == pytest.approx(1.0)
    assert spectrum[4, 6] == 0.0  # zero frequency, left out, in the centre
    assert alias_mask(8, 12, 4).sum() == 15
    torch.testing.assert_close(log_spectrum(x), spectrum_summary(x, 1)[0])


def test_gradcheck():
    g = torch.Generator().manual_seed(19)
    x = torch.rand(1, 2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: conv_transpose2d(a, b, stride=2, padding=1, output_padding=1), (x, w))
    assert torch.autograd.gradcheck(lambda a, b: subpixel_conv_transpose2d(a, b, 2, 1, 1), (x, w))
    pooled, idx = F.max_pool2d(torch.rand(1, 2, 6, 6, generator=g, dtype=torch.float64), 2, return_indices=True)
    assert torch.autograd.gradcheck(lambda a: max_unpool2d(a, idx, 2), (pooled.requires_grad_(True),))


def test_module_twins_equal_the_functions():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 5, 6, dtype=torch.float64)
    tconv = TransposedConv2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1).double()
    torch.testing.assert_close(tconv(x), F.conv_transpose2d(x, tconv.weight, tconv.bias, 2, 1, 1, 2), **NAIVE_TOL)
    assert torch.equal(PixelShuffle(2)(x), F.pixel_shuffle(x, 2))
    rc = ResizeConv2d(4, 3, 3, scale=2).double()
    torch.testing.assert_close(rc(x), resize_conv2d(x, rc.weight, 2, "nearest", rc.bias), **NAIVE_TOL)


def test_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\).*\(2, 1, 3, 3\)"):
        conv_transpose2d(torch.rand(1, 3, 4, 4), torch.rand(2, 1, 3, 3))
    with pytest.raises(ValueError, match="output padding 2 must be smaller than the stride 2"):
        conv_transpose2d(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"\(1, 5, 2, 2\)"):
        pixel_shuffle(torch.rand(1, 5, 2, 2), 2)
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 3\) and \(1, 2, 2, 2\)"):
        max_unpool2d(torch.rand(1, 2, 3, 3), torch.zeros(1, 2, 2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="padding 9 leaves no output"):
        conv_transpose2d(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 3, 3), stride=2, padding=9)
