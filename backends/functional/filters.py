"""Smoothing and local orientation of NCHW images: a separable Gaussian blur (the coarse-to-fine
schedule of the fits) and the structure tensor (which way edges run)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from backends.functional.kernels import make_kernel


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), replicate border; identity below sigma 0.3."""
    if x.dim() != 4:
        raise ValueError(f"gaussian_blur expects (N, C, H, W), got {tuple(x.shape)}")
    if sigma < 0.3:
        return x
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def structure_tensor(grey: torch.Tensor, sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Dominant gradient angle and coherence of a (1, 1, H, W) image.

    Returns:
        angle (H, W) in radians, from +x towards +y (down), of the dominant gradient; coherence
        (H, W) in [0, 1]: 1 along a clean edge, 0 where no direction dominates.
    """
    if grey.dim() != 4 or tuple(grey.shape[:2]) != (1, 1):
        raise ValueError(f"structure_tensor expects (1, 1, H, W), got {tuple(grey.shape)}")
    sob = torch.from_numpy(make_kernel("sobel_x", 3)).to(grey.device, grey.dtype)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sob[None, None])
    gy = F.conv2d(padded, sob.T[None, None])
    j = gaussian_blur(torch.cat([gx * gx, gx * gy, gy * gy], 1), sigma)[0]
    jxx, jxy, jyy = j[0], j[1], j[2]
    angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)
    spread = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy)
    coherence = (spread / (jxx + jyy).clamp_min(1e-8)) ** 2
    return angle, coherence.clamp(0, 1)
