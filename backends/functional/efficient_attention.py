"""Attention that avoids the N x N matrix, beside full softmax attention: linear attention with a
kernel feature map (Katharopoulos et al., 2020), local window attention on non-overlapping windows
of the token grid (Swin, Liu et al., 2021) and cross-covariance (channel) attention, which attends
between feature channels instead of tokens (XCiT, El-Nouby et al., 2021; EdgeNeXt's transposed
attention).

Conventions are :mod:`backends.functional.attention`'s: q, k, v are (B, heads, N, d), weights rows
sum to 1 over keys, and tokens lie on a rows x cols grid in raster order (token ``r * cols + c``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.attention import head_outputs, merge_heads, split_heads

FEATURE_MAPS = ("elu+1", "relu")
METHODS = ("full", "linear", "window", "channel")
FLOAT_BYTES = 4


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or q.shape != k.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k must be (B, heads, N, d) and v (B, heads, N, d_v) with the same B, heads, N; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


# -- full ---------------------------------------------------------------------------------------
def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale) v with its (B, heads, N, N) weights; scale 1 / sqrt(d) when None."""
    _check_qkv(q, k, v)
    out, weights = head_outputs(q, k, v, scale, need_weights=True)
    return out, weights


def full_weights_row(q: torch.Tensor, k: torch.Tensor, index: int, scale: Optional[float] = None) -> torch.Tensor:
    """Row ``index`` of full attention's weights, (B, heads, N), in O(N d)."""
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return torch.softmax((q[..., index, :] * s).unsqueeze(-2) @ k.transpose(-1, -2), -1)[..., 0, :]


# -- linear -------------------------------------------------------------------------------------
def feature_map(x: torch.Tensor, kind: str = "elu+1") -> torch.Tensor:
    """The positive kernel features phi(x): elu(x) + 1 (the paper's) or relu(x)."""
    if kind == "elu+1":
        return F.elu(x) + 1
    if kind == "relu":
        return F.relu(x)
    raise ValueError(f"feature map must be one of {FEATURE_MAPS}, got {kind!r}")


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str = "elu+1", eps: float = 1e-6
                     ) -> torch.Tensor:
    """phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j)): attention with the kernel phi(q).phi(k)
    in place of exp(q.k), in O(N d d_v) by multiplying phi(k)^T v first. (B, heads, N, d_v).

    It equals the quadratic form (phi(q) phi(k)^T, rows normalized to sum to 1) v, whose weights
    :func:`linear_weights` gives; ``eps`` guards a row whose kernel sums to 0 (relu)."""
    _check_qkv(q, k, v)
    fq, fk = feature_map(q, kind), feature_map(k, kind)
    kv = fk.transpose(-1, -2) @ v  # (B, heads, d, d_v): every key summarized once
    norm = fq @ fk.sum(-2).unsqueeze(-1)  # (B, heads, N, 1)
    return (fq @ kv) / norm.clamp_min(eps)


def linear_weights(q: torch.Tensor, k: torch.Tensor, kind: str = "elu+1", index: Optional[int] = None,
                   eps: float = 1e-6) -> torch.Tensor:
    """The weights linear attention implies: phi(q_i).phi(k_j) over its sum over j; (B, heads,
    N, N), or the row of query ``index`` (B, heads, N). Never formed by :func:`linear_attention`."""
    fq, fk = feature_map(q, kind), feature_map(k, kind)
    if index is not None:
        fq = fq[..., index : index + 1, :]
    scores = fq @ fk.transpose(-1, -2)
    weights = scores / scores.sum(-1, keepdim=True).clamp_min(eps)
    return weights[..., 0, :] if index is not None else weights


