"""The VAE explorer's panels: grids of decoded latents with their rows and columns named, the
posterior as bars, the training preview, and a caption that says in words what z is.

Every grid is (H, W, 3) with 32x32 tiles a pixel apart; rows and columns carry labels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from backends.data import sampler
from backends.imaging import hwc, image_grid
from backends.layers import BarsLayer, CurveLayer, ImageLayer, MetricsLayer, Result
from backends.models.vae import SIZE, VAE, kl_per_dim, reparameterize

RANGE = 3.0
TRAVERSAL_STEPS = 7  # -3 .. +3 in whole units: one labelled column per unit
PLANE_STEPS = 7
INTERP_STEPS = 9
POSTERIOR_SAMPLES = 8
PRIOR_SAMPLES = 16
PRIOR_COLUMNS = 4  # a square grid: the view can draw it at twice its size
CELL = SIZE + 1  # a tile and the pixel between tiles
UNUSED_KL = 0.1  # nats: a dimension whose KL is below this carries no information about the image


def grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, 3, 32, 32) -> one (H, W, 3) image, ``columns`` tiles a row, a pixel between tiles."""
    return hwc(image_grid(images, columns))


def signed(v: float) -> str:
    """A latent value as a column label: '-3', '0', '+1.5'."""
    return "0" if v == 0 else f"{v:+g}"


def value_labels(steps: int) -> tuple[str, ...]:
    return tuple(signed(float(v)) for v in np.linspace(-RANGE, RANGE, steps))


def dim_names(d: int) -> tuple[str, ...]:
    return tuple(f"z{i}" for i in range(d))


