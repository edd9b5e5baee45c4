"""An interpretable feature bank shared by the channel and attention operators.

Every channel has a name a person can read ("45° diagonal, octave 2", "red", "texture fine"), so channel
weights (squeeze-and-excitation) and attention heads built on them can be explained. Angles are
the orientation of the stripes or edges a channel responds to, counterclockwise from horizontal
as seen on screen (0° = horizontal stripes, 90° = vertical ones).

All maps are non-negative and about [0, 1]: each family (Gabor, colour, texture) is divided by
one robust maximum of the whole family, so channels of a family stay comparable with each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from backends.imaging import luminance, resize_long_side

GABOR_ORIENTATIONS = (0, 45, 90, 135)
GABOR_SCALES = 4  # octaves: wavelength 4, 8, 16, 32 px of the working resolution
GABOR_WAVELENGTH = 4.0
GABOR_SIZE = 11
TEXTURE_WINDOWS = (5, 17)  # box sides in working pixels: fine and coarse local contrast
COLOUR_NAMES = ("red", "green", "blue", "yellow", "light", "dark")
STRIPE_NAMES = {0: "horizontal", 45: "45° diagonal", 90: "vertical", 135: "135° diagonal"}  # stripes on screen
WORK_SIDE = 256  # the bank is computed with the longer image side scaled to at most this


@dataclass(frozen=True)
class FeatureBank:
    """``maps`` (1, C, h, w) at the working resolution; ``scale`` = h / input height. Two label
    sets: ``labels`` in words for bars and tables ("45° diagonal, octave 2", "texture fine") and
    ``short_labels`` of at most 7 characters for mosaic tiles ("45° s2", "fine")."""

    maps: torch.Tensor
    labels: tuple[str, ...]
    short_labels: tuple[str, ...]
    groups: dict[str, tuple[int, ...]]
    scale: float

    @property
    def channels(self) -> int:
        return int(self.maps.shape[1])


def colour_opponents(image: torch.Tensor) -> torch.Tensor:
    """Half-wave rectified opponent channels (N, 6, H, W): red = max(R - G, 0), green =
    max(G - R, 0), blue = max(B - (R + G) / 2, 0), yellow = its opposite, light = luma,
    dark = 1 - luma. Rectified, like ReLU features, so each is an energy a weight can scale."""
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    rg = r - g
    by = b - 0.5 * (r + g)
    lum = luminance(image)
    return torch.cat([rg.clamp_min(0), (-rg).clamp_min(0), by.clamp_min(0), (-by).clamp_min(0), lum, 1 - lum], 1)


def gabor_pair(orientation_deg: float, wavelength: float = GABOR_WAVELENGTH, size: int = GABOR_SIZE) -> np.ndarray:
    """Even and odd Gabor kernels (2, size, size) for stripes at ``orientation_deg`` on screen.

    One octave of bandwidth (sigma = 0.56 wavelength); the even kernel is zero-mean so a flat
    patch gives no response, and the pair has unit L2 norm so orientations compare fairly.
    """
    c = size // 2
    ys, xs = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
    phi = math.radians(orientation_deg)
    # Stripes along phi vary along their normal; with y pointing down the normal is (sin, cos).
    u = xs * math.sin(phi) + ys * math.cos(phi)
    sigma = 0.56 * wavelength
    envelope = np.exp(-(xs**2 + ys**2) / (2 * sigma**2))
    even = envelope * np.cos(2 * math.pi * u / wavelength)
    even -= envelope * (even.sum() / envelope.sum())
    odd = envelope * np.sin(2 * math.pi * u / wavelength)
    pair = np.stack([even, odd])
    return (pair / np.sqrt((pair**2).sum())).astype(np.float32)


def gabor_energy(grey: torch.Tensor, orientations=GABOR_ORIENTATIONS, scales: int = GABOR_SCALES) -> torch.Tensor:
    """Quadrature energy sqrt(even^2 + odd^2) per orientation and octave: (N, O * S, H, W),
    ordered scale-major (all orientations of s1, then s2, ...).

    Octave s runs the same 11x11 pair on the luma halved s - 1 times (a pyramid), so coarse
    scales cost a quarter of the previous one instead of a 4x larger kernel; each result is
    upsampled back to (H, W) bilinearly.
    """
    kernels = np.concatenate([gabor_pair(o) for o in orientations])  # (2 O, k, k)
    weight = torch.from_numpy(kernels)[:, None].to(grey.device, grey.dtype)
    h, w = grey.shape[-2:]
    level = grey
    out = []
    for s in range(scales):
        if s > 0 and min(level.shape[-2:]) >= 2:
            level = F.avg_pool2d(level, 2, ceil_mode=True)
        pad = GABOR_SIZE // 2
        mode = "reflect" if min(level.shape[-2:]) > pad else "replicate"
        resp = F.conv2d(F.pad(level, (pad,) * 4, mode=mode), weight)
        energy = resp.view(resp.shape[0], len(orientations), 2, *resp.shape[-2:]).pow(2).sum(2).sqrt()
        if energy.shape[-2:] != (h, w):
            energy = F.interpolate(energy, size=(h, w), mode="bilinear", align_corners=False)
        out.append(energy)
    return torch.cat(out, 1)


def box_mean(x: torch.Tensor, side: int) -> torch.Tensor:
    """Mean over a side x side window, same size, edges replicated. Separable: two 1-D passes
    cost 2 * side per pixel instead of side^2."""
    pad = side // 2
    n, c = x.shape[:2]
    flat = x.reshape(n * c, 1, *x.shape[-2:])
    row = torch.full((1, 1, 1, side), 1.0 / side, device=x.device, dtype=x.dtype)
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="replicate"), row)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="replicate"), row.transpose(-1, -2))
    return flat.reshape(x.shape)


def texture_energy(grey: torch.Tensor, windows=TEXTURE_WINDOWS) -> torch.Tensor:
    """Local contrast: the standard deviation of luma in each window, (N, len(windows), H, W)."""
    maps = []
    for side in windows:
        mean = box_mean(grey, side)
        var = (box_mean(grey * grey, side) - mean * mean).clamp_min(0)
        maps.append(var.sqrt())
    return torch.cat(maps, 1)


def orientation_histogram(grey: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """Per pixel, the Sobel gradient magnitude split between the two nearest of ``bins`` edge
    orientations over [0°, 180°): (N, bins, H, W). Summed over a patch it is that patch's edge
    orientation histogram (a HOG cell without the normalization)."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=grey.device, dtype=grey.dtype) / 8
    weight = torch.stack([sobel, sobel.T])[:, None]
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), weight)
    gx, gy = g[:, 0:1], -g[:, 1:2]  # y up on screen
    magnitude = torch.sqrt(gx * gx + gy * gy)
    edge = (torch.atan2(gy, gx) + math.pi / 2) % math.pi  # an edge runs across its gradient
    position = edge / (math.pi / bins)
    lower = position.floor()
    frac = position - lower
    lower = lower.long() % bins
    upper = (lower + 1) % bins
    hist = torch.zeros((grey.shape[0], bins) + grey.shape[-2:], device=grey.device, dtype=grey.dtype)
    hist.scatter_add_(1, lower, magnitude * (1 - frac))
    hist.scatter_add_(1, upper, magnitude * frac)
    return hist


