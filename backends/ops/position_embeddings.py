"""Position embeddings on a token grid laid over the image: for the clicked token, how similar it
is to every other position under sinusoidal (1-D, 2-D), learned-random, relative-bias and rotary
schemes, drawn over the image and as a function of distance. The cores are in
:mod:`backends.functional.position` (and the learned-random table in
:mod:`backends.functional.attention`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from backends.functional.attention import apply_rotary, position_embedding
from backends.functional.position import (
    SIMILARITIES,
    distance_profile,
    distance_table,
    grid_picture,
    relative_bias,
    rope_angles,
    similarity_row,
    sinusoidal_1d,
    sinusoidal_2d,
    wavelengths,
)
from backends.imaging import upscale_nearest
from backends.layers import INPUT, CurveLayer, HeatmapLayer, ImageLayer, MetricsLayer, Result
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

SCHEMES = ("sinusoidal-1d", "sinusoidal-2d", "learned-random", "relative", "rotary-1d", "rotary-2d")
VECTOR_SCHEMES = tuple(s for s in SCHEMES if s != "relative")  # those with a vector per position
FREQUENCY_SCHEMES = ("sinusoidal-1d", "sinusoidal-2d", "rotary-1d", "rotary-2d")
ROTARY = ("rotary-1d", "rotary-2d")
DIMS = ("8", "16", "32", "64", "128", "256")
RELATIVE_TABLES = ("distance decay", "random")
ROTARY_CONTENT = ("shared q = k", "separate q and k")
MOSAIC_LABELS = {"sinusoidal-1d": "sin 1-D", "sinusoidal-2d": "sin 2-D", "learned-random": "learned",
                 "relative": "relative", "rotary-1d": "rotary 1-D", "rotary-2d": "rotary 2-D"}  # short: tiles are narrow
MOSAIC_SIDE = 256  # the all-schemes mosaic: each tile's longer side
TABLE_POSITIONS = 128  # the embedding table panel shows the first this many positions
TABLE_INPUTS = ("patch", "dim", "base_log10", "seed", "relative_table", "slope", "rotary_content")


@dataclass(frozen=True)
class Scheme:
    """One scheme on the grid: ``vectors`` (N, D) whose dot products are the similarity, or for
    rotary the turned queries and keys, or for relative the bias ``table`` (2R - 1, 2C - 1)."""

    name: str
    vectors: Optional[torch.Tensor] = None
    keys: Optional[torch.Tensor] = None
    table: Optional[torch.Tensor] = None

    def row(self, index: int, kind: str, rows: int, cols: int) -> torch.Tensor:
        """Similarity of token ``index`` to every token (N,)."""
        if self.table is not None:
            return relative_bias(self.table, rows, cols, index)
        if self.keys is not None:  # rotary: q_index . k_j, over |q||k| for cosine (turns keep norms)
            row = self.keys @ self.vectors[index]
            return row / (self.vectors[index].norm() * self.keys[0].norm()).clamp_min(1e-12) if kind == "cosine" else row
        return similarity_row(self.vectors, index, kind)


def build_schemes(rows: int, cols: int, params: Mapping[str, Any]) -> dict[str, Scheme]:
    dim, base, seed = int(params["dim"]), 10.0 ** float(params["base_log10"]), int(params["seed"])
    schemes = {
        "sinusoidal-1d": Scheme("sinusoidal-1d", sinusoidal_1d(rows, cols, dim, base)),
        "sinusoidal-2d": Scheme("sinusoidal-2d", sinusoidal_2d(rows, cols, dim, base)),
        "learned-random": Scheme("learned-random", position_embedding("learned-random", rows, cols, seed, dim)),
    }
    if params["relative_table"] == "random":
        table = torch.randn((2 * rows - 1, 2 * cols - 1), generator=torch.Generator().manual_seed(seed))
    else:
        table = distance_table(rows, cols, float(params["slope"]))
    schemes["relative"] = Scheme("relative", table=table)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=gen)
    k = q if params["rotary_content"] == ROTARY_CONTENT[0] else torch.randn(dim, generator=gen)
    n = rows * cols
    for name in ROTARY:
        angles = rope_angles(rows, cols, dim, base, two_d=name.endswith("2d"))
        turned_q = apply_rotary(q.expand(1, 1, n, dim), angles)[0, 0]
        turned_k = turned_q if k is q else apply_rotary(k.expand(1, 1, n, dim), angles)[0, 0]  # shared q = k: once
        schemes[name] = Scheme(name, turned_q, turned_k)
    return schemes


@register
class PositionEmbeddings(Operator):
    spec = OperatorSpec(
        name="position_embeddings",
        title="Position embeddings",
        family="Attention & channels",
        description=(
            "A transformer sees tokens without order; a position embedding tells it where each one is. Click a "
            "patch to see how similar its position is to every other under sinusoidal (1-D over the raster "
            "order, or 2-D), learned (a seeded random table, as before training), relative (a bias looked up "
            "by the offset) and rotary embeddings (q and k turned by angles that grow with position)."
        ),
        params=(
            IntParam("patch", 16, 4, 64, help="Patch side in pixels: one token per patch."),
            ChoiceParam("scheme", "sinusoidal-2d", SCHEMES, help="The embedding drawn large; the mosaic shows all."),
            ChoiceParam("similarity", "cosine", SIMILARITIES, help="Dot product of the two positions' vectors, or their "
                        "cosine (dot over both norms).", enabled_when=(("scheme", VECTOR_SCHEMES),)),
            ChoiceParam("dim", "64", DIMS, help="Embedding dimension: the number of sin/cos (or rotated) pairs is half.",
                        enabled_when=(("scheme", VECTOR_SCHEMES),)),
            FloatParam("base_log10", 4.0, 1.0, 6.0, step=0.1, help="The frequencies' base is 10 to this (4: the usual "
                       "10000). Pair k turns base^(-2k/dim) radians per token: a lower base turns faster.",
                       enabled_when=(("scheme", FREQUENCY_SCHEMES),)),
            SeedParam("seed", 0, help="Seed of the learned-random table, the random relative table and the rotary "
                      "content vectors.", enabled_when=(("scheme", ("learned-random", "relative") + ROTARY),)),
            ChoiceParam("relative_table", "distance decay", RELATIVE_TABLES, help="What the relative bias table holds: "
                        "-slope x offset length (ALiBi's decay, in 2-D), or seeded random values (an untrained table).",
                        enabled_when=(("scheme", ("relative",)),)),
            FloatParam("slope", 0.5, 0.0, 4.0, step=0.05, help="Bias lost per token of distance.",
                       enabled_when=(("scheme", ("relative",)), ("relative_table", ("distance decay",)))),
            ChoiceParam("rotary_content", ROTARY_CONTENT[0], ROTARY_CONTENT, help="The content vectors rotary turns: "
                        "one seeded vector as both q and k (a symmetric score), or two (the peak can move off the query).",
                        enabled_when=(("scheme", ROTARY),)),
        ),
        primary="Similarity",
    )
    memo_capacity = 8

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, H, W = image.shape
        patch = max(1, min(int(params["patch"]), H, W))
        rows, cols = H // patch, W // patch
        if rows * cols < 2:
            raise ParamError(f"a {patch} px patch leaves fewer than 2 tokens on this {W} x {H} image")
        qx, qy = query_point(query, W, H)
        qi = min(qy // patch, rows - 1) * cols + min(qx // patch, cols - 1)
        with timer("tables"):
            schemes = self.memo.stage("tables", params, TABLE_INPUTS, lambda: build_schemes(rows, cols, params),
                                      extra=(rows, cols))
        with timer("similarity"):
            rows_by = {name: s.row(qi, params["similarity"], rows, cols) for name, s in schemes.items()}
        chosen = params["scheme"]
        row = rows_by[chosen]
        extent = (0.0, 0.0, float(cols * patch), float(rows * patch))
        box = ((qi % cols) * patch, (qi // cols) * patch, float(patch), float(patch))
        lo, hi = row_levels(row, qi)
        background = self.memo.stage("mosaic background", params, ("patch",), lambda: grid_picture(image, rows, cols, patch, MOSAIC_SIDE))
        layers = (
            HeatmapLayer("Similarity", row.view(rows, cols), background=INPUT, levels=(lo, hi), colormap="inferno",
                         opacity=0.75, extent=extent, boxes=(box,),
                         caption=f"{chosen}: {measure_words(chosen, params)} between the boxed token and every token, "
                                 f"from its lowest ({lo:.3g}) to its highest off the boxed token ({hi:.3g})"),
            self._mosaic(rows_by, rows, cols, qi, background),
            self._curve(row, rows, cols, qi, params),
            self._frequencies(params, cols),
            table_layer(schemes[chosen], params, rows, cols),
            MetricsLayer("Metrics", {
                "tokens": f"{rows} x {cols} = {rows * cols}",
                "clicked token": f"{qi} (row {qi // cols}, column {qi % cols})",
                "similarity to itself": f"{float(row[qi]) + 0.0:.3g}",  # + 0.0: no "-0"
                **(frequency_metrics(params) if chosen in FREQUENCY_SCHEMES else {}),
                **timer.metrics(),
            }),
        )
        return Result(layers)

    @staticmethod
    def _mosaic(rows_by: dict[str, torch.Tensor], rows: int, cols: int, qi: int, background: tuple[torch.Tensor, int]) -> HeatmapLayer:
        picture, scale = background
        maps = []
        for r in rows_by.values():
            lo, hi = row_levels(r, qi)
            maps.append(((r - lo) / max(hi - lo, 1e-12)).clamp(0, 1))
        maps = torch.stack(maps).view(-1, rows, cols)
        return HeatmapLayer("All schemes", upscale_nearest(maps, scale), labels=tuple(MOSAIC_LABELS[n] for n in rows_by), background=picture,
                            levels=(0.0, 1.0), colormap="inferno", opacity=0.75,
                            caption="every scheme (sin: sinusoidal) from the clicked token, each scaled from its own lowest value (0) to "
                                    "its highest off the clicked token (1); relative shows its bias")

    @staticmethod
    def _curve(row: torch.Tensor, rows: int, cols: int, qi: int, params: Mapping[str, Any]) -> CurveLayer:
        d, mean, lowest, highest = (t.numpy() for t in distance_profile(row.double(), rows, cols, qi))
        measure = measure_name(params["scheme"], params["similarity"])
        return CurveLayer("Similarity vs distance", {"mean": (d, mean), "lowest": (d, lowest), "highest": (d, highest)},
                          x_label="distance (tokens)", y_label=measure,
                          caption=f"{params['scheme']}: the {measure} of the clicked token with the tokens at each whole "
                                  "distance from it (Euclidean, rounded): their mean, and the lowest and highest; "
                                  "apart where the score depends on more than the distance")

    @staticmethod
    def _frequencies(params: Mapping[str, Any], cols: int) -> CurveLayer:
        dim, base = int(params["dim"]), 10.0 ** float(params["base_log10"])
        one = wavelengths(dim, base).numpy()
        two = wavelengths(dim // 2, base).numpy()
        span = max(len(one), 2)
        return CurveLayer("Frequencies", {
            "1-D": (np.arange(len(one), dtype=np.float64), one),
            "2-D (per axis)": (np.arange(len(two), dtype=np.float64), two),
            "grid width": (np.array([0.0, span - 1.0]), np.array([float(cols)] * 2)),
        }, x_label="sin/cos pair", y_label="wavelength (tokens)", log_y=True,
            caption=f"tokens per full turn of each pair, 2π·base^(2k/dim) at base {base:,.0f}: pairs whose wavelength "
                    "is far above the grid width barely change across the image")


def row_levels(row: torch.Tensor, index: int) -> tuple[float, float]:
    """A colour scale for a similarity row (N,): its lowest value to its highest off token
    ``index`` (the clicked token's own, usually the peak, would flatten the rest)."""
    rest = torch.cat([row[:index], row[index + 1 :]]) if row.numel() > 1 else row
    lo, hi = float(row.min()), float(rest.max())
    return lo, max(hi, lo + 1e-6 * max(1.0, abs(lo)))


def measure_name(scheme: str, similarity: str) -> str:
    if scheme == "relative":
        return "relative bias"
    return "cosine" if similarity == "cosine" else "dot product"


def measure_words(scheme: str, params: Mapping[str, Any]) -> str:
    if scheme == "relative":
        return "the bias looked up by the offset"
    if scheme in ROTARY:
        return "the score q·k of the turned content vectors" + (" (over |q||k|)" if params["similarity"] == "cosine" else "")
    return "cosine of the embeddings" if params["similarity"] == "cosine" else "dot product of the embeddings"


def frequency_metrics(params: Mapping[str, Any]) -> dict[str, str]:
    w = wavelengths(int(params["dim"]), 10.0 ** float(params["base_log10"]))
    return {"base": f"{10.0 ** float(params['base_log10']):,.0f}",
            "wavelengths (tokens)": f"{float(w[0]):.3g} to {float(w[-1]):.3g}"}


def table_layer(scheme: Scheme, params: Mapping[str, Any], rows: int, cols: int) -> ImageLayer:
    """The chosen scheme's table: embedding dims (rows) by position (columns), or the relative
    bias by offset."""
    if scheme.table is not None:
        t = scheme.table
        hi = float(t.abs().max().clamp_min(1e-12))
        return ImageLayer("Embedding table", t, levels=(-hi, hi), colormap="CET-D1",
                          axis_titles=("offset dx (query - key)", "offset dy"),
                          caption=f"the {2 * rows - 1} x {2 * cols - 1} bias table: one entry per offset, the centre "
                                  "is offset 0; a query reads it shifted to its own place")
    n = min(TABLE_POSITIONS, rows * cols)
    if scheme.keys is not None:
        angles = rope_angles(rows, cols, int(params["dim"]), 10.0 ** float(params["base_log10"]),
                             two_d=scheme.name.endswith("2d"))[:n]
        return ImageLayer("Embedding table", angles.cos().T, levels=(-1.0, 1.0), colormap="CET-D1",
                          axis_titles=("position (raster order)", "rotated pair"),
                          caption=f"cos of each pair's rotation angle for the first {n} positions: fast pairs at the "
                                  "top, slow ones below")
    v = scheme.vectors[:n].T
    hi = float(v.abs().max().clamp_min(1e-12))
    return ImageLayer("Embedding table", v, levels=(-hi, hi), colormap="CET-D1",
                      axis_titles=("position (raster order)", "dimension"),
                      caption=f"the {scheme.name} embedding of the first {n} positions, one column each")
