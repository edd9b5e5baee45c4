"""What the efficient-attention operator draws, and its cost measurement.

Token maps are (N,) in raster order on a rows x cols grid; multi-map panels draw them as blocks
on the patched part of the image (``grid_picture``: ``scale`` display pixels per token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch

from backends.features import TOKEN_LABELS, Tokens, opponent_to_rgb
from backends.functional.efficient_attention import (
    METHODS,
    channel_attention,
    full_attention,
    linear_attention,
    multiply_adds,
    weight_bytes,
    window_attention,
)
from backends.imaging import hwc, image_grid, upscale_nearest
from backends.layers import CurveLayer, HeatmapLayer, ImageLayer, MetricsLayer
from backends.timing import elapsed_ms, now

Grid = tuple[int, int, int, int]  # rows, cols, window, clicked token
CURVE_NAMES = {"full": "full softmax", "linear": "linear", "window": "window", "channel": "channel"}
SIZES = tuple(64 * 2**i for i in range(9))  # 64 .. 16,384 tokens
FEATURES = len(TOKEN_LABELS)  # the tokens' dim on the image
COST_DIM = 32  # head dim of the random tokens the cost is measured on
MAX_REPEATS, REPEAT_MS = 3, 200.0  # timed runs per point: at most this many, and no more once this is spent


def method_titles(params: Mapping[str, Any], window: int) -> tuple[str, ...]:
    return ("full softmax", f"linear ({params['feature_map']})", f"window {window}x{window}", "channel")


def _others_max(v: torch.Tensor, index: Optional[int]) -> torch.Tensor:
    """The max of ``v`` (N,) off ``index``, so the clicked token's own weight does not flatten the rest."""
    rest = v if index is None or v.numel() < 2 else torch.cat([v[:index], v[index + 1:]])
    return rest.max().clamp_min(1e-12)


def maps_layer(maps: torch.Tensor, grid: Grid, background: tuple[torch.Tensor, int],
               params: Mapping[str, Any]) -> HeatmapLayer:
    """Each method's weights from the clicked token (4, N), over the image, each scaled to its largest
    weight off the clicked token."""
    rows, cols, window, qi = grid
    picture, scale = background
    scaled = torch.stack([(m / _others_max(m, qi if i < 3 else None)).clamp(max=1.0) for i, m in enumerate(maps)])
    return HeatmapLayer(
        "Attention maps", upscale_nearest(scaled.view(-1, rows, cols), scale), labels=method_titles(params, window),
        background=picture, levels=(0.0, 1.0), opacity=0.9,
        caption=f"where the clicked patch (token {qi}) looks, each map scaled to its largest weight off the patch itself. "
                "Linear: the weights it implies, φ(q)·φ(k) over their sum (never formed when it runs); window: softmax "
                "inside the clicked patch's block, 0 outside; channel attention has no patch-to-patch map: shown is "
                "each patch's share |q̂||k̂| in its channel-mixing matrix, the same for every query")


def difference_layer(out: torch.Tensor, grid: Grid, background: tuple[torch.Tensor, int]) -> HeatmapLayer:
    """|o_method - o_full| per token over the mean |o_full|, for the three efficient methods."""
    rows, cols, window, _ = grid
    picture, scale = background
    diff = relative_difference(out)
    hi = float(diff.max().clamp_min(1e-6))
    return HeatmapLayer("Difference from full", upscale_nearest(diff.view(-1, rows, cols), scale),
                        labels=("linear", f"window {window}x{window}", "channel"), background=picture,
                        levels=(0.0, hi), colormap="viridis", opacity=0.85,
                        caption="how far each method's output is from full attention's at each patch: the length of "
                                "the difference of the two 13-feature outputs over the mean length of full attention's")


def relative_difference(out: torch.Tensor) -> torch.Tensor:
    """(3, N): |o_m - o_full| / mean |o_full| for the methods after full in ``out`` (4, N, D)."""
    scale = out[0].norm(dim=-1).mean().clamp_min(1e-12)
    return (out[1:] - out[:1]).norm(dim=-1) / scale


def outputs_layer(out: torch.Tensor, tokens: Tokens, grid: Grid) -> ImageLayer:
    """Each method's output colour per patch (the colour features undone), side by side."""
    rows, cols, window, _ = grid
    colour = opponent_to_rgb(out[..., :3] * tokens.spread[:3] + tokens.mean[:3]).clamp(0, 1)  # (4, N, 3)
    tiles = colour.view(-1, rows, cols, 3).permute(0, 3, 1, 2)
    scale = max(1, 96 // max(rows, cols))
    return ImageLayer("Outputs", hwc(image_grid(tiles, columns=len(tiles), scale=scale, gap=1)), levels=(0.0, 1.0),
                      column_labels=METHODS,
                      caption="each patch's output colour: the attention-weighted mix of the patches' mean colours "
                              "(the colour part of the 13 output features)")


def channel_layer(weights: torch.Tensor) -> ImageLayer:
    return ImageLayer("Channel attention", weights, levels=(0.0, float(weights.max().clamp_min(1e-6))),
                      row_labels=TOKEN_LABELS, column_labels=TOKEN_LABELS, axis_titles=("read channel", "output channel"),
                      caption="channel attention's 13 x 13 matrix: how much each output channel (row) reads each "
                              "channel (column); rows sum to 1")


def metrics_layer(out: Optional[torch.Tensor], maps: torch.Tensor, grid: Grid, params: Mapping[str, Any],
                  timings: dict[str, float]) -> MetricsLayer:
    rows, cols, window, qi = grid
    n = rows * cols
    values: dict[str, Any] = {
        "tokens": f"{rows} x {cols} = {n}",
        "clicked token": f"{qi} (row {qi // cols}, column {qi % cols})",
        "its own full weight": f"{float(maps[0, qi]):.3f}",
    }
    if out is not None:
        diff = relative_difference(out).mean(1)
        for name, v in zip(("linear", "window", "channel"), diff):
            values[f"{name}: difference from full"] = f"{float(v):.1%}"
    for method in METHODS:
        values[f"{CURVE_NAMES[method]}: weights memory"] = _bytes(weight_bytes(method, n, FEATURES, window))
    return MetricsLayer("Metrics", {**values, **timings},
                        caption="difference: mean over patches of |o - o_full| / mean |o_full|; memory: one head's "
                                "attention weights (or what replaces them) in float32")


def _bytes(b: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.3g} {unit}"
    return f"{int(b)} B"


# -- cost -----------------------------------------------------------------------------------------
@dataclass
class Costs:
    """Measured milliseconds per method at each token count reached, and what was skipped."""

    window: int
    budget: int  # bytes
    ms: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: {m: [] for m in METHODS})
    skipped: dict[str, int] = field(default_factory=dict)  # method -> the first token count skipped


