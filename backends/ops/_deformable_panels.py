"""The deformable operator's panels: outputs, the offset field, the query's sampling points,
the v2 modulation and the metrics, from one evaluation at a working resolution placed on the
input frame (points in pixel-index coordinates of the input, x right, y down)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from backends.features import robust_max
from backends.functional.deformable import offset_magnitude, offsets_to_xy, tap_vectors
from backends.functional.kernels import make_kernel
from backends.layers import INPUT, HeatmapLayer, ImageLayer, PointSet, PointsLayer, VectorFieldLayer

ARROWS_PER_SIDE = 26
PATTERNS_PER_SIDE = 10  # tap patterns: few and large, so each pixel's taps read as one pattern
ARROW_COLORMAP = "viridis"  # arrows coloured by length, with a colour bar from 0 to the longest
Levels = Optional[tuple[float, float]]


@dataclass
class Pieces:
    """One evaluation at a working resolution ``work`` = (w, h); the frame is the input image's."""

    offsets: torch.Tensor  # (1, 2K, h, w)
    mask: Optional[torch.Tensor]  # (1, K, h, w) or None for v1
    deformed: torch.Tensor  # what the output panel shows (see display)
    regular: torch.Tensor  # likewise for the regular convolution
    levels: Levels  # None: RGB in [0, 1]; else the signed range of a channel mean

    @property
    def work(self) -> tuple[int, int]:
        return self.offsets.shape[3], self.offsets.shape[2]


def symmetric_levels(x: torch.Tensor) -> tuple[float, float]:
    """A range symmetric about 0 holding the channel mean of (1, C, H, W), outliers aside."""
    hi = float(robust_max(x.mean(1).abs().flatten(), samples=65536))
    return (-hi, hi)


def display(x: torch.Tensor, levels: Levels) -> torch.Tensor:
    """(1, 3, H, W) -> what an ImageLayer shows: RGB (H, W, 3), or the channel mean for signed kernels."""
    return x[0].permute(1, 2, 0) if levels is None else x[0].mean(0)


def image_layer(name: str, shown: torch.Tensor, levels: Levels, extent, caption: str) -> ImageLayer:
    if levels is None:
        return ImageLayer(name, shown, levels=(0.0, 1.0), extent=extent, caption=caption)
    return ImageLayer(name, shown, levels=levels, colormap="CET-D1", extent=extent, caption=caption)


