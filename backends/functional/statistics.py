"""Second-order feature statistics: channel covariance, CORAL alignment and the CORAL distance.

CORAL (Sun, Feng and Saenko, "Return of Frustratingly Easy Domain Adaptation", 2016) aligns the
second-order statistics of a source to a target: centre the source, whiten it with its own
covariance, C_s^(-1/2), then re-colour it with the target's, C_t^(1/2), and (as here) move it
to the target's mean. Deep CORAL (Sun and Saenko, 2016) trains with the distance
||C_s - C_t||_F^2 / (4 d^2) between the two d x d covariances.

Features are NCHW: every pixel of an image is one sample of C features. Covariances are the
unbiased ones (divided by n - 1), as ``torch.cov`` and the papers compute them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _samples(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, C, L) -> (N, C, n) samples per channel, n = H * W (or L) >= 2."""
    if features.dim() not in (3, 4) or features.shape[-1] * (features.shape[-2] if features.dim() == 4 else 1) < 2:
        raise ValueError(f"features must be (N, C, H, W) or (N, C, L) with at least 2 samples, got {tuple(features.shape)}")
    return features.flatten(2)


def feature_mean(features: torch.Tensor) -> torch.Tensor:
    """The mean of each channel over the pixels: (N, C, H, W) -> (N, C)."""
    return _samples(features).mean(-1)


def covariance(features: torch.Tensor) -> torch.Tensor:
    """Channel covariance over the pixels, divided by n - 1: (N, C, H, W) or (N, C, L) -> (N, C, C).

    Entry (i, j) is how channels i and j vary together; the diagonal holds the variances.
    Each image of the batch is a population of its own (``torch.cov`` of each ``x[b].flatten(1)``)."""
    x = _samples(features)
    centred = x - x.mean(-1, keepdim=True)
    return centred @ centred.transpose(-1, -2) / (x.shape[-1] - 1)


def _check_square(name: str, c: torch.Tensor) -> None:
    if c.dim() < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"{name} must be (..., d, d), got {tuple(c.shape)}")


def symmetric_power(c: torch.Tensor, power: float, eps: float = 0.0) -> torch.Tensor:
    """(C + eps I)^power of symmetric positive semi-definite matrices (..., d, d) by eigh.

    Eigenvalues below zero (rounding) are taken as zero; for a negative ``power`` an eigenvalue
    of zero stays zero (the pseudo-inverse root), so a flat channel is left out, not blown up."""
    _check_square("c", c)
    values, vectors = torch.linalg.eigh(c + eps * torch.eye(c.shape[-1], dtype=c.dtype, device=c.device))
    values = values.clamp_min(0)
    if power < 0:
        floor = values.amax(-1, keepdim=True) * (c.shape[-1] * torch.finfo(c.dtype).eps)
        scaled = torch.where(values > floor, values.clamp_min(torch.finfo(c.dtype).tiny) ** power,
                             torch.zeros_like(values))
    else:
        scaled = values**power
    return (vectors * scaled.unsqueeze(-2)) @ vectors.transpose(-1, -2)


def coral_transform(source_cov: torch.Tensor, target_cov: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """The d x d matrix A = C_t^(1/2) (C_s + eps I)^(-1/2) that CORAL applies to centred source
    samples (column vectors): A C_s A^T = C_t when eps = 0 and C_s has full rank. (..., d, d)."""
    _check_square("source_cov", source_cov)
    if target_cov.shape != source_cov.shape:
        raise ValueError(f"source_cov {tuple(source_cov.shape)} and target_cov {tuple(target_cov.shape)} must match")
    return symmetric_power(target_cov, 0.5) @ symmetric_power(source_cov, -0.5, eps)


def coral_align(source: torch.Tensor, target: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """CORAL alignment of ``source`` features to ``target``'s covariance and mean.

    Args:
        source: (N, C, H, W) features of the image to change.
        target: (N, C, H', W') features whose statistics it should take (any size).
        eps: added to the source covariance's diagonal before whitening (the paper adds 1).
    Returns:
        (N, C, H, W): C_t^(1/2) (C_s + eps I)^(-1/2) (x - mu_s) + mu_t at every pixel x.
    """
    if source.dim() != 4 or target.dim() != 4 or source.shape[:2] != target.shape[:2]:
        raise ValueError(f"source and target must be (N, C, H, W) with the same N and C, got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    a = coral_transform(covariance(source), covariance(target), eps)
    return apply_affine(source, a, feature_mean(source), feature_mean(target))


def apply_affine(features: torch.Tensor, a: torch.Tensor, mean_from: torch.Tensor, mean_to: torch.Tensor) -> torch.Tensor:
    """A (x - mean_from) + mean_to at every pixel x: features (N, C, H, W), a (N, C, C), means (N, C).
    One grouped 1 x 1 convolution (a C x C matrix per image, bias mean_to - A mean_from)."""
    n, c = features.shape[:2]
    a = a.to(features.dtype)
    bias = mean_to.to(features.dtype) - (a @ mean_from.to(features.dtype)[..., None])[..., 0]
    out = F.conv2d(features.reshape(1, n * c, *features.shape[2:]), a.reshape(n * c, c, 1, 1), bias.reshape(-1), groups=n)
    return out.view(features.shape)


def coral_distance(source_cov: torch.Tensor, target_cov: torch.Tensor) -> torch.Tensor:
    """Deep CORAL's ||C_s - C_t||_F^2 / (4 d^2) of covariances (..., d, d) -> (...)."""
    _check_square("source_cov", source_cov)
    if target_cov.shape != source_cov.shape:
        raise ValueError(f"source_cov {tuple(source_cov.shape)} and target_cov {tuple(target_cov.shape)} must match")
    d = source_cov.shape[-1]
    return (source_cov - target_cov).pow(2).sum((-1, -2)) / (4 * d * d)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The CORAL distance between the covariances of two feature sets, averaged over the batch:
    source (N, C, H, W) and target (N, C, H', W') -> a scalar, differentiable in both."""
    if source.shape[:2] != target.shape[:2]:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} need the same N and C")
    return coral_distance(covariance(source), covariance(target)).mean()


class CoralLoss(nn.Module):
    """Module twin of :func:`coral_loss`: ``CoralLoss()(source_features, target_features)``."""

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return coral_loss(source, target)


class CoralAlign(nn.Module):
    """Module twin of :func:`coral_align`, with the whitening's ``eps``."""

    def __init__(self, eps: float = 0.0) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return coral_align(source, target, self.eps)
