"""Class-specific relevance of a transformer's tokens (Chefer, Gur and Wolf, 2021, "Generic
attention-model explainability for interpreting bi-modal and encoder-decoder transformers").

Each layer's attention A (B, heads, N, N) is weighted by the gradient of the chosen class's
score with respect to it, negative contributions are dropped, and heads are averaged:
``A_bar = mean_h (dA * A).clamp(min=0)``. Relevance starts as the identity (every token is
relevant to itself through the skip connections) and accumulates layer by layer, first to last:
``R <- R + A_bar @ R``. Row i of R says how relevant each input token is to output token i for
that class; for a ViT the class token's row, without its own entry, is the relevance map.

Unlike plain rollout (:func:`backends.functional.attention.attention_rollout`) the rows are not
normalized: every entry is non-negative, the diagonal is at least 1, rows only grow from the
identity's, and with zero gradients R stays the identity.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _check(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> None:
    shapes_a = [tuple(a.shape) for a in attentions]
    shapes_g = [tuple(g.shape) for g in gradients]
    if not attentions or len(attentions) != len(gradients):
        raise ValueError(f"expected one gradient per attention layer (at least one); got attentions {shapes_a} "
                         f"and gradients {shapes_g}")
    first = attentions[0].shape
    for a, g in zip(attentions, gradients):
        if a.ndim != 4 or a.shape[-1] != a.shape[-2] or a.shape != first or g.shape != a.shape:
            raise ValueError(f"expected attentions and gradients (B, H, N, N) all of one shape; got attentions "
                             f"{shapes_a} and gradients {shapes_g}")


def weighted_attention(attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """One layer's ``A_bar = mean over heads of (gradient * attention).clamp(min=0)``: (B, H, N, N)
    twice -> (B, N, N), non-negative."""
    _check([attention], [gradient])
    return (gradient * attention).clamp(min=0).mean(1)


def relevance_rollout(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Gradient-weighted relevance through a stack of self-attention layers.

    Args:
        attentions: per layer, first to last, the softmax weights (B, H, N, N) of the forward pass
            (``weights[b, h, i, j]``: how much query i reads key j).
        gradients: per layer, d(class score)/d(weights), the same shapes.

    Returns:
        R (B, N, N): ``R = I``, then ``R <- R + A_bar @ R`` for each layer, with
        ``A_bar = mean_h (gradient * attention).clamp(min=0)``. Entries are non-negative and the
        diagonal at least 1; zero gradients give the identity. Row 0 of a class-token model is
        the class token's relevance over all tokens (its own entry included).
    """
    _check(attentions, gradients)
    b, _, n, _ = attentions[0].shape
    r = torch.eye(n, dtype=attentions[0].dtype, device=attentions[0].device).expand(b, n, n).clone()
    for a, g in zip(attentions, gradients):
        r = r + weighted_attention(a, g) @ r
    return r
