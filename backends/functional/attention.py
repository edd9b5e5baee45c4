"""Multi-head self-attention, its diagnostics (entropy, rollout) and position embeddings.

Conventions are torch's: tokens ``x`` are (B, N, D), batch first; projection weights are
``nn.Linear``'s (out_features, in_features); heads split the projected dim into ``num_heads``
contiguous slices, as ``nn.MultiheadAttention`` does; weights are softmax rows over keys, so
``weights[b, h, i, j]`` is how much query token i reads key token j and every row sums to 1.
Token grids are raster order: token ``r * cols + c`` is the patch in row r (y, down) and
column c (x, right).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

POSITION_KINDS = ("none", "sinusoidal-1d", "sinusoidal-2d", "learned-random", "rotary")
ROPE_ANGLE = math.pi / 8  # radians per token of the first rotary pair at strength 1


# -- heads --------------------------------------------------------------------------------------
def split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, E) -> (B, heads, N, E / heads): head h is the slice [h * E / heads, (h + 1) * E / heads)."""
    b, n, e = t.shape
    if e % num_heads:
        raise ValueError(f"the projected dim {e} must divide by num_heads = {num_heads}")
    return t.view(b, n, num_heads, e // num_heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d), the inverse of :func:`split_heads`."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def apply_rotary(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (Su et al., RoFormer): rotate dims (2m, 2m + 1) of each token by
    ``angles`` (N, M). t (B, H, N, d) with 2M <= d; dims past 2M are left as they are. A rotation
    keeps norms, and R(a_i)^T R(a_j) = R(a_j - a_i) makes q_i.k_j depend on relative position."""
    m = angles.shape[-1]
    if angles.shape[0] != t.shape[-2] or 2 * m > t.shape[-1]:
        raise ValueError(f"angles (N, M) = {tuple(angles.shape)} need N = {t.shape[-2]} tokens and "
                         f"2M <= head dim {t.shape[-1]}")
    pairs = t[..., : 2 * m].unflatten(-1, (m, 2))
    cos, sin = angles.cos(), angles.sin()
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
    return torch.cat([rotated, t[..., 2 * m :]], -1)


def _scale(q: torch.Tensor, scale: Optional[float]) -> float:
    return scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])


def head_outputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                 need_weights: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Each head's softmax(q k^T * scale) v: q, k (B, heads, N, d), v (B, heads, N, d_v) ->
    (B, heads, N, d_v) and the weights (B, heads, N, N). Without weights it is
    ``F.scaled_dot_product_attention`` (which never forms the N x N matrix on its fused kernels);
    with them, weights @ v, as ``nn.MultiheadAttention`` does when it returns weights."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, scale=scale), None
    weights = torch.softmax((q * _scale(q, scale)) @ k.transpose(-1, -2), -1)  # scaling q, not the N x N logits
    return weights @ v, weights


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
    """Self-attention of x (B, N, D), as ``nn.MultiheadAttention(batch_first=True)`` with
    in_proj_weight = cat(w_q, w_k, w_v) and out_proj = (w_o, b_o).

    Args:
        x: tokens (B, N, D).
        w_q, w_k: (E, D); w_v: (E_v, D); w_o: (D_out, E_v); E and E_v divisible by ``num_heads``.
        b_q, b_k, b_v, b_o: optional biases of the four projections.
        rotary: (N, M) angles turning q and k (:func:`apply_rotary`).
        need_weights: False computes the output with ``F.scaled_dot_product_attention`` only.
        query_index: the output by SDPA, and the weights of this query's row alone.
        scale: the logit scale, 1 / sqrt(E / heads) when None.

    Returns:
        The output (B, N, D_out) and the weights: None without ``need_weights``; (B, heads, N)
        with ``query_index``; (B, heads, N, N) otherwise.
    """
    if x.ndim != 3 or w_q.shape[1] != x.shape[-1] or w_k.shape != w_q.shape or w_v.shape[1] != x.shape[-1]:
        raise ValueError(f"expected x (B, N, D) with w_q, w_k (E, D) and w_v (E_v, D); got x {tuple(x.shape)}, "
                         f"w_q {tuple(w_q.shape)}, w_k {tuple(w_k.shape)}, w_v {tuple(w_v.shape)}")
    if w_q.shape[0] % num_heads or w_v.shape[0] % num_heads:
        raise ValueError(f"E = {w_q.shape[0]} and E_v = {w_v.shape[0]} must both divide by num_heads = {num_heads}")
    if w_o.shape[1] != w_v.shape[0]:
        raise ValueError(f"w_o (D_out, E_v) must take E_v = {w_v.shape[0]} inputs; got w_o {tuple(w_o.shape)}")
    q = split_heads(F.linear(x, w_q, b_q), num_heads)
    k = split_heads(F.linear(x, w_k, b_k), num_heads)
    v = split_heads(F.linear(x, w_v, b_v), num_heads)
    if rotary is not None:
        q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
    full = need_weights and query_index is None
    heads, weights = head_outputs(q, k, v, scale, need_weights=full)
    out = F.linear(merge_heads(heads), w_o, b_o)
    if need_weights and query_index is not None:
        row = q[:, :, query_index : query_index + 1] * _scale(q, scale)
        weights = torch.softmax(row @ k.transpose(-1, -2), -1)[:, :, 0]
    return out, weights


def attention_logits(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, num_heads: int,
                     index: Optional[int] = None, rotary: Optional[torch.Tensor] = None,
                     scale: Optional[float] = None, used_dims: Optional[int] = None) -> torch.Tensor:
    """The scaled scores q.k * scale (no biases) whose softmax is :func:`attention_weights`:
    (B, heads, N, N), or (B, heads, 1, N) for the row of token ``index`` alone, in O(N E)
    instead of O(N^2 E).

    ``used_dims``: only the first ``used_dims`` dims of each head enter q.k. Exact when the
    caller knows the rest of q or k is zero (position dims with no position embedding), and
    cheaper; the scale still follows the full head dim, so the scores do not change."""
    if x.ndim != 3 or w_q.shape[1] != x.shape[-1] or w_k.shape != w_q.shape:
        raise ValueError(f"expected x (B, N, D) with w_q, w_k (E, D); got x {tuple(x.shape)}, "
                         f"w_q {tuple(w_q.shape)}, w_k {tuple(w_k.shape)}")
    rows = x if index is None else x[:, index : index + 1]
    q = split_heads(F.linear(rows, w_q), num_heads)
    k = split_heads(F.linear(x, w_k), num_heads)
    if rotary is not None:
        q, k = apply_rotary(q, rotary if index is None else rotary[index : index + 1]), apply_rotary(k, rotary)
    s = _scale(q, scale)
    if used_dims is not None:
        q, k = q[..., :used_dims], k[..., :used_dims]
    return (q * s) @ k.transpose(-1, -2)


def attention_weights(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, num_heads: int,
                      index: Optional[int] = None, rotary: Optional[torch.Tensor] = None,
                      scale: Optional[float] = None) -> torch.Tensor:
    """multi_head_attention's weights (without biases) and no output: (B, heads, N, N), or only
    the row of token ``index``, (B, heads, N): what a click needs at any patch size."""
    w = torch.softmax(attention_logits(x, w_q, w_k, num_heads, index, rotary, scale), -1)
    return w if index is None else w[:, :, 0]


# -- diagnostics --------------------------------------------------------------------------------
def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each row over the last axis, divided by log N: 0 = one key, 1 = uniform.
    For display: one N x N buffer, reused in place (not differentiable)."""
    n = weights.shape[-1]
    plogp = weights.clamp_min(1e-30).log_().mul_(weights)
    return -plogp.sum(-1) / max(math.log(n), 1e-12)


def entropy_from_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """:func:`attention_entropy` of ``weights = softmax(logits)`` without a log or exp per weight:
    -sum w log w = lse - sum w l, and lse = max l - log max w exactly. (An exp of log-softmax
    values far below zero ran 12x slower than softmax itself on CPU: 62 ms at 4 x 1024^2.)"""
    if logits.shape != weights.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and weights {tuple(weights.shape)} must match")
    n = weights.shape[-1]
    lse = logits.amax(-1) - weights.amax(-1).log()
    return (lse - (weights * logits).sum(-1)) / max(math.log(n), 1e-12)


def _check_layers(weights: Sequence[torch.Tensor]) -> None:
    if not weights or any(a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != weights[0].shape for a in weights):
        raise ValueError(f"expected one or more (N, N) matrices of one size; got {[tuple(a.shape) for a in weights]}")


def _with_residual(a: torch.Tensor, residual: bool) -> torch.Tensor:
    if not residual:
        return a
    a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    return a / a.sum(-1, keepdim=True)


def attention_rollout(weights: Sequence[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): R = Â_L ... Â_1 for head-averaged (N, N)
    attention A_1..A_L of layers 1..L, with Â = 0.5 A + 0.5 I, rows renormalized to sum to 1
    (the paper's account of the skip connection; ``residual=False`` multiplies the raw A).
    Row i says how much each input token reaches output token i through the stack."""
    _check_layers(weights)
    r = torch.eye(weights[0].shape[-1], device=weights[0].device, dtype=weights[0].dtype)
    for a in weights:
        r = _with_residual(a, residual) @ r
    return r


def rollout_row(weights: Sequence[torch.Tensor], index: int, residual: bool = True) -> torch.Tensor:
    """Row ``index`` of :func:`attention_rollout`, by vector-matrix products: O(L N^2), not O(L N^3)."""
    _check_layers(weights)
    v = torch.zeros(weights[0].shape[-1], device=weights[0].device, dtype=weights[0].dtype)
    v[index] = 1.0
    for a in reversed(weights):
        if residual:  # v Â with Â = (A + I) / d, d the row sums of A + I, without forming Â
            v = v / (a.sum(-1) + 1)
            v = v @ a + v
        else:
            v = v @ a
    return v


# -- position embeddings ------------------------------------------------------------------------
def sinusoidal_table(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al.'s table for positions (N,): (N, dim) float32, sin and cos at
    10000^(-2k/dim) interleaved (column 2k is sin, 2k + 1 cos). Computed in float64."""
    freqs = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) * 2 / dim)
    angles = positions.double()[:, None] * freqs[None]
    return torch.stack([angles.sin(), angles.cos()], -1).flatten(1).float()


def position_embedding(kind: str, rows: int, cols: int, seed: int = 0, dim: int = 16) -> Optional[torch.Tensor]:
    """An additive embedding (rows * cols, dim) with unit-norm rows in raster order, or None
    for 'none' and 'rotary'. 1-D numbers tokens in raster order (so vertical neighbours are
    ``cols`` apart); 2-D gives the first half of the dims to the column (x) and the second to
    the row (y), as MAE; learned-random is the seeded N(0, 1) table a ViT starts training from."""
    n = rows * cols
    if kind in ("none", "rotary"):
        return None
    if kind == "sinusoidal-1d":
        pe = sinusoidal_table(torch.arange(n), dim)
    elif kind == "sinusoidal-2d":
        ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        pe = torch.cat([sinusoidal_table(xs.flatten(), dim // 2), sinusoidal_table(ys.flatten(), dim // 2)], 1)
    elif kind == "learned-random":
        pe = torch.randn((n, dim), generator=torch.Generator().manual_seed(int(seed)))
    else:
        raise ValueError(f"unknown position embedding {kind!r}; one of {', '.join(POSITION_KINDS)}")
    return pe / pe.norm(dim=1, keepdim=True).clamp_min(1e-12)


def rotary_angles(rows: int, cols: int, pairs: int, strength: float = 1.0, angle: float = ROPE_ANGLE) -> torch.Tensor:
    """(rows * cols, pairs) angles for 2-D rotary: even pairs turn with the column (x), odd
    pairs with the row (y), the frequency halving every two pairs: ``angle * strength *
    2^-(m // 2)`` radians per token for pair m."""
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    coords = torch.stack([xs.flatten(), ys.flatten()], 1).float()  # (N, 2)
    m = torch.arange(pairs)
    freq = angle * strength * 0.5 ** (m // 2).float()
    return coords[:, m % 2] * freq[None]


# -- the module twin ----------------------------------------------------------------------------
class MultiheadSelfAttention(nn.Module):
    """:func:`multi_head_attention` with its four projections as ``nn.Linear`` layers.

    ``forward(x)`` returns (output, weights) like ``nn.MultiheadAttention(batch_first=True)``
    called with ``average_attn_weights=False``; copying that module's in_proj chunks and
    out_proj into ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` gives its outputs."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, inner_dim: Optional[int] = None,
                 out_dim: Optional[int] = None, device=None, dtype=None) -> None:
        super().__init__()
        inner = inner_dim if inner_dim is not None else embed_dim
        if inner % num_heads:
            raise ValueError(f"inner_dim {inner} must divide by num_heads = {num_heads}")
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, inner, **kw)
        self.k_proj = nn.Linear(embed_dim, inner, **kw)
        self.v_proj = nn.Linear(embed_dim, inner, **kw)
        self.out_proj = nn.Linear(inner, out_dim if out_dim is not None else embed_dim, **kw)

    def forward(self, x: torch.Tensor, rotary: Optional[torch.Tensor] = None, need_weights: bool = True,
                query_index: Optional[int] = None, scale: Optional[float] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return multi_head_attention(
            x, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight, self.out_proj.weight, self.num_heads,
            self.q_proj.bias, self.k_proj.bias, self.v_proj.bias, self.out_proj.bias,
            rotary=rotary, need_weights=need_weights, query_index=query_index, scale=scale)
