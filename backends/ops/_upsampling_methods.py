"""The upsampling lab's methods on one low-resolution image, their kernels, where one input pixel
goes in each (the impulse response: a column of the upsampling matrix), and the window of the
tap-count map the overlap panel draws.

Every method maps a (1, C, h, w) input to about (1, C, h s, w s). The learned-kernel methods use
one k x k kernel for every colour channel, so outputs stay images; the transposed convolution
runs as its sub-pixel twin (s² small convolutions on the input instead of one on s² times as many
pixels, mostly zeros), which the tests hold equal to torch's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from backends.functional.upsampling import (
    bilinear_kernel,
    max_unpool2d,
    overlap_count,
    resize_conv2d,
    subpixel_conv_transpose2d,
)

METHODS = ("transposed", "max unpool", "nearest", "bilinear", "resize + conv", "pixel shuffle")
KERNELS = ("box", "bilinear", "random")
KERNEL_METHODS = ("transposed", "resize + conv", "pixel shuffle")
# The parameters each method's output depends on (the stride always).
METHOD_INPUTS = {
    "transposed": ("stride", "kernel_size", "kernel", "seed", "padding", "output_padding", "dilation"),
    "max unpool": ("stride",),
    "nearest": ("stride",),
    "bilinear": ("stride",),
    "resize + conv": ("stride", "kernel_size", "kernel", "seed"),
    "pixel shuffle": ("stride", "kernel_size", "kernel", "seed", "dilation"),
}


def make_kernel2d(name: str, k: int, total: float, seed: int = 0) -> torch.Tensor:
    """(k, k) float32 of taps summing to ``total``: box (all equal), bilinear (FCN's tent) or
    random (seeded, positive, as a learned kernel might start)."""
    if name == "box":
        base = np.ones((k, k))
    elif name == "bilinear":
        base = bilinear_kernel(k)
    elif name == "random":
        base = np.random.default_rng(int(seed)).uniform(0.05, 1.0, (k, k))
    else:
        raise ValueError(f"unknown kernel {name!r}; one of {', '.join(KERNELS)}")
    return torch.from_numpy(base * (total / base.sum())).float()


@dataclass(frozen=True)
class Inputs:
    """The full-resolution ``reference`` (1, C, h s, w s) and what the methods read: its
    s x s block means ``low`` (1, C, h, w), and its block maxima with their indices."""

    reference: torch.Tensor
    low: torch.Tensor
    pooled: torch.Tensor
    indices: torch.Tensor


def make_inputs(reference: torch.Tensor, stride: int) -> Inputs:
    low = F.avg_pool2d(reference, stride)
    pooled, indices = F.max_pool2d(reference, stride, return_indices=True)
    return Inputs(reference, low, pooled, indices)


def upsample(method: str, x: torch.Tensor, params: Mapping[str, Any], indices: torch.Tensor = None,
             out_size: tuple[int, int] = None) -> torch.Tensor:
    """``method`` applied to x (1, C, h, w), one kernel for every channel. Max unpooling puts x's
    values where ``indices`` say, on an ``out_size`` plane; it is linear in x for fixed indices."""
    s, k, d = int(params["stride"]), int(params["kernel_size"]), int(params["dilation"])
    if method == "nearest":
        return F.interpolate(x, scale_factor=s, mode="nearest")
    if method == "bilinear":
        return F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    if method == "max unpool":
        return max_unpool2d(x, indices, s, output_size=out_size)
    # One kernel for every channel: the channels go through as a batch of one-channel images.
    planes = x.transpose(0, 1)
    if method == "resize + conv":
        kernel = make_kernel2d(params["kernel"], k, 1.0, params["seed"]).to(x)
        return resize_conv2d(planes, kernel[None, None], s, "nearest").transpose(0, 1)
    kernel = make_kernel2d(params["kernel"], k, float(s * s), params["seed"]).to(x)[None, None]
    if method == "transposed":
        try:
            out = subpixel_conv_transpose2d(planes, kernel, s, int(params["padding"]), int(params["output_padding"]), d)
        except ValueError as exc:
            raise ValueError(str(exc).replace("subpixel_conv_transpose2d: ", "")) from None
        return out.transpose(0, 1)
    if method == "pixel shuffle":  # the s² phase images of the unpadded transposed convolution, H s x W s
        h, w = x.shape[-2:]
        out = subpixel_conv_transpose2d(planes, kernel, s, dilation=d)[..., : h * s, : w * s]
        return F.pad(out, (0, w * s - out.shape[-1], 0, h * s - out.shape[-2])).transpose(0, 1)
    raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")


def run_method(method: str, inputs: Inputs, params: Mapping[str, Any]) -> torch.Tensor:
    x = inputs.pooled if method == "max unpool" else inputs.low
    return upsample(method, x, params, inputs.indices, tuple(inputs.reference.shape[-2:]))


def impulse_response(method: str, inputs: Inputs, params: Mapping[str, Any], pixel: tuple[int, int]) -> torch.Tensor:
    """(H_out, W_out): the method's output for an input of zeros with a one at ``pixel`` (x, y) of
    the low-resolution grid: where that pixel's value goes, and with what weight."""
    h, w = inputs.low.shape[-2:]
    delta = inputs.low.new_zeros(1, 1, h, w)
    delta[0, 0, pixel[1], pixel[0]] = 1.0
    idx = inputs.indices[:, :1]
    return upsample(method, delta, params, idx, tuple(inputs.reference.shape[-2:]))[0, 0]


@dataclass(frozen=True)
class OverlapWindow:
    """An interior window of the tap-count map: ``counts`` (n, n) for output rows and columns
    ``start`` .. ``start + n - 1`` (a multiple of s, so phases read from 0), and the edge box
    (x, y, w, h) of one input pixel's footprint inside it."""

    counts: torch.Tensor
    start: int
    footprint: tuple[float, float, float, float]


def overlap_window(k: int, s: int, p: int, q: int, d: int) -> OverlapWindow:
    """The tap counts of a transposed convolution where every tap has an input behind it."""
    span = d * (k - 1) + 1
    start = -(-max(0, span - 1 - p) // s) * s  # first interior row, rounded up to phase 0
    n = -(-max(3 * s, span + s) // s) * s
    size = (start + n + 2 * p) // s + 2  # input pixels, so the window stays interior and inside the output
    counts = overlap_count(size, size, k, s, p, q, d)[start: start + n, start: start + n]
    first = -(-(start + p) // s)  # the first input pixel whose first tap lands in the window
    at = first * s - p - start
    return OverlapWindow(counts, start, (float(at), float(at), float(span), float(span)))
