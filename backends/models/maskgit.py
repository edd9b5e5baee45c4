"""Masked-token generation in the manner of MaskGIT (Chang et al. 2022) on VQ-VAE token maps.

A small bidirectional transformer sees a token map (N, h, w) where some entries are the MASK
token and predicts a distribution over the codebook at every position. Decoding starts from an
all-masked map (or a partly masked one, for inpainting) and runs ``steps`` rounds: sample every
masked position, keep the most confident samples, re-mask the rest. How many stay masked after
round t follows a schedule gamma((t + 1) / steps) of the initially masked count: cosine, linear
or square, all going from 1 to 0, so the last round fills every token.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_metadata, load_weights

SHIPPED = WEIGHTS_DIR / "maskgit_patches.safetensors"
SCHEDULES = ("cosine", "linear", "square")


@dataclass(frozen=True)
class MaskGITConfig:
    codes: int = 128
    size: int = 8  # tokens per side
    dim: int = 128
    layers: int = 4
    heads: int = 4
    mlp: int = 256


class MaskGIT(nn.Module):
    def __init__(self, config: MaskGITConfig = MaskGITConfig()) -> None:
        super().__init__()
        self.config = config
        self.mask_id = config.codes
        self.tok_emb = nn.Embedding(config.codes + 1, config.dim)
        self.pos_emb = nn.Parameter(torch.randn(1, config.size * config.size, config.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, config.mlp, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.codes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, s, s) with ``mask_id`` where masked -> logits (N, s, s, codes)."""
        n, h, w = tokens.shape
        s = self.config.size
        if (h, w) != (s, s):
            raise ValueError(f"MaskGIT was trained on {s}x{s} token maps, got {h}x{w}")
        x = self.tok_emb(tokens.reshape(n, h * w)) + self.pos_emb
        return self.head(self.norm(self.blocks(x))).view(n, h, w, -1)


def gamma(schedule: str, r: float) -> float:
    """The fraction still masked at progress r in [0, 1]: 1 at r = 0, 0 at r = 1."""
    r = min(max(r, 0.0), 1.0)
    if schedule == "cosine":
        return math.cos(math.pi / 2 * r)
    if schedule == "linear":
        return 1.0 - r
    if schedule == "square":
        return 1.0 - r * r
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def masked_counts(n_masked: int, steps: int, schedule: str) -> list[int]:
    """How many of ``n_masked`` tokens are still masked after each of ``steps`` rounds:
    floor(n * gamma((t + 1) / steps)), lowered where needed so each round fixes at least one
    token while any remain; the last entry is 0."""
    out, prev = [], n_masked
    for t in range(steps):
        k = int(math.floor(n_masked * gamma(schedule, (t + 1) / steps) + 1e-9))
        k = max(0, min(k, prev - 1)) if prev > 0 else 0
        out.append(k)
        prev = k
    return out


@dataclass
class DecodeTrace:
    """Every round of one decode, as numpy arrays (steps, N, h, w)."""

    tokens: np.ndarray  # the map after the round; still-masked entries hold the round's sample
    fixed: np.ndarray  # bool: fixed after the round (given tokens included)
    new: np.ndarray  # bool: fixed in this round
    confidence: np.ndarray  # probability of the sampled token where it was sampled, else nan
    counts: list[int] = field(default_factory=list)  # masked left after each round

    @property
    def final(self) -> np.ndarray:
        return self.tokens[-1]


@torch.no_grad()
def decode(model: MaskGIT, tokens: torch.Tensor, mask: torch.Tensor, steps: int = 8, schedule: str = "cosine",
           temperature: float = 1.0, seed: int = 0, choice_noise: float = 4.5) -> DecodeTrace:
    """Iterative parallel decoding. ``tokens`` (N, h, w) long, ``mask`` (N, h, w) bool, True where
    to generate (every sample in the batch must have the same number masked). ``temperature``
    divides the logits before sampling; ``choice_noise`` scales Gumbel noise added to the log
    confidence when choosing what to keep, annealed to zero over the rounds (4.5, as in MaskGIT):
    without it early rounds lock in the most predictable tokens, flat colour, and samples come
    out flat."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n = tokens.shape[0]
    per_sample = mask.flatten(1).sum(1)
    if n and bool((per_sample != per_sample[0]).any()):
        raise ValueError("every sample must have the same number of masked tokens")
    n_masked = int(per_sample[0]) if n else 0
    counts = masked_counts(n_masked, steps, schedule)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    current = tokens.clone()
    still = mask.clone()
    rec: dict[str, list[np.ndarray]] = {"tokens": [], "fixed": [], "new": [], "confidence": []}
    for t in range(steps):
        inp = torch.where(still, torch.full_like(current, model.mask_id), current)
        logits = model(inp).float() / max(float(temperature), 1e-4)
        probs = torch.softmax(logits, dim=-1)
        flat = probs.reshape(-1, probs.shape[-1]).cpu()
        sampled = torch.multinomial(flat, 1, generator=gen).view(current.shape).to(current.device)
        conf = probs.gather(-1, sampled[..., None])[..., 0]
        noise_scale = choice_noise * (1.0 - (t + 1) / steps)
        u = torch.rand(conf.shape, generator=gen).to(conf.device).clamp(1e-9, 1 - 1e-9)
        score = conf.clamp_min(1e-12).log() - noise_scale * torch.log(-torch.log(u))
        score = torch.where(still, score, torch.full_like(score, math.inf))
        keep_masked = counts[t]
        new_still = torch.zeros_like(still)
        if keep_masked > 0:
            lowest = score.flatten(1).topk(keep_masked, dim=1, largest=False).indices
            new_still.view(n, -1).scatter_(1, lowest, True)
        newly = still & ~new_still
        current = torch.where(newly, sampled, current)
        shown = torch.where(new_still, sampled, current)
        rec["tokens"].append(shown.cpu().numpy())
        rec["fixed"].append((~new_still).cpu().numpy())
        rec["new"].append(newly.cpu().numpy())
        rec["confidence"].append(torch.where(still, conf, torch.full_like(conf, float("nan"))).cpu().numpy())
        still = new_still
    return DecodeTrace(**{k: np.stack(v) for k, v in rec.items()}, counts=counts)


def random_mask_ratio(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Training mask ratios gamma_cosine(u), u ~ U(0, 1): most maps heavily masked, as in MaskGIT."""
    u = torch.rand(n, generator=generator)
    return torch.cos(math.pi / 2 * u)


def config_dict(model: MaskGIT) -> dict[str, Any]:
    return {"model": "maskgit", **asdict(model.config)}


def load_maskgit(path: Path | str = SHIPPED) -> MaskGIT:
    """A MaskGIT from a safetensors file written by ``backends.training.maskgit`` (eval mode, CPU)."""
    meta = load_metadata(path)
    fields = {f: int(meta[f]) for f in MaskGITConfig.__dataclass_fields__ if f in meta}
    model = MaskGIT(MaskGITConfig(**fields))
    model.load_state_dict(load_weights(path))
    return model.eval()


def shipped_maskgit(device: torch.device | str | None = None) -> MaskGIT:
    """The shipped transformer on ``device``, loaded once per file version (the model cache)."""
    return cached_model(SHIPPED, load_maskgit, device)
