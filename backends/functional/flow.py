"""Dense optical flow as a spatial transformation: OpenCV's estimators (DIS, Farneback), the
flow's colour coding, and ``grid_sample`` warping by a flow.

A flow is (N, 2, H, W) of (dx, dy) in pixels (x right, y down): the content at pixel p of the
first image is at ``p + flow(p)`` in the second (OpenCV's convention:
``first(y, x) ~ second(y + flow_y, x + flow_x)``). Reading the second image at ``p + flow(p)``
(:func:`warp_by_flow`) therefore brings it back onto the first.

The colour coding is the Middlebury colour wheel (Baker et al., IJCV 2011): hue is the
direction, saturation the length relative to the longest; white is no motion. Right is red, down
yellow, left light blue (cyan), up violet (:data:`AXIS_HUES`, degrees of hue).
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.coords import points_to_normalized

METHODS = ("DIS", "Farneback")
DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
# The wheel's segments (Baker et al.): red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta, magenta-red.
WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)
AXIS_HUES = {"right": 0.0, "down": 54.0, "left": 191.0, "up": 261.0}  # hue (degrees) of each direction, about
MIN_SIDE = 16  # OpenCV's DIS refuses images under 12 px, and its Farneback pyramid can crash on tiny ones


def dense_flow(first: np.ndarray, second: np.ndarray, method: str = "DIS", preset: str = "medium", levels: int = 5,
               window: int = 15) -> np.ndarray:
    """OpenCV's dense optical flow from ``first`` to ``second``.

    Args:
        first, second: (H, W) uint8 grey images of the same size.
        method: "DIS" (dense inverse search, Kroeger et al. 2016) or "Farneback" (polynomial expansion, 2003).
        preset: DIS's speed against accuracy: ultrafast, fast, medium.
        levels, window: Farneback's pyramid levels and averaging window (px).
    Returns:
        (H, W, 2) float32 of (dx, dy) px.
    """
    if first.shape != second.shape or first.ndim != 2 or first.dtype != np.uint8 or second.dtype != np.uint8:
        raise ValueError(f"first and second must be (H, W) uint8 of one size, got {first.shape} {first.dtype} "
                         f"and {second.shape} {second.dtype}")
    if min(first.shape) < MIN_SIDE:
        raise ValueError(f"dense optical flow needs an image at least {MIN_SIDE} x {MIN_SIDE} px, "
                         f"got {first.shape[1]} x {first.shape[0]}")
    if method == "DIS":
        if preset not in DIS_PRESETS:
            raise ValueError(f"preset must be one of {tuple(DIS_PRESETS)}, got {preset!r}")
        return cv2.DISOpticalFlow_create(DIS_PRESETS[preset]).calc(first, second, None)
    if method == "Farneback":
        return cv2.calcOpticalFlowFarneback(first, second, None, 0.5, levels, window, 3, 5, 1.1,
                                            cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def grey_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 1, H, W) in [0, 1] -> (H, W) uint8, what the OpenCV estimators take."""
    if image.dim() != 4 or tuple(image.shape[:2]) != (1, 1):
        raise ValueError(f"grey_uint8 expects (1, 1, H, W), got {tuple(image.shape)}")
    return (image[0, 0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def pixel_lattice(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, H, W): each pixel's own (x, y)."""
    ys = torch.arange(height, device=like.device, dtype=like.dtype)
    xs = torch.arange(width, device=like.device, dtype=like.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None]


def warp_by_flow(input: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """``input`` read at ``p + flow(p)`` (bilinear): the second image brought back onto the first.

    Args:
        input: (N, C, H, W).
        flow: (N, 2, H, W) of (dx, dy) px.
    Returns:
        (N, C, H, W), differentiable in both.
    """
    if input.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[0] != input.shape[0] \
            or flow.shape[-2:] != input.shape[-2:]:
        raise ValueError(f"input must be (N, C, H, W) and flow (N, 2, H, W) of the same N, H, W, "
                         f"got {tuple(input.shape)} and {tuple(flow.shape)}")
    h, w = input.shape[-2:]
    target = (pixel_lattice(h, w, flow) + flow).permute(0, 2, 3, 1)
    return F.grid_sample(input, points_to_normalized(target, w, h, align_corners=False), mode="bilinear",
                         padding_mode=padding_mode, align_corners=False)


class FlowWarp(nn.Module):
    """Module twin of :func:`warp_by_flow` (the warping layer of flow networks)."""

    def __init__(self, padding_mode: str = "border") -> None:
        super().__init__()
        self.padding_mode = padding_mode

    def forward(self, input: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return warp_by_flow(input, flow, self.padding_mode)


def affine_flow(matrix: torch.Tensor, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, H, W): ``A p - p`` for a (3, 3) pixel map ``A`` moving content from p to A p."""
    if tuple(matrix.shape) != (3, 3):
        raise ValueError(f"matrix must be (3, 3), got {tuple(matrix.shape)}")
    p = pixel_lattice(height, width, like)[0].permute(1, 2, 0)  # (H, W, 2)
    m = matrix.to(like.device, like.dtype)
    return (p @ m[:2, :2].T + m[:2, 2] - p).permute(2, 0, 1)[None]


def endpoint_error(flow: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) twice -> (N, H, W): the length of their difference, px."""
    if flow.shape != reference.shape or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flows must both be (N, 2, H, W), got {tuple(flow.shape)} and {tuple(reference.shape)}")
    return (flow - reference).norm(dim=1)


def wheel_colours(like: torch.Tensor) -> torch.Tensor:
    """(3, 55) the Middlebury wheel's colours in [0, 1], red first, turning through yellow."""
    ramp = [torch.arange(n, dtype=torch.float64) / n for n in WHEEL_SEGMENTS]
    one = [torch.ones(n, dtype=torch.float64) for n in WHEEL_SEGMENTS]
    zero = [torch.zeros(n, dtype=torch.float64) for n in WHEEL_SEGMENTS]
    r = torch.cat([one[0], 1 - ramp[1], zero[2], zero[3], ramp[4], one[5]])
    g = torch.cat([ramp[0], one[1], one[2], 1 - ramp[3], zero[4], zero[5]])
    b = torch.cat([zero[0], zero[1], ramp[2], one[3], one[4], 1 - ramp[5]])
    return torch.stack([r, g, b]).to(like.device, like.dtype)


def flow_to_color(flow: torch.Tensor, max_magnitude: Optional[float] = None) -> torch.Tensor:
    """The Middlebury colour coding of a flow.

    Args:
        flow: (N, 2, H, W) of (dx, dy).
        max_magnitude: the length drawn fully saturated; the longest vector's by default.
            Longer vectors are darkened (x 0.75), as in the reference code.
    Returns:
        (N, 3, H, W) RGB in [0, 1].
    """
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got {tuple(flow.shape)}")
    u, v = flow[:, 0], flow[:, 1]
    rad = torch.sqrt(u * u + v * v)
    top = float(rad.max()) if max_magnitude is None else float(max_magnitude)
    rad = (rad / max(top, 1e-9))[:, None]  # (N, 1, H, W)
    wheel = wheel_colours(flow)
    n = wheel.shape[1]
    fk = (torch.atan2(-v, -u) * (1 / math.pi) + 1) * ((n - 1) / 2)
    k0 = fk.floor().long().clamp_(0, n - 1)
    shape = (3,) + tuple(k0.shape)
    c0 = wheel.index_select(1, k0.reshape(-1)).view(shape).transpose(0, 1)  # (N, 3, H, W)
    c1 = wheel.index_select(1, ((k0 + 1) % n).reshape(-1)).view(shape).transpose(0, 1)
    col = torch.lerp(c0, c1, (fk - k0)[:, None])
    inside = rad <= 1
    # inside the unit length: 1 - rad (1 - col) = col rad + (1 - rad); beyond it: col 0.75
    return torch.addcmul(torch.where(inside, 1 - rad, 0.0), col, torch.where(inside, rad, 0.75))


def color_wheel(size: int, like: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The legend of :func:`flow_to_color`: a disc whose every point is coloured as a flow from
    the centre to it, the rim fully saturated.

    Returns:
        the picture (3, size, size) and its mask (size, size), 1 inside the disc.
    """
    like = like if like is not None else torch.zeros(())
    c = (size - 1) / 2.0
    lattice = (pixel_lattice(size, size, like) - c) / max(c, 1e-9)
    mask = (lattice.norm(dim=1)[0] <= 1).to(like.dtype)
    return flow_to_color(lattice, 1.0)[0] * mask, mask