def robust_max(x: torch.Tensor, q: float = 0.995, samples: int = 16384) -> torch.Tensor:
    """The q-quantile (q near 1) of ``x`` on a strided sample of about ``samples`` values, as the
    smallest of the sample's top (1 - q) share, at least 1e-6: a display level. topk ran 30x
    faster than torch.quantile's full sort (0.16 against 5 ms on 65,536 values)."""
    flat = x.flatten()
    flat = flat[:: max(1, flat.numel() // samples)]
    return torch.topk(flat, max(1, round((1.0 - q) * flat.numel()))).values[-1].clamp_min(1e-6)


def feature_bank(image: torch.Tensor, side: int = WORK_SIDE) -> FeatureBank:
    """The 24-channel bank of a (1, 3, H, W) image at a working resolution of at most ``side``:
    16 Gabor energies (4 orientations x 4 octaves), 6 colour opponents, 2 texture contrasts.

    Computed at reduced resolution for speed: at 512 x 512 input the bank is 256 x 256, so the
    octaves s1..s4 have wavelengths of about 8, 16, 32 and 64 input pixels.
    """
    small = resize_long_side(image, side)  # area-averaged, never upscaled
    grey = luminance(small)
    gabor = gabor_energy(grey)
    gabor = (gabor / robust_max(gabor)).clamp(0, 1)
    colour = colour_opponents(small)
    texture = texture_energy(grey)
    texture = (texture / robust_max(texture)).clamp(0, 1)
    maps = torch.cat([gabor, colour, texture], 1)
    labels, short = [], []
    for s in range(GABOR_SCALES):
        for o in GABOR_ORIENTATIONS:
            labels.append(f"{STRIPE_NAMES.get(o, f'{o}°')}, octave {s + 1}")
            short.append(f"{o}° s{s + 1}")
    labels += list(COLOUR_NAMES) + ["texture fine", "texture coarse"]
    short += list(COLOUR_NAMES) + ["fine", "coarse"]
    n_g = len(GABOR_ORIENTATIONS) * GABOR_SCALES
    groups = {f"{o}° edges": tuple(s * len(GABOR_ORIENTATIONS) + i for s in range(GABOR_SCALES))
              for i, o in enumerate(GABOR_ORIENTATIONS)}
    groups["fine scale"] = tuple(range(2 * len(GABOR_ORIENTATIONS)))
    groups["coarse scale"] = tuple(range(2 * len(GABOR_ORIENTATIONS), n_g))
    groups["colour"] = tuple(range(n_g, n_g + 4))
    groups["light/dark"] = (n_g + 4, n_g + 5)
    groups["texture"] = (n_g + 6, n_g + 7)
    return FeatureBank(maps, tuple(labels), tuple(short), groups, small.shape[-2] / image.shape[-2])


# -- patch tokens for attention ------------------------------------------------------------------
TOKEN_BINS = 6  # edge orientations 0°, 30°, ..., 150°
TOKEN_LABELS = ("light", "red-green", "yellow-blue") + tuple(f"edge {i * 180 // TOKEN_BINS}°" for i in range(TOKEN_BINS)) + (
    "tex fine", "tex coarse", "x", "y")
TOKEN_GROUPS = {"colour": (0, 3), "orientation": (3, 9), "texture": (9, 11), "position": (11, 13)}
PIXEL_SIDE = 512  # per-pixel token features are computed with the longer side at most this
# Orthonormal opponent axes (luminance, red-green, yellow-blue) with the luminance axis halved, so
# Euclidean colour distance is mostly about hue and saturation and only half about brightness.
COLOUR_BASIS = torch.tensor([[0.5 / math.sqrt(3), 0.5 / math.sqrt(3), 0.5 / math.sqrt(3)],
                             [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                             [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]])


def opponent_to_rgb(colour: torch.Tensor) -> torch.Tensor:
    """(..., 3) opponent colour back to RGB, inverting COLOUR_BASIS."""
    return colour @ torch.linalg.inv(COLOUR_BASIS).T.to(colour)


def pixel_features(image: torch.Tensor, side: int = PIXEL_SIDE) -> tuple[torch.Tensor, float]:
    """Per-pixel features (1, 11, h, w) that patches average into tokens: RGB, a 6-bin edge
    orientation histogram, and log-compressed fine and coarse texture contrast; plus the scale
    h / H of the working resolution (at most ``side`` on the longer side, for speed)."""
    small = resize_long_side(image, side)  # area-averaged, never upscaled
    grey = luminance(small)
    texture = torch.log1p(20 * texture_energy(grey))
    return torch.cat([small, orientation_histogram(grey, TOKEN_BINS), texture], 1), small.shape[-2] / image.shape[-2]


def patch_features(pixels: torch.Tensor, scale: float, patch: int, rows: int, cols: int) -> torch.Tensor:
    """Tokens (rows * cols, 13), raster order, from non-overlapping patch x patch input pixels
    (the ViT patchify; the border that does not fill a whole patch is left out): mean colour on
    the COLOUR_BASIS opponent axes, the
    edge orientation histogram as a direction (its L2-normalized shape, shortened for patches
    whose edges are weaker than the median patch), mean texture, and the patch centre (x, y) as
    fractions of the longer covered side."""
    h = max(1, min(pixels.shape[-2], round(rows * patch * scale)))
    w = max(1, min(pixels.shape[-1], round(cols * patch * scale)))
    pooled = F.adaptive_avg_pool2d(pixels[..., :h, :w], (rows, cols))[0].flatten(1).T  # (N, 11)
    hist = pooled[:, 3:9]
    strength = hist.norm(dim=1, keepdim=True)
    direction = hist / (strength + strength.median().clamp_min(1e-6))
    ys, xs = torch.meshgrid(torch.arange(rows, device=pixels.device, dtype=pixels.dtype),
                            torch.arange(cols, device=pixels.device, dtype=pixels.dtype), indexing="ij")
    span = max(rows, cols)
    position = torch.stack([(xs.flatten() + 0.5) / span, (ys.flatten() + 0.5) / span], 1)
    colour = pooled[:, :3] @ COLOUR_BASIS.T.to(pooled)
    return torch.cat([colour, direction, pooled[:, 9:11], position], 1)


@dataclass(frozen=True)
class Tokens:
    """Standardized token features ``f`` (N, 13) on a rows x cols grid of patch px patches, with
    the per-dim ``mean`` and ``spread`` (each group's RMS distance to its centroid) that undo it."""

    f: torch.Tensor
    mean: torch.Tensor
    spread: torch.Tensor
    rows: int
    cols: int
    patch: int


def make_tokens(pixels: torch.Tensor, scale: float, patch: int, rows: int, cols: int) -> Tokens:
    """Tokens of ``patch_features``, each group centred and divided by its spread, so one
    temperature means the same for colour, edges, texture and position."""
    raw = patch_features(pixels, scale, patch, rows, cols)
    mean = raw.mean(0)
    spread = torch.empty_like(mean)
    for a, b in TOKEN_GROUPS.values():
        spread[a:b] = (raw[:, a:b] - mean[a:b]).pow(2).sum(1).mean().sqrt().clamp_min(1e-6)
    return Tokens((raw - mean) / spread, mean, spread, rows, cols, patch)
