"""Optical flow cores: OpenCV's DIS and Farneback recover a known translation, rotation and
scaling of a textured image (median endpoint error away from the borders, stated per method);
warping back by the true flow leaves a small residual and, for a whole-pixel shift, none; the
warp against a naive bilinear loop (1e-10) with gradcheck and its module twin; the colour coding
against the Middlebury reference code written out here (1e-12), its four axis hues and its
legend wheel; the affine flow against a loop."""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.functional.affine import compose_affine
from backends.functional.coords import frame_centre
from backends.functional.flow import (
    AXIS_HUES,
    FlowWarp,
    affine_flow,
    color_wheel,
    dense_flow,
    endpoint_error,
    flow_to_color,
    grey_uint8,
    warp_by_flow,
)

NAIVE_TOL = 1e-10  # float64 against the loops written here
COLOUR_TOL = 1e-12  # float64 against the reference colour code
HUE_TOL = 1.5  # degrees: each axis direction's hue
MARGIN = 16  # px kept clear of the border for the flow figures
# Median endpoint error (px) away from the border on the 150 x 200 texture below, with headroom
# over what was measured (DIS medium 0.03-0.05, Farneback 0.04-0.08, DIS fast 0.12-0.19).
EPE_LIMITS = {("DIS", "medium"): 0.15, ("Farneback", "medium"): 0.2, ("DIS", "fast"): 0.35}
H, W = 150, 200


