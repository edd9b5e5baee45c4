"""The self-attention operator's model: four heads that mean something untrained, and the stack.

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
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from backends.features import TOKEN_GROUPS, Tokens
from backends.functional.attention import (
    attention_entropy,
    attention_logits,
    entropy_from_logits,
    position_embedding,
    rotary_angles,
)

HEADS = ("colour", "orientation", "texture", "position")
PE_DIM = 16
FEATURES = 13  # token features: opponent colour 3, orientation 6, texture 2, position 2
ROTARY_PAIRS = 6  # the widest group (orientation) has 6 features, each carried as a pair (f, 0)
CONTENT_DIM = 2 * ROTARY_PAIRS + 1  # the pairs, then the |f|^2 / constant column
HEAD_DIM = 32  # content 13 + PE 16 + 3 spare; q, k and v share it, which keeps SDPA on its fast kernel
EMBED_DIM = FEATURES + len(HEADS) + 1 + PE_DIM  # features, |f_g|^2 per head, constant 1, PE
MAX_FULL_TOKENS = 1024  # entropy, rollout and the stack need full N x N matrices


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


def token_rotary(rows: int, cols: int, strength: float = 1.0) -> torch.Tensor:
    """(N, ROTARY_PAIRS) angles for the heads' feature pairs.

    The heads carry feature k as the pair (f_k, 0), so rotary turns it by the token's angle and
    q_i.k_j compares f_ik f_jk cos(angle_j - angle_i): each feature with a cosine falloff in the
    offset. The |f|^2 column is not turned, so a query still scores itself highest
    (2 f.R f' - |f'|^2 <= |f|^2 for any rotation R)."""
    return rotary_angles(rows, cols, ROTARY_PAIRS, strength)


def token_positions(kind: str, strength: float, seed: int, tokens: Tokens,
                    device: Any) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The additive embedding (N, PE_DIM) and the rotary angles of ``kind``, each None if unused."""
    pe = position_embedding(kind, tokens.rows, tokens.cols, seed, PE_DIM)
    rot = token_rotary(tokens.rows, tokens.cols, strength) if kind == "rotary" else None
    return (pe.to(device) if pe is not None else None), (rot.to(device) if rot is not None else None)


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


def token_index(x: int, y: int, tokens: Tokens) -> int:
    """The raster index of the patch holding input pixel (x, y); the uncovered border maps to
    the last row or column."""
    return min(y // tokens.patch, tokens.rows - 1) * tokens.cols + min(x // tokens.patch, tokens.cols - 1)
