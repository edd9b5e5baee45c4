"""The StyleGAN operator's loaded model and its panels: grids of faces decoded from latents.

``StyleModel`` holds one generator with its latent directions, the fixed noise maps and a cache of
each seed's mapped w; the panel builders turn latents into image grids (HWC tensors, upscaled) and
name their rows and columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from backends.imaging import hwc, image_grid
from backends.layers import CurveLayer, ImageLayer, MetricsLayer, Result
from backends.models.attribute_classifier import load_classifier
from backends.models.stylegan import (
    ATTRIBUTE_DIRECTIONS,
    LAYER_GROUPS,
    NOISE_LAYERS,
    NUM_WS,
    Generator,
    attributes_from_z,
    load_directions,
    load_generator,
    mix_styles,
    slerp,
    to_unit,
    truncate,
    z_from_seed,
)
from backends.models.stylegan_projection import Projection, projection_target

NUM_PCS = 5
PAIR_SCALE = 4  # the projection's target and result
GRID_SCALE = 4  # grids and strips
FRAME_PX = 6  # the seed browser's frame, in the grid's pixels: about 2 screen pixels as docked
BROWSER_SIDE = 4
STRIP = 8
DIRECTION_STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)
TRUNCATION_STRIP = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
W_CACHE_LIMIT = 4096  # seeds whose w is kept; the cache starts over beyond it


@dataclass
class StyleModel:
    """A generator with its directions, the fixed ('on') noise maps and each seed's mapped w."""

    G: Generator
    dirs: dict[str, torch.Tensor]
    key: tuple
    noise_maps: list[torch.Tensor]
    w_cache: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, dirs_path: Path, device: torch.device) -> StyleModel:
        G = load_generator(path, device=str(device))
        dirs = {k: v.to(device) for k, v in load_directions(dirs_path).items()}
        key = (str(path), path.stat().st_mtime_ns, str(device))
        return cls(G, dirs, key, G.synthesis.make_noise(1, "const", device=device))

    def ws(self, seeds: Sequence[int]) -> torch.Tensor:
        """(N, NUM_WS, W_DIM) for the seeds, mapping only the uncached ones, in one batch."""
        missing = [s for s in dict.fromkeys(seeds) if s not in self.w_cache]
        if missing:
            if len(self.w_cache) + len(missing) > W_CACHE_LIMIT:
                self.w_cache.clear()
                missing = list(dict.fromkeys(seeds))
            w = self.G.mapping(z_from_seed(missing, self.G.w_avg.device))
            self.w_cache.update(zip(missing, w))
        return torch.stack([self.w_cache[s] for s in seeds])[:, None].expand(-1, NUM_WS, -1)

    def synth(self, ws: torch.Tensor, noise: str, gains: Optional[Sequence[float]] = None) -> torch.Tensor:
        """(N, NUM_WS, W_DIM) -> (N, 3, 32, 32) in [0, 1]; ``noise`` 'off' drops the noise inputs."""
        n = ws.shape[0]
        maps = [None] * NOISE_LAYERS if noise == "off" else [m.expand(n, -1, -1, -1) for m in self.noise_maps]
        return to_unit(self.G.synthesis(ws, maps, gains))

    def truncate(self, ws: torch.Tensor, psi: float) -> torch.Tensor:
        return truncate(ws, self.G.w_avg, psi)

    def edit_delta(self, params: Mapping[str, Any]) -> torch.Tensor:
        """(NUM_WS, W_DIM) offset of the direction sliders, restricted to ``edit_layers``."""
        d = self.dirs
        delta = torch.zeros_like(self.G.w_avg)
        for k in range(NUM_PCS):
            v = float(params[f"pc_{k + 1}"])
            if v:
                delta = delta + v * d["pca.std"][k] * d["pca.directions"][k]
        for a in ATTRIBUTE_DIRECTIONS:
            v = float(params[a])
            if v:
                delta = delta + v * d[f"attr.{a}.std"] * d[f"attr.{a}.direction"]
        mask = torch.zeros(NUM_WS, 1, device=delta.device)
        layers = range(NUM_WS) if params["edit_layers"] == "all" else LAYER_GROUPS[params["edit_layers"]]
        mask[list(layers)] = 1.0
        return mask * delta

    def cosine(self, a: str, b: str) -> float:
        return round(float(self.dirs[a] @ self.dirs[b]), 3)


