"""Efficient attention beside full softmax attention on the same image-patch tokens: linear
attention (a kernel feature map in place of exp), local window attention (non-overlapping
blocks of the token grid) and channel attention (channels attend to channels, as in XCiT and
lightweight ViTs). For the clicked patch: each method's weights, how far its output is from full
attention's, and a measured cost against the token count (the Measure job). The cores are in
:mod:`backends.functional.efficient_attention`; the panels and the cost measurement in
``_efficient_attention_panels``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import torch
import torch.nn.functional as F

from backends.features import make_tokens, pixel_features
from backends.functional.efficient_attention import (
    FEATURE_MAPS,
    channel_attention,
    channel_token_shares,
    full_weights_row,
    linear_attention,
    linear_weights,
    window_attention,
    window_weights_row,
)
from backends.functional.position import grid_picture
from backends.jobs import FrameThrottle
from backends.layers import Result
from backends.layers import complete as completed
from backends.ops._efficient_attention_panels import (
    Costs,
    channel_layer,
    cost_layer,
    difference_layer,
    maps_layer,
    measure_costs,
    metrics_layer,
    outputs_layer,
)
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

OUTPUT_INPUTS = ("patch", "temperature", "window", "feature_map", "channel_temperature")
DIMMED = 0.6
SETTLE_TOKENS = 1024  # above this many tokens, full attention's output waits for the slider to rest
SLOW_LAYERS = ("Difference from full", "Outputs")


@dataclass(frozen=True)
class Outputs:
    """Every method's output (4, N, 13) in METHODS order and the channel attention matrix (13, 13)."""

    out: torch.Tensor
    channel: torch.Tensor


