"""Attention weights of any attention module, even one that calls the fused
``F.scaled_dot_product_attention`` (which never forms the weights).

During one forward a torch function mode sees every call of the fused function (however the
model imported it) and of ``F.multi_head_attention_forward``; from the captured q and k it
computes softmax(q k^T * scale + mask) itself, and files the result under the innermost module
that was running. A module with a ``qkv`` projection and ``num_heads`` that forms its weights by
hand (an eager ViT block) is read from its projection's output instead. An attention-looking
module that ran with neither gives a warning, never an empty map.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

Weights = torch.Tensor  # (B, H, L, S), rows sum to 1


def sdpa_weights(query: torch.Tensor, key: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                 is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False) -> Weights:
    """The attention weights ``F.scaled_dot_product_attention`` applies, by its documented rule:
    softmax(q k^T * scale + bias), scale 1/sqrt(E) by default, bias -inf where a boolean mask is
    False, a float mask added, a causal mask keeping j <= i. q (..., L, E), k (..., S, E)."""
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must share their last size, got {tuple(query.shape)} and {tuple(key.shape)}")
    if enable_gqa and query.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    logits = (query @ key.transpose(-2, -1)) * s
    if is_causal:
        keep = torch.ones(logits.shape[-2:], dtype=torch.bool, device=logits.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    return torch.softmax(logits, dim=-1)


def _as_heads(w: torch.Tensor) -> torch.Tensor:
    """(L, S) or (B, L, S) or (B, H, L, S) as (B, H, L, S)."""
    while w.dim() < 4:
        w = w.unsqueeze(0)
    return w.reshape(-1, *w.shape[-3:])[:1] if w.dim() > 4 else w


def _sdpa_args(args: tuple, kwargs: dict) -> dict[str, Any]:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


class AttentionRecorder(TorchFunctionMode):
    """Records attention weights during a forward; ``current()`` names the running module."""

    def __init__(self, current: Callable[[], str]) -> None:
        super().__init__()
        self.current = current
        self.weights: dict[str, Weights] = {}
        self.how: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            a = _sdpa_args(args, kwargs)
            with torch.no_grad():
                w = sdpa_weights(a["query"].detach(), a["key"].detach(), a.get("attn_mask"), bool(a.get("is_causal", False)),
                                 a.get("scale"), bool(a.get("enable_gqa", False)))
            self._file(_as_heads(w), "fused scaled_dot_product_attention (weights from the captured q and k)")
            return func(*args, **kwargs)
        if func is F.multi_head_attention_forward:
            return self._multi_head(func, args, kwargs)
        return func(*args, **kwargs)

    def _multi_head(self, func, args: tuple, kwargs: dict):
        """Runs ``multi_head_attention_forward`` asking for per-head weights, keeps them, and
        answers the caller what it asked for."""
        need = kwargs.get("need_weights", True)
        average = kwargs.get("average_attn_weights", True)
        out, w = func(*args, **{**kwargs, "need_weights": True, "average_attn_weights": False})
        if w is not None:
            self._file(_as_heads(w.detach()), "multi-head attention (per-head weights)")
        if not need or w is None:
            return out, None
        return out, (w.mean(dim=-3) if average else w)

    def _file(self, w: Weights, how: str) -> None:
        path = self.current()
        self.weights[path] = w
        self.how[path] = how


def looks_like_attention(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return isinstance(module, nn.MultiheadAttention) or "attention" in name or "attn" in name


def has_qkv(module: nn.Module) -> bool:
    return isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int)


def weights_from_qkv(module: nn.Module, qkv_out: torch.Tensor) -> Weights:
    """Weights of a block that projects x to q, k, v with one ``qkv`` Linear (B, N, 3 C), splits
    heads as (3, B, H, N, C / H), optionally normalises q and k (``q_norm``, ``k_norm``) and
    scales by ``scale`` (else 1/sqrt(C / H))."""
    b, n, c3 = qkv_out.shape
    heads = module.num_heads
    qkv = qkv_out.reshape(b, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    for name, t in (("q_norm", "q"), ("k_norm", "k")):
        norm = getattr(module, name, None)
        if isinstance(norm, nn.Module):
            if t == "q":
                q = norm(q)
            else:
                k = norm(k)
    return sdpa_weights(q, k, scale=getattr(module, "scale", None))


def impossible(path: str, module: nn.Module) -> str:
    return (f"attention in {path or 'the model'} ({type(module).__name__}) could not be captured: it forms its "
            f"weights neither with scaled_dot_product_attention, multi-head attention nor a qkv projection")
