"""The squeeze-and-excitation core: a naive float64 loop, a 1x1-conv reference in torchvision's
layout, torchvision's block when installed, gradcheck, the module twin, identity cases, the
parameter count and the seeded init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from backends.functional.squeeze_excitation import (
    SEBlock,
    excitation,
    se_hidden_size,
    se_init,
    se_parameter_count,
    squeeze,
    squeeze_excitation,
)

NAIVE_TOL = dict(atol=1e-12, rtol=1e-12)  # float64, the same arithmetic up to summation order


def naive_se(x: torch.Tensor, w1, b1, w2, b2) -> tuple[torch.Tensor, torch.Tensor]:
    """The block written out per sample, channel and hidden unit in float64."""
    n, c, h, w = x.shape
    hidden = w1.shape[0]
    y = torch.zeros_like(x, dtype=torch.float64)
    s = torch.zeros(n, c, dtype=torch.float64)
    for b in range(n):
        z = [sum(float(x[b, ch, i, j]) for i in range(h) for j in range(w)) / (h * w) for ch in range(c)]
        u = [max(0.0, sum(float(w1[k, ch]) * z[ch] for ch in range(c)) + float(b1[k])) for k in range(hidden)]
        for ch in range(c):
            logit = sum(float(w2[ch, k]) * u[k] for k in range(hidden)) + float(b2[ch])
            s[b, ch] = 1.0 / (1.0 + math.exp(-logit))
            y[b, ch] = x[b, ch].double() * s[b, ch]
    return y, s


def reference_block(channels: int, hidden: int) -> nn.Sequential:
    """What torchvision.ops.SqueezeExcitation computes (pool, 1x1 conv, ReLU, 1x1 conv, sigmoid)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                         nn.Conv2d(hidden, channels, 1), nn.Sigmoid())


@pytest.mark.parametrize("channels, reduction", [(6, 2), (5, 1), (8, 8)])
def test_equals_the_naive_loop_in_float64(channels, reduction):
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 5, 4, generator=g, dtype=torch.float64)
    ws = [t.double() for t in se_init(channels, reduction, seed=channels, gain=3.0)]
    y, s = squeeze_excitation(x, *ws)
    ref_y, ref_s = naive_se(x, *ws)
    torch.testing.assert_close(s, ref_s, **NAIVE_TOL)
    torch.testing.assert_close(y, ref_y, **NAIVE_TOL)


def test_equals_the_1x1_conv_reference_in_float64():
    torch.manual_seed(0)
    ref = reference_block(12, 3).double()
    x = torch.rand(2, 12, 9, 7, dtype=torch.float64)
    fc1, fc2 = ref[1], ref[3]
    y, s = squeeze_excitation(x, fc1.weight[:, :, 0, 0], fc1.bias, fc2.weight[:, :, 0, 0], fc2.bias)
    torch.testing.assert_close(y, x * ref(x), **NAIVE_TOL)
    torch.testing.assert_close(s, ref(x)[:, :, 0, 0], **NAIVE_TOL)


def test_equals_torchvision_squeeze_excitation():
    ops = pytest.importorskip("torchvision.ops")
    torch.manual_seed(1)
    block = ops.SqueezeExcitation(10, 4).double()
    x = torch.rand(3, 10, 6, 5, dtype=torch.float64)
    y, _ = squeeze_excitation(x, block.fc1.weight[:, :, 0, 0], block.fc1.bias, block.fc2.weight[:, :, 0, 0],
                              block.fc2.bias)
    torch.testing.assert_close(y, block(x), **NAIVE_TOL)


def test_module_equals_functional():
    torch.manual_seed(2)
    block = SEBlock(16, reduction=4, dtype=torch.float64)
    x = torch.rand(2, 16, 5, 6, dtype=torch.float64)
    y, s = squeeze_excitation(x, block.fc1.weight, block.fc1.bias, block.fc2.weight, block.fc2.bias)
    assert block.fc1.weight.shape == (4, 16) and block.fc2.weight.shape == (16, 4)
    assert torch.equal(block(x), y) and torch.equal(block.weights(x), s)


def test_gradcheck_float64():
    """The maps and the weights with respect to the input and all four MLP tensors."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ws = [t.double().requires_grad_(True) for t in se_init(4, 2, seed=1, gain=2.0)]
    assert torch.autograd.gradcheck(squeeze_excitation, (x, *ws))


def test_identity_cases():
    x = torch.rand(1, 6, 4, 5, dtype=torch.float64)
    w1, b1 = torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    w2 = torch.zeros(6, 3, dtype=torch.float64)
    y, s = squeeze_excitation(x, w1, b1, w2, torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(s, torch.full((1, 6), 0.5, dtype=torch.float64))  # sigmoid(0)
    torch.testing.assert_close(y, 0.5 * x)
    y, _ = squeeze_excitation(x, w1, b1, w2, torch.full((6,), 40.0, dtype=torch.float64))
    torch.testing.assert_close(y, x, atol=1e-15, rtol=1e-15)  # sigmoid(40) = 1 - 4e-18
    torch.testing.assert_close(squeeze(x), x.mean((2, 3)))


@pytest.mark.parametrize("channels, r", [(24, 1), (24, 4), (24, 8), (16, 2), (64, 16), (3, 8)])
def test_parameter_count_is_2CC_over_r_plus_C_over_r_plus_C(channels, r):
    h = se_hidden_size(channels, r)
    assert h == max(1, channels // r)
    assert se_parameter_count(channels, r) == 2 * channels * h + h + channels
    assert sum(t.numel() for t in se_init(channels, r, seed=0)) == se_parameter_count(channels, r)
    assert sum(p.numel() for p in SEBlock(channels, r).parameters()) == se_parameter_count(channels, r)
    assert sum(p.numel() for p in reference_block(channels, h).parameters()) == se_parameter_count(channels, r)


def test_init_is_seeded_within_nn_linear_bounds_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    w1, b1, w2, b2 = se_init(24, 4, seed=7, gain=2.0)
    assert torch.equal(torch.get_rng_state(), state)
    for t, fan_in in ((w1, 24), (b1, 24), (w2, 6), (b2, 6)):
        assert float(t.abs().max()) <= 2.0 / math.sqrt(fan_in)
    assert all(torch.equal(a, b) for a, b in zip(se_init(24, 4, seed=7, gain=2.0), (w1, b1, w2, b2)))
    assert not torch.equal(se_init(24, 4, seed=8, gain=2.0)[0], w1)


def test_weights_lie_in_the_open_unit_interval():
    """A sigmoid is in (0, 1); float32 rounds it to 0 or 1 past |logit| ~ 17, so squeezes stay in
    the bank's range [0, 1] and gains up to the operator's default 3."""
    z = torch.rand(5, 24, generator=torch.Generator().manual_seed(4))
    for seed, gain in ((0, 1.0), (1, 3.0), (2, 0.1)):
        s = excitation(z, *se_init(24, 4, seed, gain))
        assert ((s > 0) & (s < 1)).all()


def test_shape_errors_name_both_shapes():
    mlp = se_init(8, 2, seed=0)
    with pytest.raises(ValueError, match=r"x \(1, 6, 4, 4\).*fc1 \(4, 8\)"):
        squeeze_excitation(torch.rand(1, 6, 4, 4), *mlp)
    with pytest.raises(ValueError, match=r"z \(2, 6\).*fc1 \(4, 8\)"):
        excitation(torch.rand(2, 6), *mlp)
    with pytest.raises(ValueError, match=r"\(5, 8\)"):
        squeeze(torch.rand(5, 8))