def gaussian_qk(f: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys (1, 1, N, D + 1) whose dot product is (2 f_i.f_j - |f_j|^2) / T: the
    Gaussian kernel -|f_i - f_j|^2 / T up to the per-query constant |f_i|^2, which softmax
    ignores, so a patch attends most to the patches whose features are closest to its own."""
    c = 1.0 / math.sqrt(temperature)
    q = torch.cat([2 * f, -f.new_ones(f.shape[0], 1)], 1) * c
    k = torch.cat([f, f.pow(2).sum(1, keepdim=True)], 1) * c
    return q[None, None], k[None, None]


def dimmed(picture: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, int]:
    """The picture under the multi-map panels at DIMMED brightness, so sparse weights stand out."""
    return picture[0] * DIMMED, picture[1]


@register
class EfficientAttention(Operator):
    spec = OperatorSpec(
        name="efficient_attention",
        title="Efficient attention",
        family="Attention & channels",
        description=(
            "Full attention compares every patch with every other: N² weights. Linear attention swaps exp(q·k) "
            "for a kernel φ(q)·φ(k) and sums the keys once; window attention lets a patch look only inside its "
            "block; channel attention mixes feature channels instead of patches. Click a patch to compare where "
            "each looks and how far its output is from full attention's; Measure times them from 64 to 16,384 "
            "tokens."
        ),
        params=(
            IntParam("patch", 16, 4, 64, help="Patch side in pixels: one token per patch (13 features: colour, "
                     "edge orientation, texture, position)."),
            FloatParam("temperature", 2.0, 0.05, 8.0, step=0.05, help="Token attention scores two patches by "
                       "-|f_i - f_j|² / T, the distance between their 13 features (lower: sharper)."),
            IntParam("window", 8, 1, 64, help="Window side in tokens for window attention: blocks of window x window "
                     "patches."),
            ChoiceParam("feature_map", "elu+1", FEATURE_MAPS, help="Linear attention's kernel features φ: elu(x) + 1 "
                        "(Katharopoulos et al.) or relu(x)."),
            FloatParam("channel_temperature", 0.3, 0.01, 2.0, step=0.01, help="Channel attention's temperature on "
                       "the cosine between channels (lower: each channel reads fewer others)."),
            IntParam("memory_budget_mib", 512, 16, 4096, step=16, help="Measure skips a method at a token count "
                     "whose attention weights would pass this (full attention: N² x 4 bytes)."),
        ),
        actions=(Action("measure", "Measure cost", help="Time each method on random tokens (head dim 32) from 64 "
                        "to 16,384 tokens; sizes over the memory budget are skipped."),),
        primary="Attention maps",
    )
    memo_capacity = 8

    def __init__(self) -> None:
        super().__init__()
        self._costs: Optional[Costs] = None

    def reset_state(self) -> None:
        super().reset_state()
        self._costs = None

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, H, W = image.shape
        patch = max(1, min(int(params["patch"]), H, W))
        rows, cols = H // patch, W // patch
        n = rows * cols
        if n < 2:
            raise ParamError(f"a {patch} px patch leaves fewer than 2 tokens on this {W} x {H} image")
        qx, qy = query_point(query, W, H)
        qi = min(qy // patch, rows - 1) * cols + min(qx // patch, cols - 1)
        window = min(int(params["window"]), max(rows, cols))
        with timer("tokens"):
            pixels, scale = self.memo.stage("pixels", params, (), lambda: pixel_features(image))
            tokens = self.memo.stage("tokens", params, ("patch",), lambda: make_tokens(pixels, scale, patch, rows, cols),
                                     extra=(rows, cols))
            q, k = gaussian_qk(tokens.f, float(params["temperature"]))
        with timer("query rows"):
            maps = torch.stack([
                full_weights_row(q, k, qi, 1.0)[0, 0],
                linear_weights(q, k, params["feature_map"], qi)[0, 0],
                window_weights_row(q, k, rows, cols, window, qi, 1.0)[0, 0],
                channel_token_shares(tokens.f[None, None], tokens.f[None, None])[0, 0],
            ])
        background = self.memo.stage("background", params, ("patch",), lambda: dimmed(grid_picture(image, rows, cols, patch)))
        grid = (rows, cols, window, qi)

        def outputs() -> Outputs:
            return self._outputs(tokens.f, q, k, params, rows, cols, window)

        key = self.memo.stage_key("outputs", params, OUTPUT_INPUTS, (rows, cols))
        fast = (maps_layer(maps, grid, background, params),)
        costs = cost_layer(self._costs, params)

        def complete() -> Result:
            settle_timer = StageTimer()
            with settle_timer("outputs"):
                got = self.memo.get(key, outputs)
            slow = (difference_layer(got.out, grid, background), outputs_layer(got.out, tokens, grid))
            return Result(fast + slow + (channel_layer(got.channel), costs,
                                         metrics_layer(got.out, maps, grid, params, {**timer.metrics(),
                                                                                      **settle_timer.metrics()})))

        if key in self.memo or n <= SETTLE_TOKENS:
            return complete()
        return Result(fast + (costs, metrics_layer(None, maps, grid, params, timer.metrics())), settle=complete,
                      pending=SLOW_LAYERS + ("Channel attention",))

    @staticmethod
    def _outputs(f: torch.Tensor, q: torch.Tensor, k: torch.Tensor, params: Mapping[str, Any], rows: int, cols: int,
                 window: int) -> Outputs:
        v = f[None, None]
        full = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # full attention, without its N x N weights
        linear = linear_attention(q, k, v, params["feature_map"])
        local = window_attention(q, k, v, rows, cols, window, 1.0)
        channel, weights = channel_attention(v, v, v, float(params["channel_temperature"]))
        out = torch.stack([full, linear, local, channel])[:, 0, 0]
        return Outputs(out, weights[0, 0])

    def job_measure(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Times each method at each token count, yielding the curve as it grows; keeps it for later frames."""
        throttle = FrameThrottle()
        for costs, progress, message in measure_costs(params, image.device):
            self._costs = costs
            frame = throttle.frame(lambda: completed(self.run(image, params, query)), last_step=progress >= 1.0)
            yield JobUpdate(progress, message, frame)