def traversal(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """Row k: ``z`` with z_k swept over -3..+3 (``TRAVERSAL_STEPS`` columns)."""
    d = z.shape[0]
    values = torch.linspace(-RANGE, RANGE, TRAVERSAL_STEPS, device=z.device)
    zs = z.repeat(d, TRAVERSAL_STEPS, 1)  # (d, steps, d)
    idx = torch.arange(d, device=z.device)
    zs[idx, :, idx] = values[None, :]
    return grid(model.decode(zs.view(-1, d)), TRAVERSAL_STEPS)


def traversal_layer(image: torch.Tensor, d: int, source: str, kl: torch.Tensor) -> ImageLayer:
    held = {"dataset sample": "the dataset sample's encoding", "encode input": "the input's encoding",
            "prior sample": "the prior draw", "sliders": "0"}[source]
    unused = [f"z{i}" for i in range(d) if float(kl[i]) < UNUSED_KL]
    note = (f"; unused by this encoding (KL < {UNUSED_KL:g} nats): {', '.join(unused)}"
            if unused and source in ("dataset sample", "encode input") else "")
    return ImageLayer("Traversal", image, levels=(0.0, 1.0), row_labels=dim_names(d),
                      column_labels=value_labels(TRAVERSAL_STEPS), axis_titles=("value of z_k", ""),
                      caption=f"row z_k sweeps z_k from -3 to +3, the other dimensions held at {held} "
                              f"(without the slider edits){note}")


def plane_tiles(model: VAE, z: torch.Tensor, px: int, py: int) -> torch.Tensor:
    """The plane's picture: tiles decoding z with z_px and z_py set to -3..+3 (y up is positive).
    It does not read z_px or z_py, so moving either only moves the frame."""
    d = z.shape[0]
    values = torch.linspace(-RANGE, RANGE, PLANE_STEPS, device=z.device)
    zs = z.repeat(PLANE_STEPS, PLANE_STEPS, 1)
    zs[:, :, py] = values.flip(0)[:, None]  # up is positive
    zs[:, :, px] = values[None, :]
    return grid(model.decode(zs.view(-1, d)), PLANE_STEPS)


def plane(tiles: torch.Tensor, z: torch.Tensor, px: int, py: int) -> ImageLayer:
    """:func:`plane_tiles` with ``z`` framed on the tile that would decode it."""
    span = (PLANE_STEPS - 1) / (2 * RANGE)  # tiles per latent unit
    left = (float(z[px].clamp(-RANGE, RANGE)) * span + (PLANE_STEPS - 1) / 2) * CELL  # edge of z's tile
    top = ((PLANE_STEPS - 1) / 2 - float(z[py].clamp(-RANGE, RANGE)) * span) * CELL
    same = " (the same dimension on both axes)" if px == py else ""
    labels = value_labels(PLANE_STEPS)
    return ImageLayer("Latent plane", tiles, levels=(0.0, 1.0), column_labels=labels, row_labels=labels[::-1],
                      axis_titles=(f"z{px}", f"z{py}"), boxes=((left, top, float(SIZE), float(SIZE)),),
                      caption=f"z{px} left to right, z{py} bottom to top; the other dimensions as in z{same}; "
                              "the frame is the current z")


def _listing(pairs: Sequence[tuple[int, float]], most: int = 3) -> str:
    """'z3 (+1.5) and z7 (-2.0)', the ``most`` largest first, and how many more."""
    pairs = sorted(pairs, key=lambda p: -abs(p[1]))
    parts = [f"z{i} ({v:+.1f})" for i, v in pairs[:most]]
    more = len(pairs) - most
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text + (f" and {more} more" if more > 0 else "")


def z_caption(source: str, origin: str, sliders: torch.Tensor, z: torch.Tensor) -> str:
    """What z is, in words: where it comes from, which sliders edit it, its largest components."""
    moved = [(i, float(v)) for i, v in enumerate(sliders) if abs(float(v)) >= 0.005]
    if source == "sliders":
        if not moved:
            return "decode(z) with z = 0, the prior's mean (every slider at 0)"
        return f"decode(z), z set by the sliders: {_listing(moved, 4)}, the other dimensions 0"
    edits = f"edited on {_listing(moved)}" if moved else "no slider edits"
    top = sorted(enumerate(z.tolist()), key=lambda p: -abs(p[1]))[:3]
    return f"decode(z), z = {origin}, {edits}; largest: " + ", ".join(f"z{i} = {v:+.1f}" for i, v in top)


def posterior_layers(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset: str,
                     seed: int, encoded_text: str) -> tuple:
    """Panels that depend only on the encoded image and seed, not on the sliders."""
    d = mu.shape[1]
    labels = dim_names(d)
    sigma = torch.exp(0.5 * logvar)
    eps = torch.randn((POSTERIOR_SAMPLES, d), generator=torch.Generator().manual_seed(seed + 1)).to(mu.device)
    zs = reparameterize(mu, logvar, eps)
    recon = model.decode(mu)
    other, _ = sampler(dataset)(1, seed + 1)
    mu_b, _ = model.encode(other.to(mu.device))
    t = torch.linspace(0.0, 1.0, INTERP_STEPS, device=mu.device)[:, None]
    interp = model.decode((1 - t) * mu + t * mu_b)
    kl = kl_per_dim(mu, logvar)[0]
    t_labels = tuple(f"{float(v):g}" if i % 2 == 0 else "" for i, v in enumerate(t[:, 0]))
    return (
        ImageLayer("Encoded image", grid(torch.cat([x, recon]), 2), levels=(0.0, 1.0),
                   column_labels=("encoded", "decode(mu)"),
                   caption=f"the 32x32 image encoded ({encoded_text}) and decode(mu), its reconstruction"),
        BarsLayer("Posterior mu, sigma", labels, {"mu": mu[0], "sigma": sigma[0]}, value_label="latent units",
                  caption="q(z|x) = N(mu, sigma^2) per dimension: sigma near 1 and mu near 0 is the prior, an unused dimension"),
        BarsLayer("KL per dimension", labels, {"KL to N(0, 1)": kl}, value_label="nats",
                  caption=f"KL(q(z_k|x) || N(0, 1)): the information each dimension carries about this image; "
                          f"{float(kl.sum()):.1f} nats in all"),
        BarsLayer("Reparameterization", labels,
                  {"mu": mu[0], "sigma * eps": (sigma * eps[:1])[0], "z = mu + sigma * eps": zs[0]}, value_label="latent units",
                  caption=f"eps ~ N(0, I) (seed {seed + 1}) is an input; z is a differentiable function of mu and sigma"),
        ImageLayer("Posterior samples", grid(model.decode(zs), POSTERIOR_SAMPLES), levels=(0.0, 1.0),
                   caption=f"decode(mu + sigma * eps) for {POSTERIOR_SAMPLES} draws of eps: the spread of q(z|x)"),
        ImageLayer("Interpolation", grid(interp, INTERP_STEPS), levels=(0.0, 1.0), column_labels=t_labels,
                   axis_titles=("t", ""),
                   caption=f"decode((1 - t) mu + t mu'), from this encoding (t = 0) to that of {dataset} sample {seed + 1} (t = 1)"),
    )


def prior_samples(model: VAE, seed: int, device: torch.device) -> torch.Tensor:
    z = torch.randn((PRIOR_SAMPLES, model.latent_dim), generator=torch.Generator().manual_seed(seed)).to(device)
    return grid(model.decode(z), PRIOR_COLUMNS)


@torch.no_grad()
def train_preview(trainer, fixed: torch.Tensor, held: torch.Tensor, seconds: float, total: int) -> Result:
    """The loss curves (KL against its own axis), samples of fixed z, held-out reconstructions."""
    model = trainer.model
    steps = np.arange(1, trainer.steps_done + 1, dtype=np.float32)
    hist = {k: np.asarray(v, np.float32) for k, v in trainer.history.items()}
    recon = model.decode(model.encode(held)[0])
    return Result((
        CurveLayer("Training loss", {"loss": (steps, hist["loss"]), "reconstruction": (steps, hist["recon"]),
                                     "KL": (steps, hist["kl"])},
                   x_label="step", y_label="loss, reconstruction (nats per image)", log_y=True,
                   right=("KL",), right_label="KL (nats per image)",
                   caption="loss = reconstruction + beta KL, the KL weight ramping up to beta over the warm-up"),
        ImageLayer("Training samples", grid(model.decode(fixed), 8), levels=(0.0, 1.0),
                   caption="decode(z) for 16 fixed z ~ N(0, I), refreshed while training"),
        ImageLayer("Training reconstructions", grid(torch.cat([held, recon]), 8), levels=(0.0, 1.0),
                   row_labels=("held out", "decoded"),
                   caption=f"top: held-out {trainer.dataset}; bottom: their reconstructions"),
        MetricsLayer("Training", {"step": trainer.steps_done, "of": total, "beta": trainer.beta,
                                  "KL weight now": round(trainer.current_beta(), 3),
                                  **{k: round(v, 3) for k, v in trainer.recent(50).items()},
                                  "seconds": round(seconds, 1)}),
    ))
