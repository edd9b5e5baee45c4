"""Multi-head self-attention over image patches with heads that mean something untrained.

Each patch becomes a token of interpretable features (mean colour, edge orientation histogram,
texture contrast, position; see ``backends.features.patch_features``), each group standardized
over the image's tokens. Head h reads one group f and scores keys by a Gaussian kernel,
score(i, j) = -|f_i - f_j|^2 / tau_h, written as a dot product of linear projections:

    -|f_i - f_j|^2 = 2 f_i.f_j - |f_j|^2 - |f_i|^2,

and the last term is the same for every key of query i, so softmax ignores it. The embedding
carries |f|^2 per group and a constant 1, so q_i = (sqrt(d)/tau) [2 f_i, -1] and
k_j = [f_j, |f_j|^2] give q_i.k_j / sqrt(d) = (2 f_i.f_j - |f_j|^2) / tau exactly (SDPA divides
by sqrt(d)). Position embeddings live in dims of their own and add strength * PE_i.PE_j to every
head's score; rotary instead rotates q and k. Values are the features themselves and the output
projection averages the heads, so one layer maps f to A f with A the head-mean attention, and a
stack f <- (f + A f) / 2 is exactly what attention rollout (Abnar & Zuidema, 2020) assumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from backends.features import TOKEN_GROUPS, Tokens, make_tokens, opponent_to_rgb, pixel_features
from backends.layers import INPUT, HeatmapLayer, ImageLayer, MetricsLayer, Result
from backends.memo import Memo
from backends.params import ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Operator, OperatorSpec, Query, register

HEADS = ("colour", "orientation", "texture", "position")
POSITION_KINDS = ("none", "sinusoidal-1d", "sinusoidal-2d", "learned-random", "rotary")
PE_DIM = 16
FEATURES = 13  # token features: opponent colour 3, orientation 6, texture 2, position 2
ROTARY_PAIRS = 6  # the widest group (orientation) has 6 features, each carried as a pair (f, 0)
CONTENT_DIM = 2 * ROTARY_PAIRS + 1  # the pairs, then the |f|^2 / constant column
HEAD_DIM = 32  # content 13 + PE 16 + 3 spare; q, k and v share it, which keeps SDPA on its fast kernel
EMBED_DIM = FEATURES + len(HEADS) + 1 + PE_DIM  # features, |f_g|^2 per head, constant 1, PE
MAX_FULL_TOKENS = 1024  # entropy, rollout and the stack need full N x N matrices
ROPE_ANGLE = math.pi / 8  # radians per token of the first rotary pair at strength 1
DISPLAY_SIDE = 256
STACK_LAYERS = ("Rollout", "Attention entropy", "Stack output")  # from the full matrices: they settle


# -- the functional core ---------------------------------------------------------------------------
def _split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, e = t.shape
    return t.view(b, n, num_heads, e // num_heads).transpose(1, 2)


def apply_rotary(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (Su et al., RoFormer): rotate dims (2m, 2m + 1) of each token by
    ``angles`` (N, M). t (B, H, N, d) with 2M <= d; dims past 2M are left as they are. A rotation
    keeps norms, and R(a_i)^T R(a_j) = R(a_j - a_i) makes q_i.k_j depend on relative position."""
    m = angles.shape[-1]
    pairs = t[..., : 2 * m].unflatten(-1, (m, 2))
    cos, sin = angles.cos(), angles.sin()
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
    return torch.cat([rotated, t[..., 2 * m :]], -1)


def _attention_rows(q: torch.Tensor, k: torch.Tensor, scale: Optional[float]) -> torch.Tensor:
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return torch.softmax((q * s) @ k.transpose(-1, -2), -1)  # scaling q, not the N x N logits


