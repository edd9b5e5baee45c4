"""Learning to zoom (Recasens et al. 2018): a saliency map (edge energy, a clicked point with a
spread, or uniform) turns into a non-uniform sampling grid, each output pixel reading the saliency-
and Gaussian-weighted average of the input's coordinates; the output magnifies salient regions.
The same grid as boundary-aware downsampling (denser near edges) beside a uniform one, each
upsampled back and compared with the input. The cores are :mod:`backends.functional.saliency_sampling`."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from backends.features import robust_max
from backends.functional.coords import points_to_normalized
from backends.functional.saliency_sampling import (
    edge_energy,
    invert_sampling_grid,
    magnification,
    saliency_sampling_grid,
    to_normalized,
    uniform_grid,
)
from backends.imaging import hwc, image_grid, long_side_size, luminance, resize, resize_long_side
from backends.layers import INPUT, BarsLayer, HeatmapLayer, ImageLayer, MetricsLayer, Result, SamplingGridLayer
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

SOURCES = ("edges", "point", "uniform")
CELLS = 48  # saliency cells on the long side (the paper's saliency maps are about 31 x 31)
EDGE_SIDE = 256  # the edge energy is measured at this long side, then averaged into cells
EDGE_BLUR = 1.5  # px at EDGE_SIDE
GRID_LINES = 25  # lines per side of the sampling grid drawn
INVERSE_SIDE = 96  # the downsampling's inverse map is solved on this lattice, then resized
NEAR_EDGE_SHARE = 0.2  # "near edges": the pixels of the strongest 20% edge energy
LEVELS = 255.0
SALIENCY_INPUTS = ("source", "strength", "spread")
GRID_INPUTS = SALIENCY_INPUTS + ("kernel_width", "extend_border", "output_size")
DOWN_INPUTS = ("strength", "extend_border", "downsample")
NAMES = ("uniform", "denser near edges")
DOWN_LAYERS = ("Downsampled", "Reconstruction error", "Error by region")


@register
class SaliencySampling(Operator):
    spec = OperatorSpec(
        name="saliency_sampling",
        title="Saliency sampling (learning to zoom)",
        family="Spatial transforms",
        description=(
            "Each output pixel reads the saliency- and Gaussian-weighted average of the input's coordinates, "
            "so salient regions take more of the output (Recasens et al. 2018). Saliency from edges, from a "
            "clicked point, or uniform (a plain resize); and the same grid as downsampling denser near edges."
        ),
        params=(
            ChoiceParam("source", "point", SOURCES, help="Saliency from the edge energy, a disc around the clicked "
                                                         "point, or uniform (the plain resize)."),
            FloatParam("strength", 20.0, 0.0, 40.0, step=0.5, help="Saliency = 1 + strength x (the map scaled to a "
                       "maximum of 1): how much more a salient cell pulls than a plain one.",
                       enabled_when=(("source", ("edges", "point")),)),
            FloatParam("spread", 0.1, 0.02, 0.5, help="Standard deviation of the disc around the clicked point, "
                       "as a share of the long side.", enabled_when=(("source", ("point",)),)),
            FloatParam("kernel_width", 0.1, 0.03, 0.3, help="Standard deviation of the Gaussian k(x, x') as a share "
                       "of the long side: how far a salient cell pulls samples."),
            BoolParam("extend_border", True, help="Continue the saliency past the frame so a uniform saliency gives "
                      "the plain resize up to the border; off, the one-sided sums pull border samples inward."),
            IntParam("output_size", 192, 32, 512, step=16, help="Long side of the warped output, px."),
            IntParam("downsample", 8, 2, 16, help="Factor of the downsampling comparison: a grid denser near edges (the "
                     "edge saliency at the small size, with this strength) against a uniform one."),
        ),
        primary="Warped output",
        tabs=(("zoom", ("Sampling grid", "Saliency", "Magnification")),
              ("downsampling", ("Downsampled", "Reconstruction error", "Error by region")),
              ("numbers", ("Metrics",))),
    )
    memo_capacity = 12
    edit = "warp"

    def full_resolution(self, live: torch.Tensor, full: torch.Tensor, params: Mapping[str, Any], query: Query) -> torch.Tensor:
        """A global warp, not tileable: the live grid upscaled (output size and positions by the
        original's scale), then one ``grid_sample`` of the full image, as the live warp samples."""
        (h, w), (big_h, big_w) = live.shape[2:], full.shape[2:]
        grid = _upscaled_grid(self._grid.to(full), big_h / h, big_w / w)
        return F.grid_sample(full, to_normalized(grid, (big_h, big_w)), mode="bilinear", padding_mode="border",
                             align_corners=False)

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, h, w = image.shape
        q = query_point(query, w, h)
        cells = long_side_size(h, w, CELLS)
        long = max(h, w)
        sigma = float(params["kernel_width"]) * long
        with timer("saliency"):
            fine = self.memo.stage("fine edges", params, (), lambda: edge_energy(resize_long_side(luminance(image),
                                                                                                 EDGE_SIDE), EDGE_BLUR))
            edges = self.memo.stage("edges", params, (), lambda: _edge_cells(fine, cells))
            point = params["source"] == "point"
            saliency = self.memo.stage("saliency", params, SALIENCY_INPUTS,
                                       lambda: _saliency(params, edges, cells, (h, w), q), extra=q if point else ())
        out_size = long_side_size(h, w, int(params["output_size"]))
        with timer("grid"):
            grid = self.memo.stage("grid", params, GRID_INPUTS, lambda: saliency_sampling_grid(
                saliency, (h, w), out_size, sigma, params["extend_border"]), extra=q if point else ())
        with timer("warp"):
            warped = self.memo.stage("warp", params, GRID_INPUTS, lambda: F.grid_sample(
                image, to_normalized(grid, (h, w)), mode="bilinear", padding_mode="border", align_corners=False)[0],
                extra=q if point else ())
            zoom = self.memo.stage("zoom", params, GRID_INPUTS, lambda: magnification(grid, (h, w))[0],
                                   extra=q if point else ())
        fast = layers(image, params, saliency, grid, warped, zoom, q, sigma)
        self._grid = grid  # for full_resolution: the grid of the last run

        def with_downsampling() -> Result:
            with timer("downsampling"):
                down = self.memo.stage("down", params, DOWN_INPUTS, lambda: _downsampling(image, fine, params))
            more, rows = downsampling_layers(down, params)
            return Result(fast[:-1] + more + (MetricsLayer("Metrics", {**fast[-1].values, **rows, **timer.metrics()}),))

        if self.memo.stage_key("down", params, DOWN_INPUTS) in self.memo:
            return with_downsampling()
        # A strength or kernel change: the zoom now, the downsampling (two grids inverted and two
        # full-size reconstructions, 25-30 ms at 512 px on one core) once the slider rests.
        metrics = MetricsLayer("Metrics", {**fast[-1].values, **timer.metrics()})
        return Result(fast[:-1] + (metrics,), settle=with_downsampling, pending=DOWN_LAYERS)


def _edge_cells(fine: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) the edge energy averaged into the saliency cells, scaled to a maximum of 1."""
    e = resize(fine, cells)
    return e / e.max().clamp_min(1e-12)


def _saliency(params: Mapping[str, Any], edges: torch.Tensor, cells: tuple[int, int], frame: tuple[int, int],
              q: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) the saliency, 1 + strength x a map in [0, 1]."""
    if params["source"] == "uniform":
        return torch.ones_like(edges)
    if params["source"] == "edges":
        return 1 + float(params["strength"]) * edges
    (ch, cw), (fh, fw) = cells, frame
    ys = (torch.arange(ch, dtype=edges.dtype, device=edges.device) + 0.5) * (fh / ch) - 0.5
    xs = (torch.arange(cw, dtype=edges.dtype, device=edges.device) + 0.5) * (fw / cw) - 0.5
    s = float(params["spread"]) * max(fh, fw)
    disc = torch.exp(-((ys[:, None] - q[1]) ** 2 + (xs[None, :] - q[0]) ** 2) / (2 * s * s))
    return (1 + float(params["strength"]) * disc)[None, None]


def _downsampling(image: torch.Tensor, fine: torch.Tensor, params: Mapping[str, Any]) -> dict[str, Any]:
    """Uniform and edge-saliency downsampling by ``downsample``, each upsampled back through its
    grid's inverse; the reconstructions' errors over the whole image and near edges. The edge
    saliency is taken on the small image's own pixels and pulls over one of them (sigma = the
    factor, in input px): boundary-aware downsampling is local (wider kernels, as the zoom uses,
    leave whole bands of the input unsampled)."""
    _, _, h, w = image.shape
    f = int(params["downsample"])
    low_size = (max(2, round(h / f)), max(2, round(w / f)))
    edges = resize(fine, low_size)
    saliency = 1 + float(params["strength"]) * edges / edges.max().clamp_min(1e-12)
    sigma = max(h / low_size[0], w / low_size[1])
    grids = (uniform_grid((h, w), low_size, image),
             saliency_sampling_grid(saliency, (h, w), low_size, sigma, params["extend_border"]))
    lattice = uniform_grid((h, w), long_side_size(h, w, INVERSE_SIDE), image)
    lows, errors = [], []
    for grid in grids:
        low = F.grid_sample(image, to_normalized(grid, (h, w)), mode="bilinear", padding_mode="border", align_corners=False)
        back = invert_sampling_grid(grid, lattice.reshape(1, -1, 2)).view(lattice.shape)
        back = F.interpolate(back.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        rec = F.grid_sample(low, points_to_normalized(back, low_size[1], low_size[0], align_corners=False),
                            mode="bilinear", padding_mode="border", align_corners=False)
        lows.append(low[0])
        errors.append((rec - image).abs().mean(1)[0])
    strong = resize(fine, (h, w))[0, 0]
    near = strong >= robust_max(strong, 1 - NEAR_EDGE_SHARE, samples=65536)
    rms = [float(e.pow(2).mean().sqrt()) * LEVELS for e in errors]
    rms_near = [float(e[near].pow(2).mean().sqrt()) * LEVELS for e in errors]
    scale = max(1, round(min(96 / max(low_size), 4)))
    tiles = hwc(image_grid(torch.stack(lows), columns=2, gap=max(1, max(low_size) // 16), scale=scale))
    return {"tiles": tiles, "errors": torch.stack(errors), "rms": rms, "rms_near": rms_near, "low_size": low_size,
            "scale": scale}


def _upscaled_grid(grid: torch.Tensor, scale_y: float, scale_x: float) -> torch.Tensor:
    """A (1, h, w, 2) grid of pixel positions (centres at i) for an image ``scale`` times larger:
    bilinear between the nodes, positions mapped from one frame's pixel centres to the other's."""
    big = F.interpolate(grid.permute(0, 3, 1, 2), size=(round(grid.shape[1] * scale_y), round(grid.shape[2] * scale_x)),
                        mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    scale = torch.tensor([scale_x, scale_y], dtype=big.dtype, device=big.device)
    return (big + 0.5) * scale - 0.5


def layers(image: torch.Tensor, params: Mapping[str, Any], saliency: torch.Tensor, grid: torch.Tensor,
           warped: torch.Tensor, zoom: torch.Tensor, q: tuple[int, int], sigma: float) -> tuple:
    """The zoom's panels, then its metrics (timings are added by the caller)."""
    _, _, h, w = image.shape
    oh, ow = grid.shape[1:3]
    rows = torch.linspace(0, oh - 1, min(oh, GRID_LINES)).round().long()
    cols = torch.linspace(0, ow - 1, min(ow, GRID_LINES)).round().long()
    step = (ow - 1) / max(len(cols) - 1, 1)
    about = {"edges": "edge energy", "point": f"a disc around ({q[0]}, {q[1]})", "uniform": "uniform"}[params["source"]]
    border = ("the saliency continues past the frame" if params["extend_border"]
              else "no saliency past the frame: border samples are pulled inward")
    top, low = float(zoom.max()), float(zoom.min())
    return (
        ImageLayer("Warped output", hwc(warped), levels=(0.0, 1.0),
                   caption=f"the input read through the saliency's grid at {ow} x {oh} px (saliency: {about}); "
                           "salient regions take more of the output"),
        SamplingGridLayer("Sampling grid", grid[0][rows][:, cols], background=INPUT,
                          caption=f"where every {step:.0f}th output pixel reads the input: lines crowd where the "
                                  f"saliency is high; {border}"),
        HeatmapLayer("Saliency", saliency[0, 0], background=INPUT, extent=(0.0, 0.0, float(w), float(h)),
                     levels=(0.0, float(saliency.max())), opacity=0.7,
                     caption=f"saliency ({about}) on a {saliency.shape[-1]} x {saliency.shape[-2]} cell grid, "
                             f"1 = plain; the kernel's sigma is {sigma:.0f} px"),
        ImageLayer("Magnification", zoom, levels=(0.0, max(top, 1.0)), colormap="magma",
                   caption=f"on the output's frame: how many times larger than a plain resize each part shows the "
                           f"input (inverse Jacobian determinant, relative), from {low:.2f} to {top:.2f}"),
        MetricsLayer("Metrics", {
            "output size": f"{ow} x {oh}",
            "saliency cells": f"{saliency.shape[-1]} x {saliency.shape[-2]}",
            "kernel sigma px": round(sigma, 1),
            "largest magnification": round(top, 3),
            "smallest magnification": round(low, 3),
        }),
    )


def downsampling_layers(down: dict[str, Any], params: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
    f = int(params["downsample"])
    lh, lw = down["low_size"]
    err_hi = float(robust_max(down["errors"], 0.99))
    winner = NAMES[int(down["rms_near"][1] < down["rms_near"][0])]
    return (
        ImageLayer("Downsampled", down["tiles"], levels=(0.0, 1.0), column_labels=NAMES,
                   caption=f"{lw} x {lh} px (1/{f}), drawn x{down['scale']}: left a uniform grid, right a grid "
                           f"denser near edges (the edge saliency at this size, pulling over one of its pixels, "
                           f"strength {params['strength']:g})"),
        HeatmapLayer("Reconstruction error", down["errors"], labels=NAMES, levels=(0.0, err_hi), colormap="inferno",
                     caption="|input - reconstruction| per pixel, each downsampled image upsampled back through its "
                             "grid's inverse (bilinear)"),
        BarsLayer("Error by region", NAMES, {"whole image": down["rms"], "near edges": down["rms_near"]},
                  value_label="RMS error (levels of 255)",
                  caption=f"reconstruction error of each 1/{f} downsampling; near edges: the {NEAR_EDGE_SHARE:.0%} "
                          f"of pixels with the strongest edges, where '{winner}' does better"),
    ), {
        "RMS error uniform": round(down["rms"][0], 2),
        "RMS error denser near edges": round(down["rms"][1], 2),
        "near-edge RMS uniform": round(down["rms_near"][0], 2),
        "near-edge RMS denser near edges": round(down["rms_near"][1], 2),
    }
