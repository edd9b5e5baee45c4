"""Where the deformable operator's offsets come from: global warps about the query, smooth
random fields, edge-following taps, a fit's learned lattice; its v2 modulation from content;
and the fit's target. The numeric cores these build on live in :mod:`backends.functional`."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Optional

import torch
import torch.nn.functional as F

from backends.functional.affine import affine_transform, compose_affine, theta_from_sampling_map
from backends.functional.coords import frame_centre
from backends.functional.deformable import offsets_buffer, tap_vectors
from backends.functional.global_warp import (
    affine_displacement,
    depthwise_conv,
    offsets_from_displacement,
    swirl_displacement,
    swirl_envelope,
)

OFFSET_SOURCES = ("swirl", "zoom", "rotate", "shear", "random", "edges", "learned")
GLOBAL_WARPS = ("zoom", "rotate", "shear", "swirl")  # offsets that one warp of the plane gives every tap
SWIRL_RADIUS = 0.2  # the swirl's fall-off radius, as a share of the short side
FIT_INPUTS = ("kernel", "kernel_size", "dilation", "version", "fit_rotate", "fit_scale", "fit_shear", "fit_size")


def swirl_falloff(query: tuple[float, float], h: int, w: int, reach: int, device=None) -> torch.Tensor:
    """The swirl's envelope about the query: it depends on the query, not the strength."""
    return swirl_envelope(query, h, w, reach, SWIRL_RADIUS * min(h, w), device)


def warp_field(kind: str, strength: float, query: tuple[float, float], h: int, w: int, reach: int, device=None,
               envelope: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dy) on the grid widened by ``reach``: zoom magnifies about the query by 2**strength,
    rotate turns by 45 deg * strength about it, shear slides x by strength / 2 * (y - query y),
    swirl turns by pi * strength about the query with a Gaussian fall-off (:func:`swirl_falloff`,
    passed in when the caller keeps it)."""
    if kind == "swirl":
        env = envelope if envelope is not None else swirl_falloff(query, h, w, reach, device)
        return swirl_displacement(query, math.pi * strength, env, reach)
    maps = {"zoom": dict(scale=2.0 ** (-strength)), "rotate": dict(angle_deg=45.0 * strength), "shear": dict(shear=0.5 * strength)}
    if kind not in maps:
        raise ValueError(f"unknown global warp {kind!r}; one of {', '.join(GLOBAL_WARPS)}")
    return affine_displacement(compose_affine(centre=query, **maps[kind]), h, w, reach, device)


def random_offsets(seed: int, h: int, w: int, k: int, dilation: int, device=None) -> torch.Tensor:
    """Offsets (1, 2K, H, W) at strength 1: each tap its own smooth field of about 2 * dilation
    pixels (the operator scales it by the strength)."""
    g = torch.Generator().manual_seed(int(seed))
    coarse = torch.randn(1, 2 * k * k, 6, 6, generator=g).to(device)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True) * (2.0 * dilation)


def analytic_offsets(kind: str, strength: float, query: tuple[float, float], h: int, w: int, k: int, dilation: int,
                     seed: int = 0, device=None) -> torch.Tensor:
    """Offsets (1, 2K, H, W) of a global warp (:func:`warp_field`) or of a random field."""
    if kind == "random":
        return random_offsets(seed, h, w, k, dilation, device) * strength
    reach = dilation * (k // 2)
    return offsets_from_displacement(*warp_field(kind, strength, query, h, w, reach, device), k, dilation)


def edge_offsets(angle: torch.Tensor, coherence: torch.Tensor, strength: float, k: int, dilation: int) -> torch.Tensor:
    """Offsets (1, 2K, H, W) turning the tap grid so its rows follow the local edge (the tangent,
    across the dominant gradient) and stretching it along the edge by 2**(strength * coherence),
    squeezing across by the inverse; flat regions (low coherence) keep the regular grid.

    Tap t = (tx, ty) moves to t + c * (tx * s * tangent + ty / s * normal - t), linear in t, so
    four (H, W) planes give every tap's displacement."""
    t = tap_vectors(k, dilation, angle.device, angle.dtype)
    tx, ty = t[:, 0, None, None], t[:, 1, None, None]
    cos, sin, c = torch.cos(angle), torch.sin(angle), coherence
    s = 2.0 ** (strength * coherence)
    out, dx, dy = offsets_buffer(t.shape[0], *angle.shape, angle)
    torch.mul(c * (-sin * s - 1), tx, out=dx).addcmul_(c * cos / s, ty)
    torch.mul(c * cos * s, tx, out=dy).addcmul_(c * (sin / s - 1), ty)
    return out


def bilateral_mask(taps: torch.Tensor, image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A v2 modulation from content: each tap weighs exp(-|tap colour - pixel colour|^2 / 2 sigma^2).

    taps (N, C, H, W, K) sampled values, image (N, C, H, W) -> mask (N, K, H, W), a view."""
    diff = (taps - image[..., None]).square_().mean(1)
    return diff.mul_(-0.5 / (sigma * sigma)).exp_().permute(0, 3, 1, 2)


def fit_key(params: Mapping[str, Any]) -> tuple:
    """The settings a fit belongs to; changing any of them shows no fit until the next one."""
    return tuple(params[n] for n in FIT_INPUTS)


def fit_target(image: torch.Tensor, params: Mapping[str, Any], kernel: torch.Tensor) -> torch.Tensor:
    """The fit's target: the kernel on the image turned, scaled and sheared about its centre. (1, C, H, W)."""
    h, w = image.shape[2:]
    content = compose_affine(params["fit_rotate"], params["fit_scale"], params["fit_shear"], centre=frame_centre(w, h))
    theta = theta_from_sampling_map(torch.linalg.inv(content), (w, h), (w, h), False)
    warped = affine_transform(image, theta[None].to(image.device, image.dtype))
    return depthwise_conv(warped, kernel, int(params["dilation"]))


_serials = itertools.count(1)


@dataclass
class LearnedOffsets:
    """What a fit leaves behind: offsets and v2 mask logits on a coarse lattice (corners aligned),
    in fit-resolution pixels, for the settings in ``key`` and the image named ``image_key``.
    ``serial`` names this fit among all others (memo stages key on it and the step count)."""

    key: tuple
    image_key: Hashable
    fit_hw: tuple[int, int]
    offsets: torch.Tensor  # (1, 2K, hc, wc), (dy, dx) in fit pixels
    mask_logits: Optional[torch.Tensor]  # (1, K, hc, wc); the mask is 2 * sigmoid, so 1 at the start
    losses: list[float] = field(default_factory=list)
    serial: int = field(default_factory=lambda: next(_serials))

    def offsets_at(self, h: int, w: int, differentiable: bool = False) -> torch.Tensor:
        """(1, 2K, h, w) offsets in pixels of an (h, w) frame."""
        coarse = self.offsets if differentiable else self.offsets.detach()
        up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
        scale = up.new_tensor([h / self.fit_hw[0], w / self.fit_hw[1]]).repeat(up.shape[1] // 2)
        return up * scale.view(1, -1, 1, 1)

    def mask_at(self, h: int, w: int, differentiable: bool = False) -> Optional[torch.Tensor]:
        """(1, K, h, w) v2 modulation, or None for a v1 fit."""
        if self.mask_logits is None:
            return None
        coarse = self.mask_logits if differentiable else self.mask_logits.detach()
        up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
        return 2.0 * torch.sigmoid(up)
