"""The convolution family's cores: each variant against a naive float64 loop (1e-10) and against
``F.conv2d`` with the matching ``groups`` and weights (float32, 1e-5); separable equals depthwise
then pointwise; the dense twins (block-diagonal, shuffled, composed) give the same maps as one
standard convolution; the channel shuffle is a permutation, its inverse restores the order and
it equals the reshape-transpose-reshape definition (and torchvision's when installed); parameter
and multiply-add counts equal their formulas, ``nn.Conv2d``'s parameters and the naive loop's
multiplications; float64 gradcheck; the module twins equal the functions."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.conv_family import (
    ChannelShuffle,
    DepthwiseConv2d,
    DepthwiseSeparableConv2d,
    GroupConv2d,
    PointwiseConv2d,
    channel_shuffle,
    compose_pointwise,
    connectivity,
    conv2d_multiply_adds,
    conv2d_parameter_count,
    dense_weight,
    depthwise_conv2d,
    depthwise_separable_conv2d,
    group_conv2d,
    group_of_input,
    pointwise_conv2d,
    shuffle_permutation,
)

NAIVE_TOL = dict(atol=1e-10, rtol=0)  # float64, the same arithmetic up to summation order
TORCH_TOL = dict(atol=1e-5, rtol=1e-5)  # float32 against torch's conv2d


def naive_group_conv(x: np.ndarray, w: np.ndarray, groups: int) -> tuple[np.ndarray, int]:
    """Zero-padded 'same' grouped correlation of one image (C_in, H, W) by loops; also returns
    the number of multiplications made (padding taps included, as libraries count them)."""
    c_in, h, wd = x.shape
    c_out, per_in, k, _ = w.shape
    r = k // 2
    per_out = c_out // groups
    out = np.zeros((c_out, h, wd))
    mults = 0
    for o in range(c_out):
        g = o // per_out
        for y in range(h):
            for xx in range(wd):
                acc = 0.0
                for i in range(per_in):
                    for a in range(k):
                        for b in range(k):
                            yy, xi = y + a - r, xx + b - r
                            mults += 1
                            if 0 <= yy < h and 0 <= xi < wd:
                                acc += w[o, i, a, b] * x[g * per_in + i, yy, xi]
                out[o, y, xx] = acc
    return out, mults


def naive_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Output channel a * g + b is channel a of group b: written out channel by channel."""
    c = x.shape[1]
    per = c // groups
    out = torch.empty_like(x)
    for a in range(per):
        for b in range(groups):
            out[:, a * groups + b] = x[:, b * per + a]
    return out


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("groups, k", [(1, 3), (2, 3), (3, 1), (6, 5)])
def test_group_conv_equals_the_naive_loop(groups, k):
    x, w = _rand(1, 6, 5, 7, seed=1), _rand(6, 6 // groups, k, k, seed=2)
    ours = group_conv2d(x, w, groups=groups)[0].numpy()
    expected, _ = naive_group_conv(x[0].numpy(), w.numpy(), groups)
    np.testing.assert_allclose(ours, expected, **NAIVE_TOL)


def test_each_variant_equals_conv2d_with_its_groups():
    x = _rand(2, 4, 11, 9, seed=3, dtype=torch.float32)
    standard, group = _rand(8, 4, 3, 3, seed=4).float(), _rand(8, 2, 5, 5, seed=5).float()
    depthwise, pointwise = _rand(12, 1, 3, 3, seed=6).float(), _rand(8, 4, seed=7).float()
    torch.testing.assert_close(group_conv2d(x, standard), F.conv2d(x, standard, padding=1), **TORCH_TOL)
    torch.testing.assert_close(group_conv2d(x, group, groups=2), F.conv2d(x, group, padding=2, groups=2), **TORCH_TOL)
    torch.testing.assert_close(depthwise_conv2d(x, depthwise), F.conv2d(x, depthwise, padding=1, groups=4), **TORCH_TOL)
    torch.testing.assert_close(pointwise_conv2d(x, pointwise), F.conv2d(x, pointwise[:, :, None, None]), **TORCH_TOL)


def test_depthwise_multiplier_orders_outputs_by_input_channel():
    """Output c * m + j is input c through kernel j: a naive loop per channel and kernel."""
    x, w = _rand(1, 3, 6, 8, seed=8), _rand(6, 1, 3, 3, seed=9)
    out = depthwise_conv2d(x, w)
    for c in range(3):
        for j in range(2):
            expected, _ = naive_group_conv(x[0, c: c + 1].numpy(), w[c * 2 + j: c * 2 + j + 1].numpy(), 1)
            np.testing.assert_allclose(out[0, c * 2 + j].numpy(), expected[0], **NAIVE_TOL)


def test_separable_equals_depthwise_then_pointwise_and_one_composed_conv():
    x, dw, pw = _rand(1, 4, 9, 10, seed=10), _rand(8, 1, 5, 5, seed=11), _rand(6, 8, 1, 1, seed=12)
    ours = depthwise_separable_conv2d(x, dw, pw)
    two_steps = F.conv2d(F.conv2d(x, dw, padding=2, groups=4), pw)
    torch.testing.assert_close(ours, two_steps, **NAIVE_TOL)
    composed = compose_pointwise(pw, dense_weight(dw, 4))
    torch.testing.assert_close(ours, F.conv2d(x, composed, padding=2), **NAIVE_TOL)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_conv_is_a_standard_conv_with_block_diagonal_weights(groups):
    x, w = _rand(1, 8, 7, 6, seed=13), _rand(8, 8 // groups, 3, 3, seed=14)
    dense = dense_weight(w, groups)
    torch.testing.assert_close(group_conv2d(x, w, groups=groups), F.conv2d(x, dense, padding=1), **NAIVE_TOL)
    expected = group_of_input(8, groups)[:, None] == group_of_input(8, groups)[None, :]
    assert torch.equal(connectivity(dense), expected)


@pytest.mark.parametrize("channels, groups", [(8, 2), (12, 3), (12, 4), (6, 6), (5, 1)])
def test_shuffle_is_a_permutation_whose_inverse_restores_the_order(channels, groups):
    x = _rand(2, channels, 3, 4, seed=channels)
    perm = shuffle_permutation(channels, groups)
    assert sorted(perm.tolist()) == list(range(channels))
    shuffled = channel_shuffle(x, groups)
    assert torch.equal(shuffled, x[:, perm])
    assert torch.equal(shuffled, naive_shuffle(x, groups))
    assert torch.equal(channel_shuffle(shuffled, channels // groups), x)
    assert torch.equal(shuffled[:, torch.argsort(perm)], x)


def test_shuffle_with_one_group_or_one_channel_per_group_changes_nothing():
    x = _rand(1, 6, 2, 3, seed=15)
    assert torch.equal(channel_shuffle(x, 1), x) and torch.equal(channel_shuffle(x, 6), x)


@pytest.mark.parametrize("c, g, reached", [(16, 4, 4), (8, 2, 2), (8, 4, 2), (16, 8, 2)])
def test_shuffle_hands_each_group_channels_of_min_g_and_c_over_g_groups(c, g, reached):
    """After a group conv and the shuffle, each block of C / g consecutive channels holds channels
    of min(g, C / g) groups, so a second group conv reads that many groups (all of them when
    C / g >= g, ShuffleNet's case); without the shuffle it reads its own group only."""
    x, w1, w2 = _rand(1, c, 6, 6, seed=16), _rand(c, c // g, 3, 3, seed=17), _rand(c, c // g, 1, 1, seed=18)
    mid = dense_weight(w1, g)[shuffle_permutation(c, g)]
    torch.testing.assert_close(channel_shuffle(group_conv2d(x, w1, groups=g), g), F.conv2d(x, mid, padding=1), **NAIVE_TOL)
    with_shuffle = connectivity(compose_pointwise(dense_weight(w2, g), mid))
    without = connectivity(compose_pointwise(dense_weight(w2, g), dense_weight(w1, g)))
    assert (with_shuffle.sum(1) == reached * (c // g)).all()
    assert torch.equal(without, connectivity(dense_weight(w1, g)))


def test_torchvision_shufflenet_channel_shuffle():
    shufflenet = pytest.importorskip("torchvision.models.shufflenetv2")
    x = _rand(2, 12, 5, 5, seed=19)
    assert torch.equal(channel_shuffle(x, 3), shufflenet.channel_shuffle(x, 3))


@pytest.mark.parametrize("c_in, c_out, k, groups", [(4, 6, 3, 1), (4, 6, 3, 2), (6, 6, 5, 3), (4, 8, 3, 4), (4, 4, 1, 1)])
def test_counts_equal_their_formulas_the_layers_and_the_loop(c_in, c_out, k, groups):
    params = conv2d_parameter_count(c_in, c_out, k, groups)
    assert params == c_out * (c_in // groups) * k * k
    assert conv2d_parameter_count(c_in, c_out, k, groups, bias=True) == params + c_out
    layer = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False)
    assert params == sum(p.numel() for p in layer.parameters())
    assert params == sum(p.numel() for p in GroupConv2d(c_in, c_out, k, groups).parameters())
    _, mults = naive_group_conv(np.zeros((c_in, 5, 4)), np.zeros((c_out, c_in // groups, k, k)), groups)
    assert conv2d_multiply_adds(c_in, c_out, k, 5, 4, groups) == mults == params * 20


def test_separable_counts_are_the_sum_of_its_layers():
    c_in, c_out, k, m = 8, 16, 3, 2
    layer = DepthwiseSeparableConv2d(c_in, c_out, k, m)
    expected = c_in * m * k * k + c_in * m * c_out
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert conv2d_parameter_count(c_in, c_in * m, k, c_in) + conv2d_parameter_count(c_in * m, c_out, 1) == expected


def test_gradcheck():
    g = torch.Generator().manual_seed(20)
    x = torch.rand(1, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    dw = torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pw = torch.randn(3, 8, 1, 1, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: channel_shuffle(group_conv2d(a, b, groups=2), 2), (x, w))
    assert torch.autograd.gradcheck(depthwise_separable_conv2d, (x, dw, pw))


def test_module_twins_equal_the_functions():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 9, 7, dtype=torch.float64)
    gconv = GroupConv2d(4, 8, 3, groups=2, shuffle=True, bias=True).double()
    torch.testing.assert_close(gconv(x), channel_shuffle(group_conv2d(x, gconv.weight, gconv.bias, 2), 2), **NAIVE_TOL)
    dw = DepthwiseConv2d(4, 5, multiplier=3).double()
    assert dw(x).shape == (2, 12, 9, 7)
    torch.testing.assert_close(dw(x), depthwise_conv2d(x, dw.weight), **NAIVE_TOL)
    pw = PointwiseConv2d(4, 6, groups=2).double()
    torch.testing.assert_close(pw(x), pointwise_conv2d(x, pw.weight, groups=2), **NAIVE_TOL)
    sep = DepthwiseSeparableConv2d(4, 6, 3, multiplier=2).double()
    torch.testing.assert_close(sep(x), depthwise_separable_conv2d(x, sep.depthwise.weight, sep.pointwise.weight),
                               **NAIVE_TOL)
    assert torch.equal(ChannelShuffle(2)(x), channel_shuffle(x, 2))


def test_identity_cases():
    x = _rand(1, 3, 6, 5, seed=21)
    delta = torch.zeros(6, 1, 3, 3, dtype=torch.float64)
    delta[:, 0, 1, 1] = 1.0
    torch.testing.assert_close(depthwise_conv2d(x, delta), x.repeat_interleave(2, 1), **NAIVE_TOL)
    torch.testing.assert_close(pointwise_conv2d(x, torch.eye(3, dtype=torch.float64)), x, **NAIVE_TOL)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(N, 6, H, W\).*\(8, 3, 3, 3\).*\(1, 4, 5, 5\)"):
        group_conv2d(torch.rand(1, 4, 5, 5), torch.rand(8, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"\(4, 2, 3, 3\).*\(1, 4, 5, 5\)"):
        depthwise_conv2d(torch.rand(1, 4, 5, 5), torch.rand(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"\(6, 9, 1, 1\).*8 channels.*\(8, 1, 3, 3\)"):
        depthwise_separable_conv2d(torch.rand(1, 4, 5, 5), torch.rand(8, 1, 3, 3), torch.rand(6, 9, 1, 1))
    with pytest.raises(ValueError, match="3 groups must divide the channels of x.*\\(1, 4, 2, 2\\)"):
        channel_shuffle(torch.rand(1, 4, 2, 2), 3)
    with pytest.raises(ValueError, match="k odd"):
        group_conv2d(torch.rand(1, 2, 5, 5), torch.rand(2, 2, 2, 2))


@pytest.mark.parametrize("c, g", list(itertools.product([8, 12], [1, 2, 4])))
def test_permutation_formula(c, g):
    perm = shuffle_permutation(c, g)
    assert all(int(perm[j]) == (j % g) * (c // g) + j // g for j in range(c))
