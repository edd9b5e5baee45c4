"""A small VQ-VAE (van den Oord et al. 2017) that tokenizes any RGB image at 1/4 resolution.

Fully convolutional: an image (N, 3, H, W) with H, W multiples of 4 becomes a token map
(N, H/4, W/4) of indices into a codebook of K vectors of dimension D. The codebook is updated by
exponential moving averages of the encoder outputs assigned to each code (no codebook loss), the
encoder is held near its codes by a commitment loss, and codes left unused for a while are
restarted at random encoder outputs so that perplexity (the effective number of codes in use)
stays high.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_metadata, load_weights

DOWNSAMPLE = 4
SHIPPED = WEIGHTS_DIR / "vqvae_patches.safetensors"


@dataclass(frozen=True)
class VQVAEConfig:
    codes: int = 128
    code_dim: int = 16
    channels: int = 64
    decay: float = 0.99
    commitment: float = 0.25


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EMAQuantizer(nn.Module):
    """Nearest-code quantization with an EMA-updated codebook and dead-code restarts."""

    def __init__(self, codes: int, dim: int, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("embed", torch.randn(codes, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(codes))
        self.register_buffer("ema_sum", self.embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("recent_usage", torch.zeros(codes), persistent=False)

    @property
    def codes(self) -> int:
        return self.embed.shape[0]

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Indices (M,) of the nearest code to each row of ``flat`` (M, D)."""
        d = flat.square().sum(1, keepdim=True) - 2 * flat @ self.embed.T + self.embed.square().sum(1)[None]
        return d.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Token map (N, h, w) -> code vectors (N, D, h, w)."""
        return F.embedding(indices, self.embed).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, D, h, w) -> straight-through quantized z, indices (N, h, w), commitment MSE."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training and not bool(self.initialized):
            self._init_from(flat.detach())
        idx = self.nearest(flat.detach())
        q = self.embed[idx]
        if self.training:
            self._ema_update(flat.detach(), idx)
        commit = F.mse_loss(flat, q.detach())
        q_st = flat + (q - flat).detach()  # straight-through: the decoder's gradient reaches the encoder
        return q_st.view(n, h, w, d).permute(0, 3, 1, 2).contiguous(), idx.view(n, h, w), commit

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        pick = torch.randint(0, flat.shape[0], (self.codes,), device=flat.device)
        self.embed.copy_(flat[pick])
        self.ema_sum.copy_(self.embed)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        onehot = F.one_hot(idx, self.codes).type_as(flat)
        used = onehot.sum(0)
        self.recent_usage.add_(used)
        self.ema_count.mul_(self.decay).add_(used, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.codes * 1e-5) * n  # Laplace smoothing
        self.embed.copy_(self.ema_sum / count[:, None])

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor, min_usage: float = 1.0) -> int:
        """Moves codes used fewer than ``min_usage`` times since the last call onto random encoder
        outputs ``flat`` (M, D) of the current batch, and starts a new usage window."""
        dead = (self.recent_usage < min_usage).nonzero().flatten()
        self.recent_usage.zero_()
        if len(dead) == 0:
            return 0
        pick = torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)
        self.embed[dead] = flat[pick] + 0.01 * torch.randn_like(flat[pick])
        self.ema_count[dead] = self.ema_count.mean()
        self.ema_sum[dead] = self.embed[dead] * self.ema_count[dead, None]
        return int(len(dead))


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig = VQVAEConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c // 2, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c // 2, c, 4, 2, 1),
            ResBlock(c), ResBlock(c), nn.ReLU(),
            nn.Conv2d(c, config.code_dim, 1),
        )
        self.quantizer = EMAQuantizer(config.codes, config.code_dim, config.decay)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.code_dim, c, 3, 1, 1),
            ResBlock(c), ResBlock(c), nn.ReLU(),
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c // 2, 3, 4, 2, 1),
        )

    @property
    def codes(self) -> int:
        return self.config.codes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1], H and W multiples of 4 -> tokens (N, H/4, W/4) int64."""
        _check_size(x)
        z = self.encoder(x - 0.5)
        n, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(n, h, w)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (N, h, w) -> images (N, 3, 4h, 4w), clamped to [0, 1]."""
        return self.decode_codes(self.quantizer.lookup(tokens))

    def decode_codes(self, q: torch.Tensor) -> torch.Tensor:
        return (self.decoder(q) + 0.5).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_size(x)
        z = self.encoder(x - 0.5)
        q, idx, commit = self.quantizer(z)
        recon = self.decoder(q) + 0.5
        mse = F.mse_loss(recon, x)
        return {"recon": recon, "tokens": idx, "z": z, "mse": mse, "commit": commit,
                "loss": mse + self.config.commitment * commit}


def _check_size(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % DOWNSAMPLE or x.shape[3] % DOWNSAMPLE:
        raise ValueError(f"VQ-VAE expects (N, 3, H, W) with H and W multiples of {DOWNSAMPLE}, got {tuple(x.shape)}")


def perplexity(tokens: torch.Tensor, codes: int) -> float:
    """exp(entropy) of the code histogram: the effective number of codes in use."""
    p = torch.bincount(tokens.flatten(), minlength=codes).float()
    p = p / p.sum().clamp_min(1)
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum()))


def config_dict(model: VQVAE) -> dict[str, Any]:
    return {"model": "vqvae", **asdict(model.config)}


def load_vqvae(path: Path | str = SHIPPED) -> VQVAE:
    """A VQ-VAE from a safetensors file written by ``backends.training.vqvae`` (eval mode, CPU)."""
    meta = load_metadata(path)
    fields = {f: type(getattr(VQVAEConfig, f))(meta[f]) for f in VQVAEConfig.__dataclass_fields__ if f in meta}
    model = VQVAE(VQVAEConfig(**fields))
    model.load_state_dict(load_weights(path))
    return model.eval()


def shipped_vqvae(device: torch.device | str | None = None) -> VQVAE:
    """The shipped tokenizer on ``device``, loaded once per file version (the model cache)."""
    return cached_model(SHIPPED, load_vqvae, device)
