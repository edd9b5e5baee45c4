"""Structural reparameterization cores: each fused block (RepVGG, ACNet, DiracNet) against the
same block built from torch's own nn.Conv2d and nn.BatchNorm2d in eval mode (1e-5 in float32,
1e-10 in float64) for random weights and statistics and for groups 1, 2 and 4; the batch-norm fold
against a naive float64 loop (1e-10); the identity kernel with groups; gradcheck; the module twins
against the functional; shape errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.reparam import (
    BLOCKS,
    ACBlock,
    BatchNorm,
    Branch,
    DiracConv2d,
    RepVGGBlock,
    branch_forward,
    branched_forward,
    fuse,
    fused_forward,
    identity_kernel,
    pad_kernel,
    random_block,
)

NAIVE_TOL = 1e-10  # float64, same arithmetic up to summation order
TORCH_TOL = 1e-5  # float32 against torch's conv + batch norm
F64_TOL = 1e-10  # float64 against torch's conv + batch norm
SHAPES = {"repvgg": ((3, 3), (1, 1), None), "acnet": ((3, 3), (1, 3), (3, 1))}


def _randomize_bn(bn: nn.BatchNorm2d, g: torch.Generator) -> nn.BatchNorm2d:
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.05)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn.eval()


def torch_block(block: str, channels: int, groups: int, seed: int, dtype: torch.dtype):
    """(torch modules summed as the reference, the same block as functional Branches)."""
    g = torch.Generator().manual_seed(seed)
    paths, branches = [], []
    if block == "diracnet":
        w = torch.randn(channels, channels // groups, 3, 3, generator=g)
        alpha, beta = torch.randn(channels, generator=g), torch.randn(channels, generator=g)
        conv = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        with torch.no_grad():
            conv.weight.copy_(w)
        conv = conv.to(dtype)
        a, b = alpha.to(dtype), beta.to(dtype)

        def reference(x):
            return a.view(1, -1, 1, 1) * x + b.view(1, -1, 1, 1) * conv(x)
        return reference, (Branch(conv.weight.detach(), None, b), Branch(None, None, a))
    for shape in SHAPES[block]:
        bn = _randomize_bn(nn.BatchNorm2d(channels), g).to(dtype)
        if shape is None:
            paths.append(bn)
            branches.append(Branch(None, _bn_of(bn)))
            continue
        conv = nn.Conv2d(channels, channels, shape, padding=(shape[0] // 2, shape[1] // 2), groups=groups, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv = conv.to(dtype)
        paths.append(nn.Sequential(conv, bn).eval())
        branches.append(Branch(conv.weight.detach(), _bn_of(bn)))

    def reference(x):
        return sum(p(x) for p in paths)
    return reference, tuple(branches)


def _bn_of(bn: nn.BatchNorm2d) -> BatchNorm:
    return BatchNorm(bn.running_mean, bn.running_var, bn.weight.detach(), bn.bias.detach(), bn.eps)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, TORCH_TOL), (torch.float64, F64_TOL)])
def test_fused_equals_torch_conv_and_batch_norm_in_eval_mode(block, groups, dtype, tol):
    reference, branches = torch_block(block, 4, groups, seed=groups * 7 + len(block), dtype=dtype)
    x = torch.randn(2, 4, 13, 10, generator=torch.Generator().manual_seed(1), dtype=dtype)
    weight, bias = fuse(branches, 4, groups)
    assert weight.shape == (4, 4 // groups, 3, 3) and weight.dtype == dtype
    with torch.no_grad():
        ref = reference(x)
    torch.testing.assert_close(branched_forward(x, branches, groups), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(fused_forward(x, weight, bias, groups), ref, atol=tol, rtol=tol)


def naive_fold(branches, channels: int, per: int):
    """The fused kernel and bias by loops in float64: scale each branch's kernel by gamma / sqrt(var
    + eps), pad it into the 3 x 3 centre, add 1 at the identity's own tap, sum."""
    kernel = [[[[0.0] * 3 for _ in range(3)] for _ in range(per)] for _ in range(channels)]
    bias = [0.0] * channels
    for b in branches:
        for o in range(channels):
            s, t = 1.0, 0.0
            if b.bn is not None:
                s = float(b.bn.weight[o]) / (float(b.bn.var[o]) + b.bn.eps) ** 0.5
                t = float(b.bn.bias[o]) - float(b.bn.mean[o]) * s
            if b.scale is not None:
                s, t = s * float(b.scale[o]), t * float(b.scale[o])
            bias[o] += t
            if b.weight is None:
                kernel[o][o % per][1][1] += s
                continue
            kh, kw = b.weight.shape[-2:]
            for i in range(per):
                for r in range(kh):
                    for c in range(kw):
                        kernel[o][i][r + (3 - kh) // 2][c + (3 - kw) // 2] += s * float(b.weight[o, i, r, c])
    return torch.tensor(kernel, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)


@pytest.mark.parametrize("block", BLOCKS)
def test_fold_equals_a_naive_loop(block):
    branches = random_block(block, 6, groups=3, seed=5, mean_scale=0.7, var_scale=1.2, dirac_alpha=0.6, dtype=torch.float64)
    weight, bias = fuse(branches, 6, 3)
    k, b = naive_fold(branches, 6, 2)
    torch.testing.assert_close(weight, k, atol=NAIVE_TOL, rtol=0)
    torch.testing.assert_close(bias, b, atol=NAIVE_TOL, rtol=0)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_the_identity_kernel_returns_the_input_for_any_groups(groups):
    x = torch.randn(1, 6, 9, 8, dtype=torch.float64)
    k = identity_kernel(6, groups, dtype=torch.float64)
    assert k.shape == (6, 6 // groups, 3, 3) and int(k.sum()) == 6
    torch.testing.assert_close(F.conv2d(x, k, padding=1, groups=groups), x, atol=0, rtol=0)


def test_identity_cases():
    """Batch norm with mean 0, variance 1 - eps, gamma 1, beta 0 is the identity; so is a RepVGG
    block whose convolutions are zero: the fused kernel is the identity kernel, the bias 0."""
    c = 4
    unit = BatchNorm(torch.zeros(c, dtype=torch.float64), torch.full((c,), 1 - 1e-5, dtype=torch.float64),
                     torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64))
    zero3, zero1 = torch.zeros(c, c, 3, 3, dtype=torch.float64), torch.zeros(c, c, 1, 1, dtype=torch.float64)
    weight, bias = fuse((Branch(zero3, unit), Branch(zero1, unit), Branch(None, unit)), c)
    torch.testing.assert_close(weight, identity_kernel(c, dtype=torch.float64), atol=1e-15, rtol=0)
    assert float(bias.abs().max()) == 0.0


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (3, 1)])
def test_padding_a_small_kernel_keeps_its_taps_in_place(shape):
    x = torch.randn(1, 2, 11, 12, dtype=torch.float64)
    w = torch.randn(3, 2, *shape, dtype=torch.float64)
    small = F.conv2d(x, w, padding=(shape[0] // 2, shape[1] // 2))
    torch.testing.assert_close(F.conv2d(x, pad_kernel(w), padding=1), small, atol=NAIVE_TOL, rtol=0)


def test_gradcheck_through_the_fold():
    """The fused output is differentiable in the branch weights and the batch-norm affine weights."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64)
    w3 = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(2, 2, 1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(2, generator=g, dtype=torch.float64).add(0.5).requires_grad_(True)
    mean, var = torch.randn(2, generator=g, dtype=torch.float64), torch.rand(2, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)

    def f(w3_, w1_, gamma_, beta_):
        bn = BatchNorm(mean, var, gamma_, beta_)
        weight, bias = fuse((Branch(w3_, bn), Branch(w1_, bn), Branch(None, bn)), 2)
        return fused_forward(x, weight, bias)
    assert torch.autograd.gradcheck(f, (w3, w1, gamma, beta), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [RepVGGBlock, ACBlock, DiracConv2d])
@pytest.mark.parametrize("groups", [1, 2])
def test_module_equals_functional_and_its_fused_conv(cls, groups):
    torch.manual_seed(3)
    block = cls(4, groups).double()
    x = torch.randn(3, 4, 8, 9, dtype=torch.float64)
    if cls is not DiracConv2d:
        block.train()
        for _ in range(3):  # batch statistics move the running ones away from 0 and 1
            block(torch.randn(8, 4, 8, 9, dtype=torch.float64) * 2 + 1)
    block.eval()
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(out, branched_forward(x, block.branches(), groups), atol=0, rtol=0)
        conv = block.fuse()
        assert isinstance(conv, nn.Conv2d) and conv.groups == groups
        torch.testing.assert_close(conv(x), out, atol=F64_TOL, rtol=F64_TOL)


def test_random_blocks_are_seeded_and_the_same_in_every_dtype():
    a = random_block("repvgg", 3, seed=4)
    b = random_block("repvgg", 3, seed=4, dtype=torch.float64)
    torch.testing.assert_close(a[0].weight, b[0].weight.float())
    torch.testing.assert_close(a[2].bn.var, b[2].bn.var.float())
    assert not torch.equal(a[0].weight, random_block("repvgg", 3, seed=5)[0].weight)
    flat = random_block("acnet", 3, mean_scale=0.0, var_scale=0.0)
    assert all(float(br.bn.mean.abs().max()) == 0 and torch.allclose(br.bn.var, torch.ones(3)) for br in flat)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(N, 6, H, W\).*\(1, 4, 5, 5\)"):
        branch_forward(torch.rand(1, 4, 5, 5), Branch(torch.rand(6, 3, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"2x2.*\(1, 1, 2, 2\)"):
        pad_kernel(torch.rand(1, 1, 2, 2))
    with pytest.raises(ValueError, match="not divisible"):
        identity_kernel(5, 2)
    with pytest.raises(ValueError, match="unknown block"):
        random_block("resnet", 3)
