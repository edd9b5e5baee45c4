"""The deformable-kernels operator through compute: its layers and metrics, the identity case (no
deformation: both outputs are the plain convolution with the central crop), and what each panel
DRAWS against computations written out here: the resampled kernel by a naive bilinear read of the
kernel space at M^-1 t (a turn tells M from its inverse, a shear tells x from y), where the kernel
space marks the taps, both outputs against F.conv2d and deform_conv2d, and both receptive fields
against the kernels convolved with themselves, placed at an asymmetric query of a non-square
image: the deformable kernel's stays inside the regular box, the convolution's leaves it."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.affine import compose_affine
from backends.functional.deformable import deform_conv2d
from backends.functional.deformable_kernels import affine_tap_offsets, deform_kernel_conv2d, pattern_space
from backends.ops.deformable_kernels import DeformableKernels, deform_matrix
from backends.params import ParamError, validate

SPEC = DeformableKernels.spec
QUERY = (41, 17)  # asymmetric, clear of the border of a 72 x 48 image


def _compute(image, query=QUERY, **values):
    with torch.no_grad():  # as the worker runs it
        return DeformableKernels().compute(image, validate(SPEC.params, values), query)


def _image(h=48, w=72):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def _bilinear(grid: np.ndarray, x: float, y: float) -> float:
    s = grid.shape[0]
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < s and 0 <= xx < s:
                total += wy * wx * grid[yy, xx]
    return total


def _expected_kernel(space: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
    """Tap (i, j) at t = (j - k//2, i - k//2) reads the kernel space at its centre + M^-1 t."""
    c = (space.shape[0] - 1) / 2
    inv = np.linalg.inv(matrix)
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            x, y = inv @ np.array([j - k // 2, i - k // 2], float)
            out[i, j] = _bilinear(space, c + x, c + y)
    return out


def _self_convolved(kernel: np.ndarray, layers: int) -> np.ndarray:
    """The stack's composite weight at each displacement v = t_1 + ... + t_layers (x right, y down)."""
    out = kernel
    for _ in range(layers - 1):
        a, b = out.shape[0], kernel.shape[0]
        nxt = np.zeros((a + b - 1, a + b - 1))
        for i in range(b):
            for j in range(b):
                nxt[i: i + a, j: j + a] += kernel[i, j] * out
        out = nxt
    return out


def test_operator_layers_and_metrics():
    result = _compute(_image(), layers=2, kernel_size="3", space_size="9")
    assert result.names == ("Deformable kernels", "Deformable convolution", "Kernel space", "Resampled kernel",
                            "Receptive field: deformable kernels", "Receptive field: deformable convolution", "Metrics")
    metrics = result.layer("Metrics").values
    assert metrics["kernel, kernel space"] == "3x3 from 9x9"
    assert metrics["receptive field, deformable kernels"] == "5 x 5"
    assert metrics["receptive field, deformable conv"] == "9 x 9"  # zoom 2: taps 2 px out, two layers
    assert {"kernels ms", "outputs ms", "receptive fields ms"} <= set(metrics)


@pytest.mark.parametrize("deform, strength", [("rotate", 0.6), ("shear", 0.9), ("zoom", -0.7), ("zoom", 0.55)])
def test_the_resampled_kernel_is_the_space_read_at_the_inverse_map(deform, strength):
    result = _compute(_image(), deform=deform, strength=strength, kernel_space="gabor", kernel_size="5", space_size="11")
    picture = np.asarray(result.layer("Resampled kernel").image)
    space = pattern_space("gabor", 11).numpy()
    matrix = {"rotate": compose_affine(angle_deg=45 * strength), "shear": compose_affine(shear=strength / 2),
              "zoom": compose_affine(scale=2 ** strength)}[deform][:2, :2].numpy()
    assert picture.shape == (5, 11) and np.isnan(picture[:, 5]).all()
    np.testing.assert_allclose(picture[:, :5], space[3:8, 3:8], atol=1e-6)
    np.testing.assert_allclose(picture[:, 6:], _expected_kernel(space, matrix, 5), atol=1e-6)
    assert result.layer("Resampled kernel").column_labels == ("central crop", "resampled")


def test_the_kernel_space_marks_each_tap_where_it_samples():
    """Edge coordinates: a square centred on (c + M^-1 t) + 0.5; the first box is the central crop."""
    result = _compute(_image(), deform="rotate", strength=1.0, kernel_size="3", space_size="7")
    boxes = result.layer("Kernel space").boxes
    assert boxes[0] == (2.0, 2.0, 3.0, 3.0)
    inv = np.linalg.inv(compose_affine(angle_deg=45.0)[:2, :2].numpy())
    centres = np.array([(x + w / 2, y + h / 2) for x, y, w, h in boxes[1:]])
    expected = np.array([inv @ np.array([j - 1.0, i - 1.0]) + 3.5 for i in range(3) for j in range(3)])
    np.testing.assert_allclose(centres, expected, atol=1e-9)


def test_no_deformation_gives_the_plain_convolution_in_both_panels():
    image = _image()
    result = _compute(image, deform="zoom", strength=0.0, kernel_space="edge", kernel_size="5", space_size="9")
    crop = pattern_space("edge", 9)[2:7, 2:7].float()
    ref = F.conv2d(image, crop.expand(3, 1, 5, 5), padding=2, groups=3)[0].mean(0).numpy()
    for name in ("Deformable kernels", "Deformable convolution"):
        np.testing.assert_allclose(np.asarray(result.layer(name).image), ref, atol=1e-5)


def test_the_outputs_are_the_two_convolutions_of_the_image():
    """Gaussian space (RGB shown): the deformable kernel is F.conv2d with the resampled kernel; the
    deformable convolution is deform_conv2d with the offsets (M - I) t at every pixel."""
    image = _image()
    strength = 0.8
    result = _compute(image, deform="shear", strength=strength, kernel_space="gaussian", kernel_size="3", space_size="7")
    space = pattern_space("gaussian", 7)
    space = space / space[2:5, 2:5].sum()
    matrix = compose_affine(shear=strength / 2)[:2, :2]
    sampled = torch.from_numpy(_expected_kernel(space.numpy(), matrix.numpy(), 3)).float()
    dk = F.conv2d(image, sampled.expand(3, 1, 3, 3), padding=1, groups=3)[0].permute(1, 2, 0)
    np.testing.assert_allclose(np.asarray(result.layer("Deformable kernels").image), dk.numpy(), atol=1e-5)
    taps = torch.tensor([(j - 1.0, i - 1.0) for i in range(3) for j in range(3)], dtype=torch.float64)
    moved = taps @ matrix.T - taps
    offset = moved.flip(-1).reshape(1, 18, 1, 1).float().expand(1, 18, 48, 72)
    dc = deform_conv2d(image, offset, space[2:5, 2:5].float().expand(3, 1, 3, 3), padding=1)[0].permute(1, 2, 0)
    np.testing.assert_allclose(np.asarray(result.layer("Deformable convolution").image), dc.numpy(), atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_receptive_fields_are_the_stacks_weights_placed_at_the_query(layers):
    """Zoom 2 (taps land on whole pixels): the convolution's composite weight is its crop spread 2 px
    apart, convolved with itself; the deformable kernel's is the resampled 3 x 3 one. |.| / max,
    centred on (qx, qy) as (column, row)."""
    result = _compute(_image(), deform="zoom", strength=1.0, kernel_space="gabor", kernel_size="3", space_size="9",
                      layers=layers)
    space = pattern_space("gabor", 9).numpy()
    sampled = _expected_kernel(space, np.diag([2.0, 2.0]), 3)
    spread = np.zeros((5, 5))
    spread[::2, ::2] = space[3:6, 3:6]
    for name, kernel in (("deformable kernels", sampled), ("deformable convolution", spread)):
        weights = np.abs(_self_convolved(kernel, layers))
        half = weights.shape[0] // 2
        expected = np.zeros((48, 72))
        expected[QUERY[1] - half: QUERY[1] + half + 1, QUERY[0] - half: QUERY[0] + half + 1] = weights / weights.max()
        layer = result.layer(f"Receptive field: {name}")
        x0, y0, wc, hc = (int(v) for v in layer.extent)  # the crop is placed on the frame by its extent
        assert np.asarray(layer.maps).shape == (hc, wc)
        erf = np.zeros((48, 72))
        erf[y0: y0 + hc, x0: x0 + wc] = layer.maps
        np.testing.assert_allclose(erf, expected, atol=1e-5)
    regular = result.layer("Receptive field: deformable kernels").boxes[0]
    assert regular == (QUERY[0] + 0.5 - (2 * layers + 1) / 2, QUERY[1] + 0.5 - (2 * layers + 1) / 2,
                       2 * layers + 1.0, 2 * layers + 1.0)
    outside = float(result.layer("Metrics").values["ERF outside the regular box, deformable conv"].rstrip("%"))
    assert outside > 10.0  # the convolution reads beyond the regular box; the deformable kernel cannot


@pytest.mark.parametrize("query", [(1, 2), (70, 46), (41, 17)])
def test_the_receptive_fields_equal_autograd_through_the_layers_themselves_at_the_border_too(query):
    """A shear that puts taps between pixels, two layers, queries at two corners and inside: each
    panel is |d out(q) / d luma| / max by autograd through deform_kernel_conv2d and deform_conv2d
    (float64), where zero padding cuts the paths that leave the image."""
    result = _compute(_image(), query=query, deform="shear", strength=0.7, kernel_space="gabor", kernel_size="3",
                      space_size="9", layers=2)
    space = pattern_space("gabor", 9)
    matrix = deform_matrix("shear", 0.7).double()
    dk_offsets = affine_tap_offsets(torch.linalg.inv(matrix), 3).view(1, -1, 1, 1)
    dc_offsets = affine_tap_offsets(matrix, 3).view(1, -1, 1, 1).expand(1, -1, 48, 72)
    stacks = {"deformable kernels": lambda a: deform_kernel_conv2d(a, dk_offsets, space[None, None], 3),
              "deformable convolution": lambda a: deform_conv2d(a, dc_offsets, space[3:6, 3:6][None, None], padding=1)}
    for name, layer_fn in stacks.items():
        luma = torch.rand(1, 1, 48, 72, dtype=torch.float64, requires_grad=True)
        layer_fn(layer_fn(luma))[0, 0, query[1], query[0]].backward()
        expected = luma.grad[0, 0].abs()
        expected = (expected / expected.max()).numpy()
        layer = result.layer(f"Receptive field: {name}")
        x0, y0, wc, hc = (int(v) for v in layer.extent)
        erf = np.zeros((48, 72))
        erf[y0: y0 + hc, x0: x0 + wc] = layer.maps
        np.testing.assert_allclose(erf, expected, atol=1e-5, err_msg=name)


def test_a_kernel_larger_than_its_space_is_refused():
    with pytest.raises(ParamError, match="at least the kernel"):
        _compute(_image(), kernel_size="7", space_size="5")


def test_deform_matrix_names_its_maps():
    torch.testing.assert_close(deform_matrix("zoom", 1.0), torch.eye(2, dtype=torch.float64) * 2)
    torch.testing.assert_close(deform_matrix("shear", 1.0), torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown deformation"):
        deform_matrix("swirl", 1.0)
