"""A small convolutional (beta-)VAE for 32x32 RGB images, in the manner of Burgess et al. (2018).

Encoder: three 4x4 stride-2 convolutions (32, 32, 64 channels) to 4x4, two linear layers to the
mean and log-variance of a diagonal Gaussian q(z | x). Decoder: the mirror image, ending in
logits of Bernoulli pixel means (``decode`` returns the sigmoid, images in [0, 1]).
The loss is the negative ELBO with a weight ``beta`` on the KL term: beta > 1 trades
reconstruction for a more factorized (disentangled) code.
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

SIZE = 32


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 10
    channels: int = 32
    hidden: int = 256


class VAE(nn.Module):
    def __init__(self, config: VAEConfig = VAEConfig()) -> None:
        super().__init__()
        self.config = config
        c, h = config.channels, config.hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 4, 2, 1), nn.ReLU(),  # 16x16
            nn.Conv2d(c, c, 4, 2, 1), nn.ReLU(),  # 8x8
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),  # 4x4
            nn.Flatten(),
            nn.Linear(2 * c * 16, h), nn.ReLU(),
            nn.Linear(h, 2 * config.latent_dim),
        )
        self.decoder_fc = nn.Sequential(
            nn.Linear(config.latent_dim, h), nn.ReLU(),
            nn.Linear(h, 2 * c * 16), nn.ReLU(),
        )
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),  # 8x8
            nn.ConvTranspose2d(c, c, 4, 2, 1), nn.ReLU(),  # 16x16
            nn.ConvTranspose2d(c, 3, 4, 2, 1),  # 32x32 logits
        )

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3, 32, 32) in [0, 1] -> mu, logvar, each (N, latent_dim)."""
        if x.shape[-3:] != (3, SIZE, SIZE):
            raise ValueError(f"VAE.encode expects (N, 3, {SIZE}, {SIZE}), got {tuple(x.shape)}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, latent_dim) -> pixel logits (N, 3, 32, 32)."""
        h = self.decoder_fc(z).view(-1, 2 * self.config.channels, 4, 4)
        return self.decoder_conv(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, latent_dim) -> images (N, 3, 32, 32) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """Reconstruction logits, mu, logvar and the sampled z = mu + sigma * eps."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = reparameterize(mu, logvar, eps)
        return self.decode_logits(z), mu, logvar, z


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2): the sample is a differentiable function of
    (mu, logvar) and the noise is an input, so gradients flow through the sampling step."""
    return mu + torch.exp(0.5 * logvar) * eps


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, (N, D)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def vae_loss(model: VAE, x: torch.Tensor, beta: float, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Negative ELBO with a beta-weighted KL, per image (summed over pixels, mean over the batch)."""
    logits, mu, logvar, _ = model(x, eps)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    kl = kl_per_dim(mu, logvar).sum(1).mean()
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


def subpixel_conv(ct: nn.ConvTranspose2d) -> nn.Sequential:
    """An exact stand-in for ``ConvTranspose2d(k=4, stride=2, padding=1)``: a 3x3 convolution to
    4x the channels followed by ``PixelShuffle(2)``, faster on CPUs for small batches.

    Output pixel (2i + a, 2j + b) of the transposed convolution sums input (i + dy, j + dx) times
    tap (a + 1 - 2 dy, b + 1 - 2 dx) for dy, dx in {-1, 0, 1}; each phase (a, b) is one group of
    output channels of the 3x3 convolution.
    """
    k, s, p = ct.kernel_size[0], ct.stride[0], ct.padding[0]
    if (k, s, p) != (4, 2, 1) or ct.kernel_size[1] != 4 or ct.groups != 1 or ct.dilation != (1, 1):
        raise ValueError(f"subpixel_conv handles ConvTranspose2d(k=4, s=2, p=1) only, got k={k}, s={s}, p={p}")
    w = ct.weight.detach()  # (C_in, C_out, 4, 4)
    cin, cout = w.shape[:2]
    weight = torch.zeros(cout, 2, 2, cin, 3, 3, dtype=w.dtype, device=w.device)
    for a in range(2):
        for b in range(2):
            for dy in (-1, 0, 1):
                ky = a + 1 - 2 * dy
                for dx in (-1, 0, 1):
                    kx = b + 1 - 2 * dx
                    if 0 <= ky < 4 and 0 <= kx < 4:
                        weight[:, a, b, :, dy + 1, dx + 1] = w[:, :, ky, kx].T
    conv = nn.Conv2d(cin, 4 * cout, 3, padding=1, bias=ct.bias is not None).to(w.device, w.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(4 * cout, cin, 3, 3))
        if ct.bias is not None:
            conv.bias.copy_(ct.bias.detach().repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))


def for_inference(model: VAE) -> VAE:
    """``model`` with its transposed convolutions replaced by ``subpixel_conv`` (same outputs), in
    eval mode: used by the live explorer, where decoding dozens of latents per edit must be quick."""
    model.decoder_conv = nn.Sequential(*[subpixel_conv(m) if isinstance(m, nn.ConvTranspose2d) else m
                                         for m in model.decoder_conv])
    return model.eval()


def config_dict(model: VAE) -> dict[str, Any]:
    return {"model": "vae", **asdict(model.config)}


def load_vae(path: Path | str) -> VAE:
    """A VAE from a safetensors file written by ``backends.training.vae`` (eval mode, CPU)."""
    meta = load_metadata(path)
    fields = {k: int(meta[k]) for k in ("latent_dim", "channels", "hidden") if k in meta}
    model = VAE(VAEConfig(**fields))
    model.load_state_dict(load_weights(path))
    return model.eval()


def shipped_path(name: str) -> Path:
    """A shipped VAE: ``sprites_beta1``, ``sprites_beta4`` or ``faces``."""
    return WEIGHTS_DIR / f"vae_{name}.safetensors"


def inference_vae(path: Path, device: torch.device | str | None = None) -> VAE:
    """The VAE of ``path`` prepared ``for_inference``, one copy per file version and device."""
    return cached_model(path, _read_for_inference, device)


def _read_for_inference(path: Path) -> VAE:
    return for_inference(load_vae(path))