def texture() -> torch.Tensor:
    """(1, 1, H, W) float64 smooth random texture in [0, 1], seeded: enough detail for any flow."""
    g = torch.Generator().manual_seed(0)
    coarse = F.interpolate(torch.rand(1, 1, H // 4, W // 4, generator=g, dtype=torch.float64), size=(H, W),
                           mode="bicubic", align_corners=False)
    fine = F.interpolate(torch.rand(1, 1, H // 2, W // 2, generator=g, dtype=torch.float64), size=(H, W),
                         mode="bilinear", align_corners=False)
    return (0.7 * coarse + 0.3 * fine).clamp(0, 1)


def moved(image: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """The content of ``image`` moved by the pixel map ``motion`` (OpenCV, bilinear)."""
    out = cv2.warpAffine(image[0, 0].numpy().astype(np.float32), motion[:2].numpy(), (W, H), flags=cv2.INTER_LINEAR)
    return torch.from_numpy(out).double()[None, None]


MOTIONS = {
    "translation": compose_affine(0.0, 1.0, 0.0, 4.3, -2.6, frame_centre(W, H)),
    "rotation": compose_affine(3.0, 1.0, 0.0, 0.0, 0.0, frame_centre(W, H)),
    "scaling": compose_affine(0.0, 1.05, 0.0, 1.0, 1.0, frame_centre(W, H)),
}


@pytest.mark.parametrize("motion", list(MOTIONS))
@pytest.mark.parametrize("method, preset", list(EPE_LIMITS))
def test_the_flow_recovers_a_known_motion(motion, method, preset):
    first = texture()
    second = moved(first, MOTIONS[motion])
    flow = torch.from_numpy(dense_flow(grey_uint8(first), grey_uint8(second), method, preset)).permute(2, 0, 1)[None]
    true = affine_flow(MOTIONS[motion], H, W, flow)
    epe = endpoint_error(flow, true)[0, MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert float(epe.median()) < EPE_LIMITS[(method, preset)]


def test_affine_flow_is_a_p_minus_p_on_a_non_square_frame():
    a = MOTIONS["rotation"] @ MOTIONS["translation"]
    flow = affine_flow(a, 5, 7, torch.zeros((), dtype=torch.float64))
    for y in range(5):
        for x in range(7):
            target = a @ torch.tensor([x, y, 1.0], dtype=torch.float64)
            torch.testing.assert_close(flow[0, :, y, x], target[:2] - torch.tensor([x, y], dtype=torch.float64),
                                       atol=NAIVE_TOL, rtol=0)


def test_warping_back_with_the_true_flow_leaves_a_small_residual():
    first = texture()
    for motion in MOTIONS.values():
        second = moved(first, motion)
        back = warp_by_flow(second, affine_flow(motion, H, W, first))
        inner = (slice(None), slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
        before = float((first - second)[inner].abs().mean())
        after = float((first - back)[inner].abs().mean())
        assert after < 0.03 and after < before / 5  # bilinear twice: interpolation error only


def test_a_whole_pixel_shift_warps_back_exactly():
    first = texture()
    second = torch.roll(first, shifts=(-2, 5), dims=(2, 3))  # content moves 5 right, 2 up
    flow = torch.tensor([5.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, H, W)
    back = warp_by_flow(second, flow)
    torch.testing.assert_close(back[..., 2:-2, :-5], first[..., 2:-2, :-5], atol=NAIVE_TOL, rtol=0)


def naive_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """(H, W) read at p + flow(p), bilinear, border values beyond the edge (replicate)."""
    h, w = image.shape
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            sx = min(max(x + flow[0, y, x], 0.0), w - 1.0)
            sy = min(max(y + flow[1, y, x], 0.0), h - 1.0)
            x0, y0 = min(int(math.floor(sx)), w - 2), min(int(math.floor(sy)), h - 2)
            fx, fy = sx - x0, sy - y0
            out[y, x] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x0 + 1])
                         + fy * ((1 - fx) * image[y0 + 1, x0] + fx * image[y0 + 1, x0 + 1]))
    return out


def test_warp_equals_a_naive_bilinear_loop():
    rng = np.random.default_rng(4)
    image = rng.random((6, 9))
    flow = rng.normal(0, 2.0, (2, 6, 9))
    ours = warp_by_flow(torch.from_numpy(image)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, naive_warp(image, flow), atol=NAIVE_TOL)


def test_warp_gradcheck_and_module():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    assert torch.autograd.gradcheck(warp_by_flow, (image, flow), eps=1e-6, atol=1e-6)
    torch.testing.assert_close(FlowWarp()(image, flow), warp_by_flow(image, flow), atol=0, rtol=0)


def reference_colours(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The Middlebury colour code (Baker et al.), as its reference implementation writes it,
    without the final rounding to bytes: (..., 3) in [0, 1] for a flow already divided by the
    longest vector."""
    segments = []  # (length, the channel held at 255, the channel that ramps, whether it rises)
    for length, held, ramp, rises in ((15, 0, 1, True), (6, 1, 0, False), (4, 1, 2, True), (11, 2, 1, False),
                                      (13, 2, 0, True), (6, 0, 2, False)):
        seg = np.zeros((length, 3))
        seg[:, held] = 255
        seg[:, ramp] = 255 * np.arange(length) / length if rises else 255 - 255 * np.arange(length) / length
        segments.append(seg)
    wheel = np.concatenate(segments)
    n = wheel.shape[0]
    rad = np.sqrt(u**2 + v**2)
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = k0 + 1
    k1[k1 == n] = 0
    f = fk - k0
    out = np.zeros(u.shape + (3,))
    for i in range(3):
        col = (1 - f) * wheel[k0, i] / 255 + f * wheel[k1, i] / 255
        inside = rad <= 1
        col[inside] = 1 - rad[inside] * (1 - col[inside])
        col[~inside] *= 0.75
        out[..., i] = col
    return out


def test_colours_equal_the_reference_code():
    rng = np.random.default_rng(3)
    flow = rng.normal(0, 1.0, (1, 2, 9, 13))
    top = 2.0
    ours = flow_to_color(torch.from_numpy(flow), top)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, reference_colours(flow[0, 0] / top, flow[0, 1] / top), atol=COLOUR_TOL)


def test_the_four_axis_directions_take_their_documented_hues():
    directions = {"right": (1.0, 0.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "up": (0.0, -1.0)}
    for name, (u, v) in directions.items():
        rgb = flow_to_color(torch.tensor([u, v], dtype=torch.float64).view(1, 2, 1, 1))[0, :, 0, 0].tolist()
        hue, sat, _ = colorsys.rgb_to_hsv(*rgb)
        assert abs(hue * 360 - AXIS_HUES[name]) < HUE_TOL and sat > 0.99, name
    half = flow_to_color(torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1), 2.0)[0, :, 0, 0]
    torch.testing.assert_close(half, torch.tensor([1.0, 0.5, 0.5], dtype=torch.float64))  # half as long: half as deep
    still = flow_to_color(torch.zeros(1, 2, 1, 1, dtype=torch.float64), 1.0)[0, :, 0, 0]
    torch.testing.assert_close(still, torch.ones(3, dtype=torch.float64))  # no motion: white


def test_the_legend_wheel_is_the_coding_of_a_flow_from_its_centre():
    wheel, mask = color_wheel(41, torch.zeros((), dtype=torch.float64))
    assert mask[20, 20] == 1 and mask[0, 0] == 0 and mask[20, 40] == 1
    torch.testing.assert_close(wheel[:, 20, 20], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(wheel[:, 20, 40], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # right rim: red
    hue = colorsys.rgb_to_hsv(*wheel[:, 40, 20].tolist())[0] * 360  # bottom rim: moving down
    assert abs(hue - AXIS_HUES["down"]) < HUE_TOL


def test_grey_uint8_and_shape_errors():
    g = grey_uint8(torch.tensor([[[[0.0, 0.5, 1.0]]]]))
    np.testing.assert_array_equal(g, np.array([[0, 128, 255]], np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\) and \(2, 2, 4, 5\)"):
        warp_by_flow(torch.rand(2, 3, 5, 5), torch.rand(2, 2, 4, 5))
    with pytest.raises(ValueError, match=r"\(10, 10\) uint8.*\(10, 12\)"):
        dense_flow(np.zeros((10, 10), np.uint8), np.zeros((10, 12), np.uint8))
    with pytest.raises(ValueError, match="method must be one of"):
        dense_flow(np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8), method="Lucas")
    with pytest.raises(ValueError, match="at least 16 x 16 px, got 40 x 3"):  # OpenCV itself fails or crashes
        dense_flow(np.zeros((3, 40), np.uint8), np.zeros((3, 40), np.uint8))
