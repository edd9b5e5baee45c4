"""Image > Apply: an operator's primary picture made at the original's full resolution, where the
live view holds a downscaled copy (backends/imageio.py, ``max_side``).

How depends on the operator (``Operator.edit``):

- ``"warp"``: a global warp cannot be tiled (any output pixel may read any input pixel), so the
  operator evaluates its sampling grid at every full-resolution pixel (the same normalized map as
  the live grid, i.e. the live grid upscaled) and ``grid_sample``s the full image once.
- ``"pointwise"``: a per-pixel map (a colour transform) measured on the live view, applied to the
  full image in tiles of ``TILE`` rows, so memory stays bounded (``tiled``).
- ``"resized"``: the operator's picture can only be made at the resolution it works at (a model's
  token grid, offsets in the live view's pixels, a per-image contrast stretch): the live picture
  resized to the original's size, and the edit says so.

Everything here runs on the compute thread (the engine calls ``edit_picture``)."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping

import torch
import torch.nn.functional as F

from backends.layers import ImageLayer, Result, complete
from backends.params import ParamError
from backends.registry import Operator, Query

TILE = 512  # rows per tile of a pointwise map: 512 x 8000 x 3 floats is 49 MB


class NotAnEdit(ParamError):
    """The operator's current result is not an edit of the image; the message says why."""


def primary_picture(op: Operator, result: Result) -> ImageLayer:
    """The layer the window shows in the centre, if it is an RGB picture; else NotAnEdit."""
    name = op.spec.primary or "Output"
    if name not in result.names:
        result = complete(result)
    if name not in result.names:
        raise NotAnEdit(f"{op.spec.title} did not draw its '{name}' panel")
    layer = result.layer(name)
    image = layer.image if isinstance(layer, ImageLayer) else None
    if image is None or image.ndim != 3 or image.shape[-1] != 3 or getattr(layer, "categories", None):
        raise NotAnEdit(f"{op.spec.title}'s '{name}' is not a colour picture")
    return layer


def edit_picture(op: Operator, live: torch.Tensor, full: torch.Tensor, params: Mapping[str, Any], query: Query,
                 live_key: Hashable) -> tuple[torch.Tensor, str]:
    """(1, 3, H', W') in [0, 1] on ``full``'s device, and a sentence saying how it was made."""
    if not op.edit:
        raise NotAnEdit(f"{op.spec.title}: {op.not_an_edit}")
    (_, _, h, w), (big_h, big_w) = live.shape, full.shape[-2:]
    if op.edit in ("warp", "pointwise"):
        op.compute(live, params, query, live_key)  # binds what was clicked or fitted on this image
        out = op.full_resolution(live, full, params, query)
        how = "warp sampled at full resolution" if op.edit == "warp" else "per-pixel map applied at full resolution"
        return out.clamp(0.0, 1.0), how
    if op.edit != "resized":
        raise ValueError(f"{op.spec.name}: unknown edit kind {op.edit!r}")
    layer = primary_picture(op, op.compute(live, params, query, live_key))
    picture = torch.as_tensor(layer.image).to(full.device, torch.float32).permute(2, 0, 1)[None]
    ph, pw = picture.shape[-2:]
    covers_frame = layer.extent is not None and tuple(float(v) for v in layer.extent) == (0.0, 0.0, float(w), float(h))
    if (ph, pw) != (h, w) and not covers_frame:
        raise NotAnEdit(f"{op.spec.title}'s picture ({pw}x{ph}) is not drawn over the image ({w}x{h}) in this mode")
    if (ph, pw) == (big_h, big_w):
        return picture.clamp(0.0, 1.0), "computed at full resolution"
    out = F.interpolate(picture, size=(big_h, big_w), mode="bicubic", align_corners=False, antialias=ph > big_h)
    return out.clamp(0.0, 1.0), f"computed at {pw}x{ph} (the operator's working size) and resized to {big_w}x{big_h}"


def tiled(full: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], rows: int = TILE) -> torch.Tensor:
    """``fn`` (a per-pixel map, (1, C, h, W) -> (1, C', h, W)) over ``full`` in bands of ``rows``:
    the same as ``fn(full)`` for a pointwise ``fn``, in a bounded amount of working memory."""
    bands = [fn(full[:, :, y:y + rows]) for y in range(0, full.shape[2], rows)]
    return torch.cat(bands, dim=2)
