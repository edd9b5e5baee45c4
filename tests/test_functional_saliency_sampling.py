"""Saliency sampling cores: the grid against the paper's kernel-weighted average written as a
naive float64 loop over every cell (1e-10), a uniform saliency giving the plain resize (1e-6 px
with the extended border; without it only away from the border, by the stated bound), local
magnification (1 / Jacobian determinant) growing with the saliency of a spot and peaking on a
ridge of it, no sample leaving the frame, the inverse of a grid,
the edge energy of a ramp, grid_sample of the grid, float64 gradcheck and the module twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.coords import points_to_normalized
from backends.functional.saliency_sampling import (
    PAD_SIGMAS,
    SaliencySampler,
    edge_energy,
    invert_sampling_grid,
    magnification,
    saliency_sample,
    saliency_sampling_grid,
    uniform_grid,
)

NAIVE_TOL = 1e-10  # float64, the same sums in another order
IDENTITY_TOL = 1e-6  # px: uniform saliency with the extended border (lattice and 6-sigma cut errors ~1e-8)
INTERIOR_TOL = 1e-4  # px: uniform saliency without it, 5 sigma or more from the border (sigma * phi(5) ~ 1.5e-6 * sigma)
INVERSE_TOL = 1e-6  # px: Newton's inverse, read back through the grid
FRAME, OUT, SIGMA = (30, 40), (13, 17), 5.0  # non-square, cells of 3 x 3.33 px


def naive_grid(saliency: np.ndarray, frame, out, sigma: float, extend: bool) -> np.ndarray:
    """u(x') = sum S(x) k(x, x') x / sum S(x) k(x, x') by loops over every output pixel and cell;
    the extended border continues the cells (and their centres) at the saliency's minimum."""
    h, w = saliency.shape
    (fh, fw), (oh, ow) = frame, out
    cx, cy = fw / w, fh / h
    px = math.ceil(PAD_SIGMAS * sigma / cx) if extend else 0
    py = math.ceil(PAD_SIGMAS * sigma / cy) if extend else 0
    low = saliency.min()
    grid = np.zeros((oh, ow, 2))
    for i in range(oh):
        for j in range(ow):
            xo, yo = (j + 0.5) * fw / ow - 0.5, (i + 0.5) * fh / oh - 0.5
            num_x = num_y = den = 0.0
            for a in range(-py, h + py):
                for b in range(-px, w + px):
                    s = saliency[a, b] if 0 <= a < h and 0 <= b < w else low
                    xc, yc = (b + 0.5) * cx - 0.5, (a + 0.5) * cy - 0.5
                    k = s * math.exp(-((xc - xo) ** 2 + (yc - yo) ** 2) / (2 * sigma * sigma))
                    num_x, num_y, den = num_x + k * xc, num_y + k * yc, den + k
            grid[i, j] = (num_x / den, num_y / den)
    return grid


@pytest.mark.parametrize("extend", [False, True])
def test_grid_equals_the_kernel_weighted_average_loop(extend):
    rng = np.random.default_rng(2)
    s = 0.2 + rng.random((10, 12))
    ours = saliency_sampling_grid(torch.from_numpy(s)[None, None], FRAME, OUT, SIGMA, extend)[0].numpy()
    np.testing.assert_allclose(ours, naive_grid(s, FRAME, OUT, SIGMA, extend), atol=NAIVE_TOL)


def test_uniform_saliency_gives_the_plain_resize_up_to_the_border():
    ones = torch.ones(1, 1, 24, 32, dtype=torch.float64)
    frame, out, sigma = (120, 160), (60, 80), 10.0
    plain = uniform_grid(frame, out, ones)
    torch.testing.assert_close(saliency_sampling_grid(ones * 3.0, frame, out, sigma), plain, atol=IDENTITY_TOL, rtol=0)
    cut = saliency_sampling_grid(ones, frame, out, sigma, extend_border=False)
    margin = 5 * sigma  # px of the input
    inner = (plain[..., 0] > margin - 0.5) & (plain[..., 0] < 160 - margin - 0.5) \
        & (plain[..., 1] > margin - 0.5) & (plain[..., 1] < 120 - margin - 0.5)
    assert inner.sum() > 100
    assert float((cut - plain)[inner].abs().max()) < INTERIOR_TOL
    assert float(cut[0, 0, 0, 0] - plain[0, 0, 0, 0]) > 1.0  # the one-sided sums pull the corner inward
    assert float(plain[0, -1, -1, 1] - cut[0, -1, -1, 1]) > 1.0


def test_magnification_follows_a_bump_of_saliency():
    """Saliency rising to a ridge at x = 70 px and falling again: the magnification peaks at the
    ridge (output column 35 of a half-size output) and falls on both sides of it, and the flanks
    just outside the bump are compressed (log S convex there)."""
    xs = (torch.arange(32, dtype=torch.float64) + 0.5) * 5 - 0.5
    ridge = (1 + 6 * torch.exp(-(xs - 70) ** 2 / (2 * 15.0**2))).expand(1, 1, 24, 32).contiguous()
    zoom = magnification(saliency_sampling_grid(ridge, (120, 160), (60, 80), 12.0), (120, 160))[0, 30]
    assert abs(int(zoom.argmax()) - 35) <= 1 and float(zoom.max()) > 1.4
    rising, falling = zoom[25:35], zoom[35:46]
    assert bool((rising[1:] > rising[:-1]).all()) and bool((falling[1:] < falling[:-1]).all())
    assert float(zoom[12]) < 0.8 and float(zoom[57]) < 0.8


def test_a_salient_spot_is_magnified_more_the_stronger_it_is():
    s = torch.ones(1, 1, 24, 32, dtype=torch.float64)
    frame, out = (120, 160), (60, 80)
    peaks = []
    for strength in (0.0, 2.0, 8.0):
        spot = s.clone()
        spot[..., 14:17, 8:11] += strength  # cells around x = 47, y = 77: left of centre, below it
        zoom = magnification(saliency_sampling_grid(spot, frame, out, 10.0), frame)[0]
        at = divmod(int(zoom.argmax()), out[1])
        peaks.append((float(zoom.max()), at))
    assert peaks[0][0] == pytest.approx(1.0, abs=1e-5)
    assert peaks[1][0] > 1.2 and peaks[2][0] > peaks[1][0]
    row, col = peaks[2][1]
    assert abs(row - 77 / 2) <= 3 and abs(col - 47 / 2) <= 3  # at the spot (the output is half the input)


def test_samples_stay_inside_the_frame():
    s = 0.05 + torch.rand(1, 1, 10, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 20
    s[..., :, 0] = 50.0  # a salient left border: replicating it would pull samples past the edge
    grid = saliency_sampling_grid(s, FRAME, OUT, SIGMA)
    assert float(grid[..., 0].min()) > -0.5 and float(grid[..., 0].max()) < FRAME[1] - 0.5
    assert float(grid[..., 1].min()) > -0.5 and float(grid[..., 1].max()) < FRAME[0] - 0.5


def test_the_inverse_lands_back_on_the_points():
    s = 1 + 4 * torch.rand(1, 1, 12, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grid = saliency_sampling_grid(s, (60, 80), (30, 40), 8.0)
    pts = torch.rand(1, 200, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 50 + torch.tensor([15.0, 5.0])
    q = invert_sampling_grid(grid, pts)
    back = F.grid_sample(grid.permute(0, 3, 1, 2), torch.stack([q[..., 0] / 39 * 2 - 1, q[..., 1] / 29 * 2 - 1], -1)[:, None],
                         align_corners=True)[:, :, 0].transpose(1, 2)
    torch.testing.assert_close(back, pts, atol=INVERSE_TOL, rtol=0)
    plain = uniform_grid((60, 80), (30, 40), s)
    q0 = invert_sampling_grid(plain, pts)
    torch.testing.assert_close(q0, (pts + 0.5) / 2 - 0.5, atol=1e-9, rtol=0)  # a plain halving, exactly


def test_sample_reads_the_image_at_the_grid_and_the_module_agrees():
    img = torch.rand(2, 3, 30, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = 1 + torch.rand(2, 1, 10, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out, grid = saliency_sample(img, s, OUT, SIGMA)
    ref = F.grid_sample(img, points_to_normalized(grid, 40, 30, False), padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    m_out, m_grid = SaliencySampler(OUT, SIGMA)(img, s)
    torch.testing.assert_close(m_out, out, atol=0, rtol=0)
    torch.testing.assert_close(m_grid, grid, atol=0, rtol=0)


def test_gradcheck_of_the_grid_and_the_output_with_respect_to_saliency():
    s = (1 + torch.rand(1, 1, 5, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: saliency_sampling_grid(v, (20, 24), (7, 8), 4.0), (s,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda v: saliency_sampling_grid(v, (20, 24), (7, 8), 4.0, False), (s,), eps=1e-6,
                                    atol=1e-6)
    img = torch.rand(1, 2, 20, 24, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: saliency_sample(img, v, (7, 8), 4.0)[0], (s,), eps=1e-6, atol=1e-6)


def test_edge_energy_of_a_ramp_is_its_slope():
    ramp = (torch.arange(20, dtype=torch.float64) * 0.03).expand(1, 1, 15, 20)
    e = edge_energy(ramp, sigma=1.0)
    torch.testing.assert_close(e[..., 4:-4, 4:-4], torch.full_like(e[..., 4:-4, 4:-4], 0.03), atol=1e-9, rtol=0)


def test_shape_and_range_errors_name_the_values():
    with pytest.raises(ValueError, match=r"\(N, 1, h, w\), got \(1, 3, 4, 4\)"):
        saliency_sampling_grid(torch.rand(1, 3, 4, 4), (8, 8), (4, 4), 2.0)
    with pytest.raises(ValueError, match="sigma 0.1 px is under 0.25 of a 2 px cell"):
        saliency_sampling_grid(torch.rand(1, 1, 4, 4), (8, 8), (4, 4), 0.1)
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\) and \(1, 1, 4, 4\)"):
        saliency_sample(torch.rand(2, 3, 8, 8), torch.rand(1, 1, 4, 4), (4, 4), 2.0)
