"""Multi-head self-attention over image patches with heads that mean something untrained.

The attention arithmetic is ``backends.functional.attention``; the interpretable heads and the
stack that rollout follows are in ``_attention_heads`` (whose docstring derives them), and the
panels in ``_attention_panels``. A temperature or position change draws the clicked query's rows
at once and brings the panels that need every N x N matrix when the slider rests (``settle``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from backends.features import Tokens, make_tokens, pixel_features
from backends.functional.attention import POSITION_KINDS, attention_weights, rollout_row
from backends.layers import MetricsLayer, Result
from backends.memo import Memo
from backends.ops._attention_heads import (
    EMBED_DIM,
    HEAD_DIM,
    HEADS,
    Stack,
    analysis_patch,
    embed_tokens,
    interpretable_heads,
    run_stack,
    token_index,
    token_positions,
    token_rotary,
)
from backends.ops._attention_panels import (
    HEAD_TITLES,
    STACK_LAYERS,
    Backgrounds,
    coarser_note,
    query_layers,
    stack_layers,
)
from backends.params import ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

__all__ = ["SelfAttention", "HEADS", "embed_tokens", "interpretable_heads", "run_stack",
           "token_rotary"]  # the operator, and the model its tests check

TEMPERATURES = ("temperature",) + tuple(f"temp_{h}" for h in HEADS)
HEAD_INPUTS = TEMPERATURES + ("position", "pe_strength")  # the Q/K/V/O weights
STACK_INPUTS = HEAD_INPUTS + ("seed", "depth")  # the full matrices of every layer


@register
class SelfAttention(Operator):
    spec = OperatorSpec(
        name="self_attention",
        title="Multi-head self-attention",
        family="Attention & channels",
        description=(
            "Image patches become tokens; four heads built from interpretable features (no training) "
            "attend by colour similarity, edge orientation, texture and position. Click a patch to see "
            "where each head looks from it; the entropy map shows which queries look everywhere, and "
            "rollout follows attention through a stack of layers with skip connections."
        ),
        params=(
            IntParam("patch", 16, 4, 32, help="Patch side in pixels: one token per patch."),
            ChoiceParam("position", "none", POSITION_KINDS, help="Position embedding added to every head's score."),
            FloatParam("pe_strength", 2.0, 0.0, 8.0, step=0.1, help="Position embedding strength: the logit bonus "
                       "at zero offset (additive kinds), or the rotary angle scale.",
                       enabled_when=(("position", tuple(k for k in POSITION_KINDS if k != "none")),)),
            SeedParam("seed", 0, help="Seed of the learned-random position table.",
                      enabled_when=(("position", ("learned-random",)),)),
            FloatParam("temperature", 1.0, 0.05, 5.0, step=0.05, help="Global temperature: multiplies every "
                       "head's own (lower: sharper)."),
            FloatParam("temp_colour", 0.1, 0.01, 5.0, help="Temperature of the colour head (lower: sharper)."),
            FloatParam("temp_orientation", 0.1, 0.01, 5.0, help="Temperature of the edge orientation head."),
            FloatParam("temp_texture", 0.05, 0.01, 5.0, help="Temperature of the texture head."),
            FloatParam("temp_position", 0.05, 0.01, 5.0, help="Temperature of the position head."),
            IntParam("depth", 2, 1, 4, help="Layers in the stack that rollout follows."),
        ),
        primary="Head attention",
    )
    memo_capacity = 8  # per image: pixel features, tokens per patch, heads, backgrounds

    def __init__(self) -> None:
        super().__init__()
        self._stacks = Memo(capacity=3)  # each holds depth x (N, N) matrices: 4 MB apiece at 1024 tokens

    def reset_state(self) -> None:
        super().reset_state()
        self._stacks.clear()

    def _tokens(self, image: torch.Tensor, params: Mapping[str, Any], patch: int) -> Tokens:
        _, _, h, w = image.shape
        pixels, scale = self.memo.stage("pixels", params, (), lambda: pixel_features(image))
        return self.memo.stage("tokens", params, (), lambda: make_tokens(pixels, scale, patch, h // patch, w // patch),
                               extra=patch)

    def _heads(self, params: Mapping[str, Any], temps: tuple[float, ...], device: Any) -> tuple[torch.Tensor, ...]:
        """The Q/K/V/O weights; rotary turns q and k instead of adding to the scores."""
        strength = float(params["pe_strength"]) if params["position"] != "rotary" else 0.0
        return self.memo.stage("heads", params, HEAD_INPUTS,
                               lambda: tuple(t.to(device) for t in interpretable_heads(temps, strength)))

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, H, W = image.shape
        self._stacks.bind(self.image_key)
        patch = max(1, min(int(params["patch"]), H, W))
        qx, qy = query_point(query, W, H)
        temps = tuple(float(params["temperature"]) * float(params[f"temp_{h}"]) for h in HEADS)
        with timer("query row"):
            tokens = self._tokens(image, params, patch)
            heads = self._heads(params, temps, image.device)
            pe, rot = token_positions(params["position"], float(params["pe_strength"]), params["seed"], tokens,
                                      image.device)
            qi = token_index(qx, qy, tokens)
            x = embed_tokens(tokens.f, pe)[None]
            row = attention_weights(x, heads[0], heads[1], len(HEADS), qi, rot)[0]  # (heads, N)

        bg = self.memo.stage("backgrounds", params, (), lambda: Backgrounds.of(image))
        fast = query_layers(bg, tokens, row, pe, rot, qi, params)
        metrics = {
            "tokens": f"{tokens.rows} x {tokens.cols} = {tokens.rows * tokens.cols}",
            "patch": patch,
            "heads x head dim": f"{len(HEADS)} x {HEAD_DIM}",
            "embedding dim": EMBED_DIM,
            "Q/K/V/O weights": sum(t.numel() for t in heads),
            "query token": f"{qi} (row {qi // tokens.cols}, col {qi % tokens.cols})",
            "own weight (" + " / ".join(HEAD_TITLES) + ")": " / ".join(f"{float(v):.2f}" for v in row[:, qi]),
            **timer.metrics(),
        }

        pa = analysis_patch(H, W, patch)
        # A key of its own rather than memo.stage: the frame asks whether the stack is there first.
        stack_key = ("stack", tuple(params[n] for n in STACK_INPUTS), pa)

        def with_stack() -> Result:
            settle_timer = StageTimer()
            with settle_timer("stack + rollout"):
                a_tokens = self._tokens(image, params, pa)
                stack = self._stacks.get(stack_key, lambda: self._stack(a_tokens, heads, params, image.device))
                qa = token_index(qx, qy, a_tokens)
                rollout = rollout_row(stack.means, qa)
                note = coarser_note(a_tokens, patch, tokens.rows * tokens.cols)
                layers = stack_layers(bg, a_tokens, stack.entropy, stack.mixed, len(stack.means), rollout, qa, note)
            return Result(fast[:1] + layers[:2] + fast[1:] + layers[2:] + (MetricsLayer("Metrics", {
                **metrics,
                "full-matrix grid": f"patch {pa}: {a_tokens.rows * a_tokens.cols} tokens",
                **{f"entropy {h} at query": round(float(stack.entropy[i, qa]), 3) for i, h in enumerate(HEAD_TITLES)},
                **settle_timer.metrics(),
            }),))

        if stack_key in self._stacks:  # a click or a display change: the N x N stack is already there
            return with_stack()
        # A temperature or position change: the clicked query's rows first, the full matrices
        # once the slider rests (they cost 1-2 frames at 1024 tokens on a CPU).
        metrics["run ms"] = round(timer.total_ms, 2)
        return Result(fast + (MetricsLayer("Metrics", metrics),), settle=with_stack, pending=STACK_LAYERS)

    @staticmethod
    def _stack(tokens: Tokens, heads: tuple[torch.Tensor, ...], params: Mapping[str, Any], device: Any) -> Stack:
        pe, rot = token_positions(params["position"], float(params["pe_strength"]), params["seed"], tokens, device)
        return run_stack(tokens, heads, pe, rot, int(params["depth"]))
