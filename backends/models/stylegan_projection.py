"""Projection: the w (one style for every layer) or w+ (one per layer) whose image reproduces a
target face, found by gradient descent through the frozen generator.

The loss is the pixel MSE plus a small distance in the attribute classifier's features (so the
fit keeps the attributes, not only the colours). The start is the best of w_avg and a few seeds'
w by pixel error: cheap, and it avoids a bad basin. The StyleGAN operator's Project action and
the documentation pictures run this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from backends.functional.optim import Adam
from backends.imaging import resize
from backends.models.attribute_classifier import AttributeClassifier, load_classifier
from backends.models.stylegan import NUM_WS, Generator, to_unit, z_from_seed

SIZE = 32
FEATURE_WEIGHT = 0.01  # the feature distance is ~100x the pixel MSE at the start
START_SEEDS = 64
SPACES = ("w", "w+")


@dataclass
class Projection:
    """A fit in progress: the latent so far, broadcast to every layer, and the loss per step."""

    ws: torch.Tensor  # (1, NUM_WS, W_DIM)
    target: torch.Tensor  # (1, 3, 32, 32) in [0, 1]
    space: str
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)


def projection_target(image: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> the first three channels squeezed to (1, 3, 32, 32) in [0, 1]: the whole
    frame, not a crop (area average when shrinking, bilinear when growing)."""
    return resize(image[:, :3].float(), (SIZE, SIZE)).clamp(0, 1)


def synthesize(G: Generator, ws: torch.Tensor) -> torch.Tensor:
    """(N, NUM_WS, W_DIM) -> (N, 3, 32, 32) in [0, 1] with the fixed noise maps the fit uses."""
    noise = G.synthesis.make_noise(len(ws), "const", device=ws.device)
    return to_unit(G.synthesis(ws, noise))


@torch.no_grad()
def start_latent(G: Generator, target: torch.Tensor, seeds: int = START_SEEDS) -> torch.Tensor:
    """(W_DIM,): whichever of w_avg and the w of seeds 0..seeds-1 decodes closest to ``target``."""
    cands = torch.cat([G.w_avg[None], G.mapping(z_from_seed(list(range(seeds)), G.w_avg.device))])
    errs = (synthesize(G, cands[:, None].expand(-1, NUM_WS, -1)) - target).pow(2).mean((1, 2, 3))
    return cands[int(errs.argmin())]


def project(G: Generator, target: torch.Tensor, space: str = "w+", steps: int = 200, lr: float = 0.05,
            classifier: Optional[AttributeClassifier] = None) -> Iterator[Projection]:
    """Fits ``target`` (1, 3, 32, 32) in ``space`` ("w" or "w+") with ``steps`` Adam steps of
    size ``lr``; yields the same :class:`Projection` after every step, updated (so a caller can
    stop early and keep it). Enables autograd itself: callers may run with it off."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if target.shape != (1, 3, SIZE, SIZE):
        raise ValueError(f"project expects a (1, 3, {SIZE}, {SIZE}) target, got {tuple(target.shape)}")
    clf = classifier or load_classifier(device=str(target.device))
    with torch.no_grad():
        target_features = clf.features(target)
    start = start_latent(G, target)
    lat = start[None, None].repeat(1, NUM_WS if space == "w+" else 1, 1).requires_grad_(True)
    opt = Adam([lat], lr=lr)
    fit = Projection(lat.detach().expand(1, NUM_WS, -1).clone(), target, space)
    for step in range(1, steps + 1):
        with torch.enable_grad():
            img = synthesize(G, lat.expand(1, NUM_WS, -1))
            loss = F.mse_loss(img, target) + FEATURE_WEIGHT * (clf.features(img) - target_features).pow(2).mean()
            (grad,) = torch.autograd.grad(loss, lat)  # the latent's alone: the classifier is shared
        opt.step([grad])
        fit.ws = lat.detach().expand(1, NUM_WS, -1).clone()
        fit.steps.append(step)
        fit.loss.append(loss.item())
        yield fit