def grid_of(n: int) -> tuple[int, int]:
    """rows x cols = n for a power of two n, rows <= cols <= 2 rows."""
    rows = 2 ** (int(np.log2(n)) // 2)
    return rows, n // rows


def _method(method: str, rows: int, cols: int, window: int) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]:
    if method == "full":
        return lambda q, k, v: full_attention(q, k, v)
    if method == "linear":
        return lambda q, k, v: linear_attention(q, k, v)
    if method == "window":
        return lambda q, k, v: window_attention(q, k, v, rows, cols, window)
    return lambda q, k, v: channel_attention(q, k, v)


def time_ms(run: Callable[..., Any], *args: Any) -> float:
    """The best of up to MAX_REPEATS timed calls ``run(*args)`` after one warm-up, stopping once
    REPEAT_MS is spent."""
    run(*args)
    best, spent = float("inf"), 0.0
    for _ in range(MAX_REPEATS):
        t0 = now()
        run(*args)
        ms = elapsed_ms(t0)
        best, spent = min(best, ms), spent + ms
        if spent >= REPEAT_MS:
            break
    return best


def measure_costs(params: Mapping[str, Any], device: Any) -> Iterator[tuple[Costs, float, str]]:
    """Times every method at every size of SIZES on seeded random tokens (1 head, dim COST_DIM),
    skipping a method from the first size whose weights pass the budget; yields (costs so far,
    progress, message) after each point."""
    window = int(params["window"])
    costs = Costs(window, int(params["memory_budget_mib"]) * 2**20)
    total, done = len(SIZES) * len(METHODS), 0
    gen = torch.Generator().manual_seed(0)
    for n in SIZES:
        rows, cols = grid_of(n)
        q, k, v = (torch.randn(1, 1, n, COST_DIM, generator=gen).to(device) for _ in range(3))
        for method in METHODS:
            done += 1
            need = weight_bytes(method, n, COST_DIM, window)
            if method in costs.skipped or need > costs.budget:
                costs.skipped.setdefault(method, n)
                yield costs, done / total, f"{CURVE_NAMES[method]} at {n:,} tokens skipped: {_bytes(need)} of weights"
                continue
            run = _method(method, rows, cols, window)
            with torch.no_grad():
                ms = time_ms(run, q, k, v)
            costs.ms[method].append((n, ms))
            yield costs, done / total, f"{CURVE_NAMES[method]} at {n:,} tokens: {ms:.3g} ms"


def cost_layer(costs: Optional[Costs], params: Mapping[str, Any]) -> CurveLayer:
    """The measured time against the token count, or before any measurement the estimated multiply-adds."""
    if costs is None:
        window = int(params["window"])
        xs = np.array(SIZES, np.float64)
        series = {CURVE_NAMES[m]: (xs, np.array([multiply_adds(m, n, COST_DIM, window) / 1e6 for n in SIZES], np.float64))
                  for m in METHODS}
        return CurveLayer("Cost vs tokens", series, x_label="tokens", y_label="million multiply-adds (estimated)",
                          log_x=True, log_y=True,
                          caption=f"estimated multiply-adds of one head (dim {COST_DIM}, window {window}x{window}; linear and "
                                  "channel attention lie on one line, 2Nd²); press Measure cost to time them on this "
                                  "machine")
    series = {CURVE_NAMES[m]: (np.array([p[0] for p in pts], np.float64), np.array([p[1] for p in pts], np.float64))
              for m, pts in costs.ms.items() if pts}
    skipped = "; ".join(f"{CURVE_NAMES[m].capitalize() if i == 0 else CURVE_NAMES[m]} skipped from {n:,} tokens ({_bytes(weight_bytes(m, n, COST_DIM, costs.window))} "
                        f"of weights, over the {_bytes(costs.budget)} budget)" for i, (m, n) in enumerate(costs.skipped.items()))
    return CurveLayer("Cost vs tokens", series, x_label="tokens", y_label="time (ms)", log_x=True, log_y=True,
                      caption=f"measured: best of up to {MAX_REPEATS} runs on random tokens (one head, dim {COST_DIM}, "
                              f"window {costs.window}x{costs.window}); full attention forms its N x N weights"
                              + (f". {skipped}" if skipped else ""))
