"""Grad-CAM core: against a naive float64 loop (1e-10), zero gradients give a zero map, channel
order does not matter, the map is the hooked layer's evidence in a real network, and upsampling
equals bilinear interpolation with centres aligned."""

import numpy as np
import pytest
import torch
from torch import nn

from backends.functional.grad_cam import grad_cam, upsample_cam

NAIVE_TOL = 1e-10


def naive_grad_cam(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    b, c, h, w = acts.shape
    out = np.zeros((b, h, w))
    for n in range(b):
        alphas = [sum(grads[n, k, i, j] for i in range(h) for j in range(w)) / (h * w) for k in range(c)]
        for i in range(h):
            for j in range(w):
                out[n, i, j] = max(0.0, sum(alphas[k] * acts[n, k, i, j] for k in range(c)))
    return out


def test_core_equals_the_naive_loop():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(2, 5, 3, 7, generator=g, dtype=torch.float64)
    grads = torch.randn(2, 5, 3, 7, generator=g, dtype=torch.float64)
    got = grad_cam(acts, grads)
    want = naive_grad_cam(acts.numpy(), grads.numpy())
    assert got.shape == (2, 3, 7)
    assert np.abs(got.numpy() - want).max() < NAIVE_TOL
    assert (want > 0).any() and (want == 0).any()  # the ReLU acts on both sides in this case


def test_zero_gradients_give_a_zero_map():
    acts = torch.rand(1, 4, 5, 6) + 1.0
    assert torch.equal(grad_cam(acts, torch.zeros_like(acts)), torch.zeros(1, 5, 6))


def test_channel_permutation_does_not_change_the_map():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(1, 8, 4, 5, generator=g, dtype=torch.float64)
    grads = torch.randn(1, 8, 4, 5, generator=g, dtype=torch.float64)
    perm = torch.randperm(8, generator=g)
    assert torch.allclose(grad_cam(acts, grads), grad_cam(acts[:, perm], grads[:, perm]), atol=1e-12)


def test_gradient_weights_are_spatial_means_not_pointwise():
    """A gradient concentrated in one cell spreads over the whole map (the wrong twin, A * dA
    pointwise, would be zero elsewhere)."""
    acts = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    grads = torch.zeros_like(acts)
    grads[0, 0, 0, 0] = 12.0
    assert torch.allclose(grad_cam(acts, grads), torch.ones(1, 3, 4, dtype=torch.float64))


def test_captured_from_a_network_it_is_linear_evidence():
    """For score = sum_c v_c * mean(A_c) the gradient is v_c / (h w) everywhere, so the map is
    ReLU(sum_c v_c A_c) / (h w): checked through a real hook and backward pass."""
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 6, 3, padding=1).double()
    head = nn.Linear(6, 1, bias=False).double()
    x = torch.randn(1, 3, 5, 9, dtype=torch.float64)
    acts = conv(x)
    acts.retain_grad()
    head(acts.mean(dim=(2, 3))).sum().backward()
    got = grad_cam(acts.detach(), acts.grad)
    v = head.weight[0].detach()
    want = torch.relu((v[:, None, None] * acts.detach()[0]).sum(0)) / 45
    assert torch.allclose(got[0], want, atol=1e-12)


def test_upsample_is_bilinear_with_centres_aligned():
    cam = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    up = upsample_cam(cam, (4, 6))
    assert up.shape == (1, 4, 6)
    # half-pixel centres: output x=0.5+... maps to input (x + 0.5) * 2/6 - 0.5; corners clamp
    assert up[0, 0, 0] == 0.0 and up[0, -1, -1] == 3.0
    xs = (np.arange(6) + 0.5) * 2 / 6 - 0.5
    ys = (np.arange(4) + 0.5) * 2 / 4 - 0.5
    want = np.clip(ys, 0, 1)[:, None] * 2 + np.clip(xs, 0, 1)[None, :]
    assert np.abs(up[0].numpy() - want).max() < 1e-6


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4\).*\(1, 2, 3, 5\)"):
        grad_cam(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5))
    with pytest.raises(ValueError, match="cam must be"):
        upsample_cam(torch.zeros(1, 1, 2, 2), (4, 4))