def multi_head_attention(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    num_heads: int,
    b_q: Optional[torch.Tensor] = None,
    b_k: Optional[torch.Tensor] = None,
    b_v: Optional[torch.Tensor] = None,
    b_o: Optional[torch.Tensor] = None,
    rotary: Optional[torch.Tensor] = None,
    need_weights: bool = True,
    query_index: Optional[int] = None,
    scale: Optional[float] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Self-attention of x (B, N, D), batch first, as ``nn.MultiheadAttention`` with
    in_proj_weight = cat(w_q, w_k, w_v) and out_proj = (w_o, b_o). Shapes: w_q, w_k (E, D),
    w_v (E_v, D), w_o (D_out, E_v), E and E_v divisible by ``num_heads``; ``rotary`` (N, M)
    angles applied to q and k. Returns the output (B, N, D_out) and the weights:

    - need_weights=False: output from F.scaled_dot_product_attention, weights None;
    - query_index=i: SDPA output, and the weights of row i only, (B, heads, N);
    - otherwise the full weights (B, heads, N, N), and the output as weights @ v, as
      nn.MultiheadAttention does when it returns weights (SDPA would compute q k^T again).
    """
    if x.ndim != 3 or w_q.shape[1] != x.shape[-1] or w_k.shape != w_q.shape or w_v.shape[1] != x.shape[-1]:
        raise ValueError(f"expected x (B, N, D) with w_q, w_k (E, D) and w_v (E_v, D); got x {tuple(x.shape)}, "
                         f"w_q {tuple(w_q.shape)}, w_k {tuple(w_k.shape)}, w_v {tuple(w_v.shape)}")
    if w_q.shape[0] % num_heads or w_v.shape[0] % num_heads:
        raise ValueError(f"E = {w_q.shape[0]} and E_v = {w_v.shape[0]} must both divide by num_heads = {num_heads}")
    b, n, _ = x.shape
    q = _split_heads(F.linear(x, w_q, b_q), num_heads)
    k = _split_heads(F.linear(x, w_k, b_k), num_heads)
    v = _split_heads(F.linear(x, w_v, b_v), num_heads)
    if rotary is not None:
        q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
    weights = _attention_rows(q, k, scale) if need_weights and query_index is None else None
    out = weights @ v if weights is not None else F.scaled_dot_product_attention(q, k, v, scale=scale)
    out = F.linear(out.transpose(1, 2).reshape(b, n, -1), w_o, b_o)
    if need_weights and query_index is not None:
        weights = _attention_rows(q[:, :, query_index : query_index + 1], k, scale)[:, :, 0]
    return out, weights


def attention_logits(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, num_heads: int,
                     index: Optional[int] = None, rotary: Optional[torch.Tensor] = None,
                     scale: Optional[float] = None, used_dims: Optional[int] = None) -> torch.Tensor:
    """The scaled scores q.k * scale whose softmax is ``attention_weights``: (B, heads, N, N), or
    (B, heads, 1, N) for the row of token ``index`` alone, in O(N E) instead of O(N^2 E).
    ``used_dims``: only the first dims of each head enter q.k, when the caller knows the rest
    of q or k is zero (the scale still follows the full head dim)."""
    rows = x if index is None else x[:, index : index + 1]
    q = _split_heads(F.linear(rows, w_q), num_heads)
    k = _split_heads(F.linear(x, w_k), num_heads)
    if rotary is not None:
        q, k = apply_rotary(q, rotary if index is None else rotary[index : index + 1]), apply_rotary(k, rotary)
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if used_dims is not None:
        q, k = q[..., :used_dims], k[..., :used_dims]
    return (q * s) @ k.transpose(-1, -2)


def attention_weights(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, num_heads: int,
                      index: Optional[int] = None, rotary: Optional[torch.Tensor] = None,
                      scale: Optional[float] = None) -> torch.Tensor:
    """multi_head_attention's weights without its output: (B, heads, N, N), or only the row of
    token ``index``, (B, heads, N): what a click needs at any patch size."""
    w = torch.softmax(attention_logits(x, w_q, w_k, num_heads, index, rotary, scale), -1)
    return w if index is None else w[:, :, 0]


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each attention row over its last axis, divided by log N: 0 = one key, 1 = uniform."""
    n = weights.shape[-1]
    plogp = weights.clamp_min(1e-30).log_().mul_(weights)  # one N x N buffer, reused in place
    return -plogp.sum(-1) / max(math.log(n), 1e-12)


def entropy_from_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``attention_entropy`` of ``weights = softmax(logits)`` without a log or exp per weight:
    -sum w log w = lse - sum w l, and lse = max l - log max w exactly. (An exp of log-softmax
    values far below zero ran 12x slower than softmax itself on CPU: 62 ms at 4 x 1024^2.)"""
    n = weights.shape[-1]
    lse = logits.amax(-1) - weights.amax(-1).log()
    return (lse - (weights * logits).sum(-1)) / max(math.log(n), 1e-12)


def _with_residual(a: torch.Tensor, residual: bool) -> torch.Tensor:
    if not residual:
        return a
    a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    return a / a.sum(-1, keepdim=True)


def attention_rollout(weights: Sequence[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Rollout (Abnar & Zuidema): R = Â_L ... Â_1 with Â = (A + I) / 2 row-normalized, for
    head-averaged (N, N) attention of layers 1..L. Row i says how much each input token reaches
    output token i through the stack, skip connections included."""
    r = torch.eye(weights[0].shape[-1], device=weights[0].device, dtype=weights[0].dtype)
    for a in weights:
        r = _with_residual(a, residual) @ r
    return r


def rollout_row(weights: Sequence[torch.Tensor], index: int, residual: bool = True) -> torch.Tensor:
    """Row ``index`` of ``attention_rollout``, by vector-matrix products: O(L N^2), not O(L N^3)."""
    v = torch.zeros(weights[0].shape[-1], device=weights[0].device, dtype=weights[0].dtype)
    v[index] = 1.0
    for a in reversed(weights):
        if residual:  # v Â with Â = (A + I) / d, d the row sums of A + I, without forming Â
            v = v / (a.sum(-1) + 1)
            v = v @ a + v
        else:
            v = v @ a
    return v


# -- position embeddings ---------------------------------------------------------------------------
def _sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al.'s table for positions (N,): sin and cos at 10000^(-2k/dim), interleaved."""
    freqs = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) * 2 / dim)
    angles = pos.double()[:, None] * freqs[None]
    return torch.stack([angles.sin(), angles.cos()], -1).flatten(1).float()


