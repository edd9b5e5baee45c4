"""The reparam operator through compute: its layers, the timing that settles once per block, and
what each panel DRAWS against computations written out here: the fused kernel tile by tile
(output channel down, input channel across; a transposed layout fails, the kernel matrix is not
symmetric), the branch kernels with batch norm folded by hand, the difference map and its
maximum against torch's own conv and batch norm, and the fused output it shows."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.reparam import random_block
from backends.layers import complete
from backends.ops.reparam import StructuralReparameterization
from backends.params import is_active, validate

SPEC = StructuralReparameterization.spec


def _compute(op, image, **values):
    with torch.no_grad():  # as the worker runs it
        return op.compute(image, validate(SPEC.params, values), None)


def _image(h=23, w=31, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _folded(branch, groups=1):
    """A branch's 3 x 3 kernel and bias, folded by hand from its tensors (float64)."""
    per = 3 // groups
    if branch.weight is None:
        k = torch.zeros(3, per, 3, 3, dtype=torch.float64)
        for o in range(3):
            k[o, o % per, 1, 1] = 1.0
    else:
        w = branch.weight.double()
        kh, kw = w.shape[-2:]
        k = torch.zeros(3, per, 3, 3, dtype=torch.float64)
        k[..., (3 - kh) // 2:(3 - kh) // 2 + kh, (3 - kw) // 2:(3 - kw) // 2 + kw] = w
    s, t = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    if branch.bn is not None:
        bn = branch.bn
        s = bn.weight.double() / torch.sqrt(bn.var.double() + bn.eps)
        t = bn.bias.double() - bn.mean.double() * s
    if branch.scale is not None:
        s, t = s * branch.scale.double(), t * branch.scale.double()
    return k * s.view(-1, 1, 1, 1), t


def _tile(picture, row, col, origin=(0, 0)):
    y0, x0 = origin
    return picture[y0 + 4 * row: y0 + 4 * row + 3, x0 + 4 * col: x0 + 4 * col + 3]


def test_operator_layers_metrics_and_a_timing_that_settles_once():
    op, image = StructuralReparameterization(), _image()
    first = _compute(op, image)
    assert first.names == ("Output", "Branch kernels", "Fused kernel", "Branched − fused", "Metrics")
    assert first.settle is not None and first.pending == ("Time",)
    full = complete(first)
    assert full.names == ("Output", "Branch kernels", "Fused kernel", "Branched − fused", "Time", "Metrics")
    bars = full.layer("Time")
    assert bars.value_label == "ms" and len(bars.labels) == 2
    assert (np.asarray(bars.series["time"]) > 0).all()
    again = _compute(op, image, mean_scale=0.9, seed=3)  # statistics only: the timing is kept
    assert again.settle is None and "Time" in again.names
    assert _compute(op, image, block="acnet").settle is not None  # another block is timed anew
    metrics = full.layer("Metrics").values
    assert metrics["weights (fused)"] == 3 * 3 * 9 + 3
    assert metrics["weights (branched)"] == 3 * 3 * 9 + 3 * 3 + 3 * 2 * 3  # 3x3, 1x1 and three BN (gamma, beta)
    assert {"fuse ms", "outputs ms", "timing ms", "fused speed-up"} <= set(metrics)


@pytest.mark.parametrize("groups", ["full", "depthwise"])
@pytest.mark.parametrize("block", ["repvgg", "acnet", "diracnet"])
def test_the_fused_kernel_panel_draws_each_output_input_pair_in_place(block, groups):
    values = dict(block=block, groups=groups, seed=4, mean_scale=0.5, var_scale=1.0, dirac_alpha=0.7)
    layer = _compute(StructuralReparameterization(), _image(), **values).layer("Fused kernel")
    g = 1 if groups == "full" else 3
    branches = random_block(block, 3, g, 4, 0.5, 1.0, 0.7)
    expected = sum(_folded(b, g)[0] for b in branches)
    picture = np.asarray(layer.image)
    per = 3 // g
    assert picture.shape == (11, 4 * per - 1)
    for o in range(3):
        for i in range(per):
            np.testing.assert_allclose(_tile(picture, o, i), expected[o, i].numpy(), atol=1e-6)
    assert np.isnan(picture[3::4]).all()  # transparent rows between output channels
    assert layer.row_labels == ("R", "G", "B")
    lo, hi = layer.levels
    assert lo == -hi and hi == pytest.approx(float(expected.abs().max()), rel=1e-6)


def test_the_branch_panel_draws_each_branch_folded_side_by_side():
    """RepVGG, full groups: tile (o, i) of branch b sits at column offset b * (11 + 2)."""
    layer = _compute(StructuralReparameterization(), _image(), seed=2, mean_scale=0.8, var_scale=1.5).layer("Branch kernels")
    branches = random_block("repvgg", 3, 1, 2, 0.8, 1.5)
    picture = np.asarray(layer.image)
    assert picture.shape == (11, 3 * 11 + 2 * 2)
    assert layer.column_labels == ("3x3", "1x1", "identity")
    for b, branch in enumerate(branches):
        kernel = _folded(branch)[0]
        for o in range(3):
            for i in range(3):
                np.testing.assert_allclose(_tile(picture, o, i, (0, 13 * b)), kernel[o, i].numpy(), atol=1e-6)
    identity = picture[:, 26:]
    for o in range(3):  # the identity reads only its own channel, at the centre
        for i in range(3):
            tile = _tile(identity, o, i)
            assert np.count_nonzero(tile) == (1 if i == o else 0)
    assert np.isnan(picture[:, 11:13]).all()


@pytest.mark.parametrize("precision, tol", [("float32", 1e-5), ("float64", 1e-10)])
def test_the_difference_map_is_branched_minus_fused_and_its_maximum_is_said(precision, tol):
    image = _image(seed=1)
    result = _compute(StructuralReparameterization(), image, block="acnet", precision=precision, seed=6, var_scale=2.0)
    diff = np.asarray(result.layer("Branched − fused").maps)
    dtype = torch.float32 if precision == "float32" else torch.float64
    branches = random_block("acnet", 3, 1, 6, 0.2, 2.0, dtype=dtype)
    x = image.to(dtype)
    branched = sum(F.batch_norm(F.conv2d(x, b.weight, padding=(b.weight.shape[2] // 2, b.weight.shape[3] // 2)),
                                b.bn.mean, b.bn.var, b.bn.weight, b.bn.bias, eps=b.bn.eps) for b in branches)
    weight = sum(_folded(b)[0] for b in branches).to(dtype)
    bias = sum(_folded(b)[1] for b in branches).to(dtype)
    fused = F.conv2d(x, weight, bias, padding=1)
    expected = (branched - fused).abs().amax(1)[0].double().numpy()
    assert diff.shape == (23, 31)
    np.testing.assert_allclose(diff, expected, atol=tol / 10)
    top = float(diff.max())
    assert 0 < top < tol
    assert f"at most {top:.2g}" in result.layer("Branched − fused").caption
    assert result.layer("Metrics").values["largest |branched − fused|"] == f"{top:.2g}"


def test_the_output_is_the_fused_convolution_stretched_per_channel():
    image = _image(seed=2)
    shown = np.asarray(_compute(StructuralReparameterization(), image, block="diracnet", dirac_alpha=1.5).layer("Output").image)
    branches = random_block("diracnet", 3, 1, 0, dirac_alpha=1.5, dtype=torch.float64)
    weight = sum(_folded(b)[0] for b in branches)
    out = F.conv2d(image.double(), weight, padding=1)[0].numpy()
    assert shown.shape == (23, 31, 3) and shown.min() >= 0 and shown.max() <= 1
    for c in range(3):  # stretching is increasing: the order of pixels is the output's
        a, b = out[c].ravel(), shown[..., c].ravel()
        inside = (b > 0) & (b < 1)
        assert np.corrcoef(a[inside], b[inside])[0, 1] > 0.999


def test_parameters_say_when_they_do_anything():
    by_name = {s.name: s for s in SPEC.params}
    dirac = validate(SPEC.params, {"block": "diracnet"})
    assert not is_active(by_name["mean_scale"], dirac) and is_active(by_name["dirac_alpha"], dirac)
    repvgg = validate(SPEC.params, {"block": "repvgg"})
    assert is_active(by_name["var_scale"], repvgg) and not is_active(by_name["dirac_alpha"], repvgg)
    assert SPEC.primary == "Output"


def test_a_large_image_is_shown_at_the_working_size_on_its_frame():
    result = _compute(StructuralReparameterization(), _image(96, 320, seed=3))
    out, diff = result.layer("Output"), result.layer("Branched − fused")
    assert np.asarray(out.image).shape == (77, 256, 3) and np.asarray(diff.maps).shape == (77, 256)
    assert out.extent == diff.extent == (0.0, 0.0, 320.0, 96.0)
    assert "at 256x77 px" in out.caption and "at 256x77 px" in diff.caption
