"""The kernel bank of the convolution operators: small, named, deterministic k x k filters
(numpy float32, row = y, column = x), and a kernel spread onto its dilated footprint."""

from __future__ import annotations

import math

import cv2
import numpy as np

KERNEL_NAMES = ("identity", "box", "gaussian", "sobel", "sobel_x", "sobel_y", "laplacian", "gabor", "random")
NONNEGATIVE = ("identity", "box", "gaussian")


def make_kernel(name: str, size: int, angle_deg: float = 0.0, seed: int = 0) -> np.ndarray:
    """A (size, size) float32 kernel. ``sobel`` gives the x derivative; its y twin is the transpose."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    c = size // 2
    if name == "identity":
        k = np.zeros((size, size), np.float32)
        k[c, c] = 1.0
    elif name == "box":
        k = np.full((size, size), 1.0 / size**2, np.float32)
    elif name == "gaussian":
        g = cv2.getGaussianKernel(size, sigma=max(size / 4.0, 0.5), ktype=cv2.CV_32F)
        k = g @ g.T
    elif name in ("sobel", "sobel_x", "sobel_y"):
        dx, sm = cv2.getDerivKernels(1, 0, size, normalize=True, ktype=cv2.CV_32F)
        k = (sm @ dx.T).astype(np.float32)  # rows smooth, columns differentiate: d/dx
        if name == "sobel_y":
            k = k.T.copy()
    elif name == "laplacian":
        g = cv2.getGaussianKernel(size, sigma=max(size / 5.0, 0.5), ktype=cv2.CV_64F)
        ys, xs = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
        s2 = max(size / 5.0, 0.5) ** 2
        k = ((xs**2 + ys**2 - 2 * s2) / s2**2) * (g @ g.T) if size > 3 else np.array(
            [[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64
        )
        k = (k - k.mean()).astype(np.float32)
        k /= np.abs(k).sum() / 2
    elif name == "gabor":
        sigma = max(size / 4.0, 0.8)
        k = cv2.getGaborKernel((size, size), sigma, math.radians(angle_deg), lambd=max(size / 1.5, 2.5), gamma=0.8, psi=0.0)
        k = (k - k.mean()).astype(np.float32)
        k /= max(np.abs(k).sum() / 2, 1e-8)
    elif name == "random":
        rng = np.random.default_rng(seed)
        k = (rng.standard_normal((size, size)) / size).astype(np.float32)
    else:
        raise ValueError(f"unknown kernel {name!r}; one of {', '.join(KERNEL_NAMES)}")
    return np.ascontiguousarray(k, dtype=np.float32)


def dilate_kernel(kernel: np.ndarray, dilation: int, fill: float = 0.0) -> np.ndarray:
    """The kernel spread onto its dilated footprint, ``fill`` between taps: with 0, what the conv
    really applies; with NaN, a picture where the inserted zeros differ from zero-weight taps."""
    k = kernel.shape[0]
    span = dilation * (k - 1) + 1
    out = np.full((span, span), fill, kernel.dtype)
    out[::dilation, ::dilation] = kernel
    return out