def to_frame(points: torch.Tensor, frame: tuple[int, int], work: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates (..., 2) of the working grid to those of the input frame."""
    s = points.new_tensor([frame[0] / work[0], frame[1] / work[1]])
    return (points + 0.5) * s - 0.5


def work_pixel(q: tuple[int, int], frame: tuple[int, int], work: tuple[int, int]) -> tuple[int, int]:
    """The working-grid pixel (x, y) holding input pixel ``q``."""
    return (min(work[0] - 1, int((q[0] + 0.5) * work[0] / frame[0])),
            min(work[1] - 1, int((q[1] + 0.5) * work[1] / frame[1])))


def offset_field(offsets: torch.Tensor, params: Mapping[str, Any], frame: tuple[int, int],
                 work: tuple[int, int]) -> VectorFieldLayer:
    """Offsets as arrows on a thinned lattice, coloured by length; or, as 'tap pattern', each
    lattice pixel's k x k taps enlarged about it, an arrow from each regular tap to where it reads."""
    mode = params["arrows"]
    if mode == "auto":
        mode = "tap pattern" if params["offsets"] == "edges" else "mean offset"
    per_side = PATTERNS_PER_SIDE if mode == "tap pattern" else ARROWS_PER_SIDE
    step = max(1, round(max(work) / per_side))
    oy, ox = min(step // 2, work[1] - 1), min(step // 2, work[0] - 1)  # a 1-pixel-high image keeps a row
    sel = offsets_to_xy(offsets[..., oy:: step, ox:: step])  # (K, ny, nx, 2) of (dx, dy)
    ys = torch.arange(oy, work[1], step, device=sel.device)
    xs = torch.arange(ox, work[0], step, device=sel.device)
    gy, gx = torch.meshgrid(ys.to(sel.dtype), xs.to(sel.dtype), indexing="ij")
    centres = to_frame(torch.stack([gx, gy], -1), frame, work)
    s = sel.new_tensor([frame[0] / work[0], frame[1] / work[1]])
    spacing = step * frame[0] / work[0]
    factor = float(params["arrow_scale"])
    if mode == "tap pattern":
        k, d = int(params["kernel_size"]), int(params["dilation"])
        taps = tap_vectors(k, d, sel.device, sel.dtype)[:, None, None] * s  # (K, 1, 1, 2)
        vectors = (sel * s).expand(k * k, *centres.shape)
        extent = float((taps + vectors).norm(dim=-1).max())  # the widest pattern, in input px
        enlarge = factor * (0.45 * spacing / extent if extent > 1e-9 else 1.0)
        origins = centres + enlarge * taps
        longest = float(vectors.norm(dim=-1).max())
        return VectorFieldLayer(
            "Offset field", origins.reshape(-1, 2), vectors.reshape(-1, 2), background=INPUT, scale=enlarge,
            colormap=ARROW_COLORMAP,
            caption=f"one pixel every {spacing:.0f} px: its {k}x{k} taps enlarged x{enlarge:.2g}, an arrow from each "
                    f"regular tap to where it reads, coloured by offset length (longest {longest:.1f} px)")
    vectors = (sel.mean(0) if mode == "mean offset" else sel[sel.shape[0] // 2]) * s
    longest = float(vectors.norm(dim=-1).max())
    fit = 0.9 * spacing / longest if longest > 1e-9 else 1.0
    scale = factor * min(1.0, fit)
    what = {"mean offset": "mean offset of each pixel's taps", "centre tap": "offset of each pixel's centre tap"}[mode]
    return VectorFieldLayer("Offset field", centres.reshape(-1, 2), vectors.reshape(-1, 2), background=INPUT, scale=scale,
                            colormap=ARROW_COLORMAP,
                            caption=f"{what}, every {spacing:.0f} px, drawn x{scale:.2g}, coloured by length "
                                    f"(longest {longest:.1f} px)")


def sampling_points(offsets: torch.Tensor, mask: Optional[torch.Tensor], params: Mapping[str, Any], q: tuple[int, int],
                    frame: tuple[int, int], work: tuple[int, int]) -> PointsLayer:
    """The query pixel's regular taps and where its deformed taps read, joined to the pixel;
    brightness is each tap's |kernel weight| (times its v2 mask)."""
    k, d = int(params["kernel_size"]), int(params["dilation"])
    wx, wy = work_pixel(q, frame, work)
    xy = offsets_to_xy(offsets[..., wy: wy + 1, wx: wx + 1])[:, 0, 0]  # (K, 2)
    centre = xy.new_tensor([wx, wy])
    taps = tap_vectors(k, d, xy.device, xy.dtype)
    regular = to_frame(centre + taps, frame, work)
    deformed = to_frame(centre + taps + xy, frame, work)
    weights = torch.from_numpy(np.abs(make_kernel(params["kernel"], k)).reshape(-1)).to(xy)
    if mask is not None:
        weights = weights * mask[0, :, wy, wx]
    pts = torch.cat([regular, deformed])
    lo, hi = pts.min(0).values, pts.max(0).values
    margin = max(8.0, 0.25 * float((hi - lo).max()))
    # Snapped outward to 8 px, so the view re-zooms only when the taps move notably.
    x0, y0 = (math.floor((float(v) - margin) / 8) * 8 for v in lo)
    x1, y1 = (math.ceil((float(v) + margin) / 8) * 8 for v in hi)
    focus = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    span = d * (k - 1) + 1
    box = (q[0] + 0.5 - span / 2, q[1] + 0.5 - span / 2, float(span), float(span))
    return PointsLayer(
        "Sampling points",
        sets=(
            PointSet(regular, color=(170, 170, 190), size=6.0, label="regular taps"),
            PointSet(deformed, color=(255, 90, 60), size=9.0, label="deformed taps", join_to=(float(q[0]), float(q[1])), values=weights),
            PointSet(np.array([[q[0], q[1]]], np.float32), color=(60, 220, 255), size=11.0, label="query"),
        ),
        background=INPUT,
        boxes=(box,),
        focus=focus,
        caption=f"grey: regular {k}x{k} taps (box); red: where they read, brightness = |weight|"
                + (" x mask" if mask is not None else ""),
    )


def modulation(mask: Optional[torch.Tensor], q: tuple[int, int], frame: tuple[int, int], work: tuple[int, int],
               top: float, extent) -> Optional[HeatmapLayer]:
    """The v2 mask, mean over each pixel's taps, with the query's taps summed up; None for v1
    (no modulation: the metrics say so)."""
    if mask is None:
        return None
    wx, wy = work_pixel(q, frame, work)
    at_query = mask[0, :, wy, wx]
    return HeatmapLayer("Modulation", mask[0].mean(0), background=INPUT, levels=(0.0, top), opacity=0.75, extent=extent,
                        caption=f"v2 mask, mean over each pixel's {mask.shape[1]} taps; the query's taps: "
                                f"{mask_summary(at_query)}")


def mask_summary(values: torch.Tensor, sep: str = "") -> str:
    """'min 0.71, mean 0.95, max 1.00', or with ``sep`` the bare numbers: '0.71 / 0.95 / 1.00'."""
    parts = (float(values.min()), float(values.mean()), float(values.max()))
    if sep:
        return sep.join(f"{v:.2f}" for v in parts)
    return ", ".join(f"{name} {v:.2f}" for name, v in zip(("min", "mean", "max"), parts))


def metrics(pieces: Pieces, params: Mapping[str, Any], q: tuple[int, int], frame: tuple[int, int],
            global_warp: bool) -> dict[str, Any]:
    """Parameter and work counts, offset sizes in input pixels, the query."""
    work = pieces.work
    k, d = int(params["kernel_size"]), int(params["dilation"])
    mag = offset_magnitude(pieces.offsets[..., ::4, ::4])  # every 4th pixel: plenty for smooth fields
    kk = k * k
    wx, wy = work_pixel(q, frame, work)
    branch = (3 * kk + 1) * (3 * kk if params["version"] == "v2" else 2 * kk)
    reach = d * (k // 2)
    return {
        "kernel parameters": 3 * kk,
        "offset branch parameters": branch,  # the k x k conv a network would learn the offsets with
        "multiply-adds": 3 * kk * work[0] * work[1],
        "bilinear reads": 4 * 3 * kk * work[0] * work[1],
        **({"bilinear reads done": 4 * 3 * (work[0] + 2 * reach) * (work[1] + 2 * reach)}  # one warped image serves every tap
           if global_warp else {}),
        "mean |offset| px": round(float(mag.mean()) * frame[0] / work[0], 2),
        "max |offset| px": round(float(mag.max()) * frame[0] / work[0], 2),
        "modulation": "none (v1)" if pieces.mask is None else "v2 mask",
        **({} if pieces.mask is None else {"mask at query min / mean / max": mask_summary(pieces.mask[0, :, wy, wx], " / ")}),
        "query": f"({q[0]}, {q[1]})",
    }