# -- window -------------------------------------------------------------------------------------
def _to_windows(t: torch.Tensor, rows: int, cols: int, window: int) -> torch.Tensor:
    """(B, heads, rows * cols, d) -> (B, heads, nW, window^2, d), the grid zero-padded on the
    right and bottom to whole windows, windows in raster order."""
    b, h, _, d = t.shape
    pr, pc = -(-rows // window) * window, -(-cols // window) * window
    grid = F.pad(t.reshape(b, h, rows, cols, d), (0, 0, 0, pc - cols, 0, pr - rows))
    grid = grid.view(b, h, pr // window, window, pc // window, window, d).permute(0, 1, 2, 4, 3, 5, 6)
    return grid.reshape(b, h, -1, window * window, d)


def _from_windows(t: torch.Tensor, rows: int, cols: int, window: int) -> torch.Tensor:
    """The inverse of :func:`_to_windows`, padding cropped: (B, heads, rows * cols, d)."""
    b, h, _, _, d = t.shape
    pr, pc = -(-rows // window) * window, -(-cols // window) * window
    grid = t.view(b, h, pr // window, pc // window, window, window, d).permute(0, 1, 2, 4, 3, 5, 6)
    return grid.reshape(b, h, pr, pc, d)[:, :, :rows, :cols].reshape(b, h, rows * cols, d)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: int, cols: int, window: int,
                     scale: Optional[float] = None) -> torch.Tensor:
    """Full attention inside each non-overlapping ``window`` x ``window`` block of the grid (Swin's
    W-MSA, unshifted): a query reads only the keys of its own block, O(N window^2 d). Blocks at
    the right and bottom edge that the grid does not fill are padded, and the padding masked out
    of the keys. A window covering the whole grid is full attention. (B, heads, N, d_v)."""
    _check_qkv(q, k, v)
    if q.shape[2] != rows * cols or window < 1:
        raise ValueError(f"q has {q.shape[2]} tokens; a {rows} x {cols} grid has {rows * cols} (window {window})")
    qw, kw, vw = (_to_windows(t, rows, cols, window) for t in (q, k, v))
    mask = None
    if rows % window or cols % window:
        real = _to_windows(q.new_ones(1, 1, rows * cols, 1), rows, cols, window)[0, 0, :, :, 0] > 0  # (nW, w^2)
        mask = real[:, None, :]  # keys only: every window holds at least one real token
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask, scale=scale)
    return _from_windows(out, rows, cols, window)


def window_members(index: int, rows: int, cols: int, window: int) -> torch.Tensor:
    """Raster indices of the tokens in the window of token ``index``, ascending."""
    r0, c0 = (index // cols) // window * window, (index % cols) // window * window
    rs, cs = torch.arange(r0, min(r0 + window, rows)), torch.arange(c0, min(c0 + window, cols))
    return (rs[:, None] * cols + cs[None, :]).flatten()


def window_weights_row(q: torch.Tensor, k: torch.Tensor, rows: int, cols: int, window: int, index: int,
                       scale: Optional[float] = None) -> torch.Tensor:
    """Row ``index`` of window attention's weights over all N keys (zero outside its window), (B, heads, N)."""
    members = window_members(index, rows, cols, window).to(q.device)
    row = full_weights_row(q, k.index_select(-2, members), index, scale)
    out = q.new_zeros(*q.shape[:2], q.shape[2])
    out[..., members] = row
    return out


# -- channel ------------------------------------------------------------------------------------
def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-covariance attention (XCiT's XCA): channels attend to channels. Each channel of q and
    k is L2-normalized over the tokens, A = softmax(q^T k / temperature) is (d, d) with rows over
    k's channels, and token n's output channel c is sum_c' A[c, c'] v[n, c']: O(N d^2).
    q, k (B, heads, N, d) and v (B, heads, N, d) -> output (B, heads, N, d), A (B, heads, d, d)."""
    _check_qkv(q, k, v)
    if v.shape[-1] != q.shape[-1]:
        raise ValueError(f"channel attention mixes v's channels by a d x d matrix: v {tuple(v.shape)} needs "
                         f"d = {q.shape[-1]} like q")
    qn, kn = F.normalize(q, dim=-2), F.normalize(k, dim=-2)
    weights = torch.softmax(qn.transpose(-1, -2) @ kn / temperature, -1)
    return v @ weights.transpose(-1, -2), weights


def channel_token_shares(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """How much each token shapes channel attention's logits: q^T k = sum_j q_j k_j^T over the
    channel-normalized tokens, each term of Frobenius norm |q_j| |k_j|; those norms over their sum,
    (B, heads, N). The same for every query: channel attention has no token-to-token map."""
    qn, kn = F.normalize(q, dim=-2), F.normalize(k, dim=-2)
    s = qn.norm(dim=-1) * kn.norm(dim=-1)
    return s / s.sum(-1, keepdim=True).clamp_min(1e-12)


# -- cost ---------------------------------------------------------------------------------------
def weight_bytes(method: str, n: int, d: int, window: int = 8) -> int:
    """The bytes of float32 attention weights (or the summary that replaces them) one head holds:
    full N^2, window N window^2, linear d^2 (phi(k)^T v) plus N d (phi(q)), channel d^2."""
    if method == "full":
        return n * n * FLOAT_BYTES
    if method == "window":
        return n * min(window * window, n) * FLOAT_BYTES
    if method == "linear":
        return (d * d + n * d) * FLOAT_BYTES
    if method == "channel":
        return d * d * FLOAT_BYTES
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def multiply_adds(method: str, n: int, d: int, window: int = 8) -> int:
    """Multiply-adds of one head's q k^T and weights @ v (or their reordered forms), d_v = d."""
    if method == "full":
        return 2 * n * n * d
    if method == "window":
        return 2 * n * min(window * window, n) * d
    if method in ("linear", "channel"):
        return 2 * n * d * d
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# -- the module twin ----------------------------------------------------------------------------
class EfficientSelfAttention(nn.Module):
    """Self-attention of tokens (B, rows * cols, dim) by one of ``METHODS``, with q, k, v and
    output projections as ``nn.Linear`` layers split into ``num_heads`` heads."""

    def __init__(self, dim: int, num_heads: int = 1, method: str = "linear", window: int = 8,
                 kind: str = "elu+1", temperature: float = 1.0) -> None:
        super().__init__()
        if method not in METHODS or dim % num_heads:
            raise ValueError(f"method must be one of {METHODS} and dim {dim} divide by num_heads {num_heads}")
        self.num_heads, self.method, self.window, self.kind, self.temperature = num_heads, method, window, kind, temperature
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        q, k, v = (split_heads(p(x), self.num_heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        if self.method == "full":
            out = full_attention(q, k, v)[0]
        elif self.method == "linear":
            out = linear_attention(q, k, v, self.kind)
        elif self.method == "window":
            out = window_attention(q, k, v, rows, cols, self.window)
        else:
            out = channel_attention(q, k, v, self.temperature)[0]
        return self.out_proj(merge_heads(out))