def position_embedding(kind: str, rows: int, cols: int, seed: int = 0, dim: int = PE_DIM) -> Optional[torch.Tensor]:
    """An additive embedding (N, dim) with unit-norm rows in raster order, or None for 'none' and
    'rotary'. 1-D numbers tokens in raster order (so vertical neighbours are ``cols`` apart);
    2-D gives half the dims to the column and half to the row (as MAE); learned-random is the
    seeded N(0, 1) table a ViT starts training from."""
    n = rows * cols
    if kind in ("none", "rotary"):
        return None
    if kind == "sinusoidal-1d":
        pe = _sincos(torch.arange(n), dim)
    elif kind == "sinusoidal-2d":
        ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        pe = torch.cat([_sincos(xs.flatten(), dim // 2), _sincos(ys.flatten(), dim // 2)], 1)
    elif kind == "learned-random":
        pe = torch.randn((n, dim), generator=torch.Generator().manual_seed(int(seed)))
    else:
        raise ValueError(f"unknown position embedding {kind!r}; one of {', '.join(POSITION_KINDS)}")
    return pe / pe.norm(dim=1, keepdim=True).clamp_min(1e-12)


def rotary_angles(rows: int, cols: int, pairs: int = ROTARY_PAIRS, strength: float = 1.0) -> torch.Tensor:
    """(N, pairs) angles for 2-D rotary: even pairs turn with the column, odd pairs with the row,
    the frequency halving every two pairs: ROPE_ANGLE * strength * 2^-(m // 2) per token.

    The heads carry feature k as the pair (f_k, 0), so rotary turns it by the token's angle and
    q_i.k_j compares f_ik f_jk cos(angle_j - angle_i): each feature with a cosine falloff in the
    offset. The |f|^2 column is not turned, so a query still scores itself highest
    (2 f.R f' - |f'|^2 <= |f|^2 for any rotation R)."""
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    coords = torch.stack([xs.flatten(), ys.flatten()], 1).float()  # (N, 2)
    m = torch.arange(pairs)
    freq = ROPE_ANGLE * strength * 0.5 ** (m // 2).float()
    return coords[:, m % 2] * freq[None]


# -- the interpretable heads ------------------------------------------------------------------------
def embed_tokens(f: torch.Tensor, pe: Optional[torch.Tensor]) -> torch.Tensor:
    """Tokens (N, EMBED_DIM): features f (N, 13), |f_g|^2 per head group, a constant 1, the PE."""
    norms = [f[:, a:b].pow(2).sum(1, keepdim=True) for a, b in TOKEN_GROUPS.values()]
    pe = pe.to(f) if pe is not None else f.new_zeros(f.shape[0], PE_DIM)
    return torch.cat([f, *norms, f.new_ones(f.shape[0], 1), pe], 1)


def interpretable_heads(temperatures: Sequence[float], pe_strength: float,
                        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """w_q, w_k, w_v (4 * HEAD_DIM, EMBED_DIM), w_o (13, 4 * HEAD_DIM), built so
    head h's scaled dot product is -|f_i - f_j|^2 / tau_h + strength * PE_i.PE_j up to a per-query
    constant (see the module docstring), its values are f, and the output is the head mean."""
    h_n = len(HEADS)
    w_q = torch.zeros(h_n * HEAD_DIM, EMBED_DIM, dtype=dtype)
    w_k = torch.zeros_like(w_q)
    w_v = torch.zeros_like(w_q)
    w_o = torch.zeros(FEATURES, h_n * HEAD_DIM, dtype=dtype)
    root = math.sqrt(HEAD_DIM)
    for h, (a, b) in enumerate(TOKEN_GROUPS.values()):
        base, c = h * HEAD_DIM, root / temperatures[h]
        for i in range(b - a):  # feature i in slot 2i, its pair partner 2i + 1 left 0 for rotary to turn into
            w_q[base + 2 * i, a + i] = 2 * c
            w_k[base + 2 * i, a + i] = 1.0
        w_q[base + CONTENT_DIM - 1, FEATURES + h_n] = -c  # times the constant 1
        w_k[base + CONTENT_DIM - 1, FEATURES + h] = 1.0  # |f_j|^2 of this head's group
        for j in range(PE_DIM):
            w_q[base + CONTENT_DIM + j, FEATURES + h_n + 1 + j] = pe_strength * root
            w_k[base + CONTENT_DIM + j, FEATURES + h_n + 1 + j] = 1.0
        w_v[base : base + FEATURES, :FEATURES] = torch.eye(FEATURES, dtype=dtype)
        w_o[:, base : base + FEATURES] = torch.eye(FEATURES, dtype=dtype) / h_n
    return w_q, w_k, w_v, w_o


@dataclass(frozen=True)
class Stack:
    """A stack of ``depth`` layers f <- (f + A f) / 2 on the analysis grid: the head-mean
    attention (N, N) of each layer; ``entropy`` (heads + 2, N): layer 1 per head, then its head
    mean, then the last layer's head mean; and f after the stack."""

    means: list[torch.Tensor]
    entropy: torch.Tensor
    mixed: torch.Tensor


def run_stack(tokens: Tokens, heads: tuple[torch.Tensor, ...], pe: Optional[torch.Tensor],
              rotary: Optional[torch.Tensor], depth: int) -> Stack:
    """Values are f and w_o averages the heads, so multi_head_attention's output is
    mean_h(A_h) f: one (N, N) x (N, 13) product instead of every head's A_h v (a test checks)."""
    f, means, entropy = tokens.f, [], None
    for _ in range(depth):
        logits = attention_logits(embed_tokens(f, pe)[None], heads[0], heads[1], len(HEADS), rotary=rotary,
                                  used_dims=CONTENT_DIM if pe is None else None)[0]  # PE dims are 0 then
        w = torch.softmax(logits, -1)
        if entropy is None:
            entropy = entropy_from_logits(logits, w)
        means.append(w.mean(0))
        f = 0.5 * f + 0.5 * (means[-1] @ f)
    entropy = torch.cat([entropy, attention_entropy(torch.stack([means[0], means[-1]]))])
    return Stack(means, entropy, f)


def analysis_patch(height: int, width: int, patch: int, max_tokens: int = MAX_FULL_TOKENS) -> int:
    """The smallest multiple of ``patch`` whose grid has at most ``max_tokens`` tokens."""
    p = patch
    while (height // p) * (width // p) > max_tokens:
        p += patch
    return p


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
                       "at zero offset (additive kinds), or the rotary angle scale."),
            SeedParam("seed", 0, help="Seed of the learned-random position table."),
            FloatParam("temperature", 1.0, 0.05, 5.0, step=0.05, help="Global temperature: multiplies every "
                       "head's own (lower: sharper)."),
            FloatParam("temp_colour", 0.1, 0.01, 5.0, help="Temperature of the colour head (lower: sharper)."),
            FloatParam("temp_orientation", 0.1, 0.01, 5.0, help="Temperature of the edge orientation head."),
            FloatParam("temp_texture", 0.05, 0.01, 5.0, help="Temperature of the texture head."),
            FloatParam("temp_position", 0.05, 0.01, 5.0, help="Temperature of the position head."),
            IntParam("depth", 2, 1, 4, help="Layers in the stack that rollout follows."),
        ),
    )

    def __init__(self) -> None:
        self._memo = Memo(capacity=8)  # per image: pixel features, tokens per patch, heads, backgrounds
        self._stacks = Memo(capacity=3)  # each holds depth x (N, N) matrices: 4 MB apiece at 1024 tokens

    def reset_state(self) -> None:
        self._memo.clear()
        self._stacks.clear()

    def _tokens(self, image: torch.Tensor, patch: int) -> Tokens:
        _, _, h, w = image.shape
        pixels, scale = self._memo.get("pixels", lambda: pixel_features(image))
        return self._memo.get(("tokens", patch), lambda: make_tokens(pixels, scale, patch, h // patch, w // patch))

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        t0 = time.perf_counter()
        _, _, H, W = image.shape
        self._memo.bind(image)
        self._stacks.bind(image)
        patch = max(1, min(int(params["patch"]), H, W))
        tokens = self._tokens(image, patch)
        temps = tuple(float(params["temperature"]) * float(params[f"temp_{h}"]) for h in HEADS)
        kind, strength = params["position"], float(params["pe_strength"])
        pe_strength = strength if kind != "rotary" else 0.0
        heads = self._memo.get(("heads", temps, pe_strength),
                               lambda: tuple(t.to(image.device) for t in interpretable_heads(temps, pe_strength)))
        pe, rot = self._position(kind, strength, params["seed"], tokens, image.device)
        qx, qy = _clamp_query(query, W, H)
        qi = min(qy // patch, tokens.rows - 1) * tokens.cols + min(qx // patch, tokens.cols - 1)
        x = embed_tokens(tokens.f, pe)[None]
        row = attention_weights(x, heads[0], heads[1], len(HEADS), qi, rot)[0]  # (heads, N)
        t_row = time.perf_counter()

        bg = self._memo.get("backgrounds", lambda: Backgrounds.of(image))
        query_layers = _query_layers(bg, tokens, row, pe, rot, qi, temps, params)
        metrics = {
            "tokens": f"{tokens.rows} x {tokens.cols} = {tokens.rows * tokens.cols}",
            "patch": patch,
            "heads x head dim": f"{len(HEADS)} x {HEAD_DIM}",
            "embedding dim": EMBED_DIM,
            "Q/K/V/O weights": sum(t.numel() for t in heads),
            "query token": f"{qi} (row {qi // tokens.cols}, col {qi % tokens.cols})",
            "query row ms": round((t_row - t0) * 1e3, 2),
        }

        pa = analysis_patch(H, W, patch)
        stack_key = ("stack", pa, temps, kind, strength, params["seed"], int(params["depth"]))

        def with_stack() -> Result:
            t1 = time.perf_counter()
            a_tokens = self._tokens(image, pa)
            stack = self._stacks.get(stack_key, lambda: self._stack(a_tokens, heads, kind, strength, params, image.device))
            qa = min(qy // pa, a_tokens.rows - 1) * a_tokens.cols + min(qx // pa, a_tokens.cols - 1)
            rollout = rollout_row(stack.means, qa)
            layers = _stack_layers(bg, a_tokens, stack, rollout, qa)
            return Result(query_layers[:1] + layers[:2] + query_layers[1:] + layers[2:] + (MetricsLayer("Metrics", {
                **metrics,
                "full-matrix grid": f"patch {pa}: {a_tokens.rows * a_tokens.cols} tokens",
                **{f"entropy {h} at query": round(float(stack.entropy[i, qa]), 3) for i, h in enumerate(HEADS)},
                "stack + rollout ms": round((time.perf_counter() - t1) * 1e3, 2),
            }),))

        if stack_key in self._stacks:  # a click or a display change: the N x N stack is already there
            return with_stack()
        # A temperature or position change: the clicked query's rows first, the full matrices
        # once the slider rests (they cost 1-2 frames at 1024 tokens on a CPU).
        metrics["run ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        return Result(query_layers + (MetricsLayer("Metrics", metrics),), settle=with_stack, pending=STACK_LAYERS)

    @staticmethod
    def _position(kind: str, strength: float, seed: int, tokens: Tokens, device: Any):
        pe = position_embedding(kind, tokens.rows, tokens.cols, seed)
        rot = rotary_angles(tokens.rows, tokens.cols, strength=strength) if kind == "rotary" else None
        return (pe.to(device) if pe is not None else None), (rot.to(device) if rot is not None else None)

    def _stack(self, tokens: Tokens, heads: tuple[torch.Tensor, ...], kind: str, strength: float,
               params: Mapping[str, Any], device: Any) -> Stack:
        pe, rot = self._position(kind, strength, params["seed"], tokens, device)
        return run_stack(tokens, heads, pe, rot, int(params["depth"]))


def _clamp_query(query: Query, width: int, height: int) -> tuple[int, int]:
    qx, qy = query if query is not None else (width // 2, height // 2)
    return int(np.clip(qx, 0, width - 1)), int(np.clip(qy, 0, height - 1))


# -- display ----------------------------------------------------------------------------------------
def _extent(t: Tokens) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(t.cols * t.patch), float(t.rows * t.patch))


@dataclass(frozen=True)
class Backgrounds:
    """The image scaled by ``f`` to at most DISPLAY_SIDE, (h, w, 3) float32, for multi-map panels
    (whose maps must share the background's size), as is and at 60% brightness (so sparse
    attention stands out), made once per image so no frame converts it again."""

    small: np.ndarray
    dimmed: np.ndarray
    f: float

    @staticmethod
    def of(image: torch.Tensor) -> Backgrounds:
        _, _, H, W = image.shape
        f = min(1.0, DISPLAY_SIDE / max(H, W))
        size = (max(1, round(H * f)), max(1, round(W * f)))
        small = F.interpolate(image, size=size, mode="area") if f < 1 else image
        rgb = np.ascontiguousarray(small[0].permute(1, 2, 0).cpu().numpy(), dtype=np.float32)
        return Backgrounds(rgb, (0.6 * rgb).astype(np.float32), f)


def _on_display_grid(maps: torch.Tensor, t: Tokens, bg: Backgrounds) -> torch.Tensor:
    """Token maps (K, N) as blocks on the scaled image: (K, h, w), 0 (drawn transparent) where no
    patch covers: the right and bottom remainder the patchify leaves out."""
    dh, dw, f = bg.small.shape[0], bg.small.shape[1], bg.f
    ys = ((torch.arange(dh, device=maps.device) + 0.5) / f / t.patch).long()
    xs = ((torch.arange(dw, device=maps.device) + 0.5) / f / t.patch).long()
    grid = maps.reshape(-1, t.rows, t.cols)
    out = grid.index_select(1, ys.clamp(max=t.rows - 1)).index_select(2, xs.clamp(max=t.cols - 1))
    out[:, ys >= t.rows] = 0.0
    out[:, :, xs >= t.cols] = 0.0
    return out


def _position_term(pe: Optional[torch.Tensor], rot: Optional[torch.Tensor], qi: int, strength: float,
                   n: int, device: Any) -> tuple[torch.Tensor, str]:
    """What the position embedding adds to the query's logits (N,), and a caption."""
    if pe is not None:
        return strength * (pe @ pe[qi]), ("strength x PE_query . PE_key, added to every head's logit; sinusoidal "
                                          "tables have 8 frequencies (4 per axis in 2-D), base 10000, so they ripple")
    if rot is not None:
        kernel = torch.cos(rot - rot[qi]).mean(1)
        return kernel, "mean over rotated pairs of cos(angle_key - angle_query), the factor on each pair's content score"
    return torch.zeros(n, device=device), "no position embedding (the position head still uses patch centres)"


def _others_max(v: torch.Tensor, index: int) -> torch.Tensor:
    """The max of ``v`` (..., N) over every entry but ``index``: a colour scale that the query's
    own token, always the largest, would otherwise flatten."""
    if v.shape[-1] < 2:
        return v.amax(-1).clamp_min(1e-12)
    rest = torch.cat([v[..., :index], v[..., index + 1 :]], -1)
    return rest.amax(-1).clamp_min(1e-12)


def _query_layers(bg: Backgrounds, tokens: Tokens, row: torch.Tensor, pe: Optional[torch.Tensor],
                  rot: Optional[torch.Tensor], qi: int, temps: tuple[float, ...], params: Mapping[str, Any]) -> tuple:
    """What the clicked query's rows show: each head and their mean, and the position term."""
    n = tokens.rows * tokens.cols
    per_head = torch.cat([row, row.mean(0)[None]])
    tiles = _on_display_grid((per_head / _others_max(per_head, qi)[:, None]).clamp(max=1.0), tokens, bg)
    pos, pos_caption = _position_term(pe, rot, qi, float(params["pe_strength"]), n, row.device)
    pos_hi = float(pos.abs().max().clamp_min(1e-6)) if params["position"] != "none" else 1.0
    temp_text = ", ".join(f"{h} {t:g}" for h, t in zip(HEADS, temps))
    selfs = ", ".join(f"{float(w):.2f}" for w in row[:, qi])
    return (
        HeatmapLayer("Head attention", tiles, labels=("colour", "edges", "texture", "position", "mean"),
                     background=bg.dimmed, levels=(0.0, 1.0), opacity=0.9,
                     caption=f"softmax rows of query token {qi} of {n}: each head (τ {temp_text}) and their mean, "
                             f"each scaled to its largest weight off the query's own patch (self: {selfs})"),
        HeatmapLayer("Position term", pos.view(tokens.rows, tokens.cols), levels=(-pos_hi, pos_hi),
                     colormap="CET-D4", extent=_extent(tokens), caption=f"{params['position']}: {pos_caption}"),
    )


def _stack_layers(bg: Backgrounds, a_tokens: Tokens, stack: Stack, rollout: torch.Tensor, qa: int) -> tuple:
    """What the full N x N matrices show: rollout from the query, every query's entropy, the output."""
    depth = len(stack.means)
    entropy_maps = _on_display_grid(stack.entropy, a_tokens, bg)
    lo, hi = float(stack.entropy.min()), max(float(stack.entropy.max()), float(stack.entropy.min()) + 1e-3)
    mixed = opponent_to_rgb(stack.mixed[:, :3] * a_tokens.spread[:3] + a_tokens.mean[:3]).clamp(0, 1)
    return (
        HeatmapLayer("Rollout", rollout.view(a_tokens.rows, a_tokens.cols), background=INPUT, opacity=0.9,
                     levels=(0.0, float(_others_max(rollout, qa))), extent=_extent(a_tokens),
                     caption=f"rollout through {depth} layer(s), Â = (A + I) / 2, heads averaged, patch "
                             f"{a_tokens.patch}; the query's own patch ({float(rollout[qa]):.3f}) is off the scale"),
        HeatmapLayer("Attention entropy", entropy_maps, labels=HEADS + ("mean L1", f"mean L{depth}"),
                     background=bg.small, levels=(lo, hi), colormap="viridis", opacity=0.8,
                     caption=f"entropy / log N of every query's row, patch {a_tokens.patch}, from {lo:.2f} to {hi:.2f} "
                             f"(0 looks at one patch, 1 everywhere); heads of layer 1, then the head mean of layers 1 "
                             f"and {depth}"),
        ImageLayer("Stack output", mixed.view(a_tokens.rows, a_tokens.cols, 3), levels=(0.0, 1.0),
                   extent=_extent(a_tokens),
                   caption=f"mean colour of each token after {depth} layer(s) of f <- (f + A f) / 2: "
                           "the attention output, heads averaged"),
    )