def face_image(face: torch.Tensor) -> torch.Tensor:
    """(3, 32, 32) -> (32, 32, 3): one face, which the view draws at a whole-number scale."""
    return hwc(face)


def faces_grid(images: torch.Tensor, columns: int, scale: int = GRID_SCALE, highlight: Optional[int] = None) -> torch.Tensor:
    return hwc(image_grid(images, columns, scale=scale, highlight=highlight, highlight_width=FRAME_PX))


def signed(v: float) -> str:
    """A step along a direction as a column label: '-2', '0', '+1'."""
    return "0" if v == 0 else f"{v:+g}"


def mean_face(m: StyleModel, noise: str) -> torch.Tensor:
    return face_image(m.synth(m.G.w_avg[None, None].expand(1, NUM_WS, -1), noise)[0])


def mixing_strip(m: StyleModel, base: torch.Tensor, ws_b: torch.Tensor, psi: float, noise: str) -> torch.Tensor:
    """A | B | A with B's coarse, middle and fine styles."""
    a = m.truncate(base, psi)
    rows = [a, ws_b] + [mix_styles(a, ws_b, LAYER_GROUPS[g]) for g in ("coarse", "middle", "fine")]
    return faces_grid(m.synth(torch.cat(rows), noise), 5)


def browser_first(seed: int) -> int:
    """The first seed of the browser grid, which holds ``seed`` near its middle."""
    return max(0, seed - (BROWSER_SIDE * BROWSER_SIDE // 2 - 1))


def seed_browser(m: StyleModel, seed: int, noise: str) -> torch.Tensor:
    first = browser_first(seed)
    faces = m.synth(m.ws(list(range(first, first + BROWSER_SIDE * BROWSER_SIDE))), noise)
    return faces_grid(faces, BROWSER_SIDE, highlight=seed - first)


def truncation_strip(m: StyleModel, base: torch.Tensor, noise: str) -> torch.Tensor:
    """The base latent at each psi of ``TRUNCATION_STRIP``, left to right."""
    faces = m.synth(torch.cat([m.truncate(base, p) for p in TRUNCATION_STRIP]), noise)
    return faces_grid(faces, len(TRUNCATION_STRIP))


def interpolations(m: StyleModel, seed: int, mix_seed: int, noise: str) -> dict[str, Any]:
    """Two rows from seed to mix_seed, by slerp in z (top) and by lerp in w (bottom), with the mean
    and largest pixel change between neighbours (how evenly the image changes along the path)."""
    dev = m.G.w_avg.device
    t = torch.linspace(0, 1, STRIP, device=dev)[:, None]
    za, zb = z_from_seed([seed, mix_seed], dev)
    ws_z = m.G.mapping(slerp(za, zb, t))[:, None].expand(-1, NUM_WS, -1)
    wa, wb = m.ws([seed, mix_seed])[:, 0]
    ws_w = (wa + t * (wb - wa))[:, None].expand(-1, NUM_WS, -1)
    imgs = m.synth(torch.cat([ws_z, ws_w]), noise)
    out: dict[str, Any] = {"grid": faces_grid(imgs, STRIP)}
    for k, strip in (("z", imgs[:STRIP]), ("w", imgs[STRIP:])):
        steps = (strip[1:] - strip[:-1]).abs().mean((1, 2, 3))
        out[f"{k}_step"], out[f"{k}_max"] = float(steps.mean()), float(steps.max())
    return out


def direction_grids(m: StyleModel, base: torch.Tensor, noise: str) -> dict[str, torch.Tensor]:
    """Rows: each principal (or attribute) direction; columns: ``DIRECTION_STEPS`` units along it."""
    d = m.dirs
    steps = torch.tensor(DIRECTION_STEPS, device=base.device)[:, None, None]
    rows = [base + steps * d["pca.std"][k] * d["pca.directions"][k] for k in range(NUM_PCS)]
    pca = m.synth(torch.cat(rows), noise)
    rows = [base + steps * d[f"attr.{a}.std"] * d[f"attr.{a}.direction"] for a in ATTRIBUTE_DIRECTIONS]
    attr = m.synth(torch.cat(rows), noise)
    return {"pca": faces_grid(pca, len(DIRECTION_STEPS)), "attr": faces_grid(attr, len(DIRECTION_STEPS))}


def projection_layers(m: StyleModel, image: torch.Tensor, fit: Optional[Projection]) -> tuple[ImageLayer, CurveLayer]:
    """Target beside the projection's image, and the loss curve of the fit."""
    target = projection_target(image)
    if fit is None or not fit.steps:
        pair = torch.cat([target, torch.full_like(target, 0.15)])
        caption = "the input image at 32x32 | press Project to find its latent"
        curve = {"loss": (np.zeros(1, np.float32), np.zeros(1, np.float32))}
    else:
        pair = torch.cat([fit.target, m.synth(fit.ws, "on")])
        caption = f"projection in {fit.space}: loss {fit.loss[0]:.4f} -> {fit.loss[-1]:.4f} after {fit.steps[-1]} steps"
        curve = {"loss": (np.asarray(fit.steps, np.float32), np.asarray(fit.loss, np.float32))}
    return (
        ImageLayer("Projection", faces_grid(pair, 2, scale=PAIR_SCALE), levels=(0.0, 1.0), caption=caption,
                   column_labels=("target", "projection")),
        CurveLayer("Projection loss", curve, x_label="step", y_label="MSE + feature loss", log_y=False,
                   caption="pixel MSE plus the attribute classifier's feature distance"),
    )


def readout(face: torch.Tensor) -> tuple[tuple[str, ...], np.ndarray, str]:
    """The attribute classifier's reading of ``face`` (1, 3, 32, 32): labels, values, caption."""
    _, logits, reg = load_classifier(device=str(face.device))(face)
    p = {k: torch.softmax(v, 1)[0] for k, v in logits.items()}
    labels = ("smile (+) or frown (-)", "glasses", "no hair", "short hair", "long hair", "tilt (1 = 30 deg)")
    values = np.array([float(reg[0, 0]), float(p["glasses"][1]), *[float(v) for v in p["hair"]], float(reg[0, 1])], np.float32)
    caption = (f"smile {values[0]:+.2f} ({'smile' if values[0] > 0 else 'frown'}), tilt {values[5] * 30:+.1f} deg, "
               f"glasses {values[1]:.0%}, hair {('none', 'short', 'long')[int(p['hair'].argmax())]}")
    return labels, values, caption


def conditioning_text(G: Generator, params: Mapping[str, Any]) -> str:
    """The attributes a conditional generator reads from the seed's z (empty otherwise)."""
    if not G.c_dim or params["source"] != "seed":
        return ""
    c = attributes_from_z(z_from_seed(int(params["seed"])))[0]
    hair = ("no hair", "short hair", "long hair")[int(c[3:].argmax())]
    return (f" (c: mouth {float(c[0]):+.2f}, tilt {float(c[1]) * 30:+.0f} deg, "
            f"{'glasses' if c[2] > 0.5 else 'no glasses'}, {hair})")


@torch.no_grad()
def train_preview(trainer, total: int, seconds: float) -> Result:
    """Loss curves, 16 fixed-z samples of the EMA generator and the recent losses of a Train job."""
    hist = trainer.history
    steps = np.asarray([h["step"] for h in hist], np.float32)
    curves = {name: (steps, np.asarray([h[k] for h in hist], np.float32))
              for name, k in (("discriminator", "loss_d"), ("generator", "loss_g"))}
    return Result((
        CurveLayer("Training loss", curves, x_label="step", y_label="logistic loss", log_y=False,
                   caption="discriminator and generator (non-saturating) losses; a GAN's losses need not fall"),
        ImageLayer("Training samples", faces_grid(trainer.samples(16, seed=123), 8), levels=(0.0, 1.0),
                   caption="the EMA generator on 16 fixed z (attributes from z), psi 1, refreshed while training"),
        MetricsLayer("Training", {"step": trainer.step_i, "of": total, "seconds": round(seconds, 1),
                                  **{k: round(float(np.mean([h[k] for h in hist[-50:] if k in h])), 3)
                                     for k in ("loss_d", "loss_g", "d_real", "d_fake")}}),
    ))
