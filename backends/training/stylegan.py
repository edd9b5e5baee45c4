"""Train the 32x32 StyleGAN-like generator on the cartoon faces: ``python -m backends.training.stylegan``.

Conditional on the true face attributes (see ``backends.models.stylegan``): reals are judged with
their own attribute vector by a projection discriminator, fakes with the c their z yields
(``attributes_from_z``, the data's attribute distribution). Non-saturating logistic loss, lazy R1 on reals, style-mixing regularization, an EMA copy of the
generator, optional mode-seeking term (MSGAN: distance between two samples' images over the
distance between their z's, kept large) against collapse. Fixed seed; checkpoints every
``--ckpt-every`` steps to ``--run-dir`` and resumes from there by default. At the end (or with
``--export-only``) the EMA generator is written as float16 safetensors with a manifest entry
holding the attribute frequencies of its samples against the data and the Frechet distance in the
attribute classifier's features.

The ``Trainer`` is a plain object with ``step()``, so the app can also drive it from a job. The
README's pictures of the shipped generator: ``python -m assets.make_stylegan_pictures``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from backends.data.faces import sample_faces
from backends.imaging import hwc, image_grid
from backends.models.stylegan import (
    C_DIM,
    NUM_WS,
    WEIGHTS_PATH,
    Z_DIM,
    Discriminator,
    Generator,
    attributes_from_z,
    attributes_to_c,
    parameter_count,
    to_unit,
)
from backends.timing import elapsed_ms, now

DEFAULT_RUN_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "opscope" / "stylegan"
DATA_SEED_BASE = 5000  # training pool chunks use seeds 5000, 5001, ...; evaluation uses seed 11
EVAL_DATA_SEED = 11
POOL_CHUNK = 1000


@dataclass
class Config:
    steps: int = 20000  # --max-minutes 60 binds first: the shipped (conditional) run stopped at 13,115
    batch: int = 32
    lr: float = 0.002
    r1_gamma: float = 0.05
    r1_every: int = 16
    mix_prob: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    ms_weight: float = 0.05
    mapping_lr_mul: float = 0.1
    pool: int = 40000
    seed: int = 0
    pac: int = 2  # PacGAN: the discriminator judges this many samples at once
    ms_pool: int = 4  # the mode-seeking distance compares images average-pooled by this factor
    bf16: bool = True  # autocast the forward passes to bfloat16 (about 2x on a CPU with AVX-512 BF16)
    conditional: bool = True  # condition G's mapping and D (projection) on the true attributes


class Trainer:
    def __init__(self, cfg: Config, run_dir: Optional[Path] = None, resume: bool = True, log=print) -> None:
        self.cfg = cfg
        self.log = log
        self.run_dir = Path(run_dir) if run_dir else None
        torch.manual_seed(cfg.seed)
        c_dim = C_DIM if cfg.conditional else 0
        self.G = Generator(mapping_lr_mul=cfg.mapping_lr_mul, c_dim=c_dim)
        self.D = Discriminator(pac=cfg.pac, c_dim=c_dim)
        self.G_ema = copy.deepcopy(self.G).eval()
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        c = cfg.r1_every / (cfg.r1_every + 1)  # lazy regularization rescales D's Adam (StyleGAN2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.0, 0.99), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step_i = 0
        self.seconds = 0.0
        self.history: list[dict] = []
        self.map_init = [p.detach().clone() for p in self.G.mapping.parameters()]
        if resume and self.run_dir and (self.run_dir / "checkpoint.pt").exists():
            self._load(self.run_dir / "checkpoint.pt")
        self.pool, self.pool_c = self._make_pool()

    # -- data ----------------------------------------------------------------------------------
    def _make_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool, 3, 32, 32) uint8 faces and their (pool, C_DIM) attribute vectors; cached in the run
        folder since drawing takes a minute."""
        n = self.cfg.pool
        cache = self.run_dir / f"pool_{n}_{DATA_SEED_BASE}.npy" if self.run_dir else None
        cache_c = self.run_dir / f"pool_{n}_{DATA_SEED_BASE}_c.npy" if self.run_dir else None
        if cache is not None and cache.exists() and cache_c.exists():
            return torch.from_numpy(np.load(cache)), torch.from_numpy(np.load(cache_c))
        chunks, cs = [], []
        for i in range(0, n, POOL_CHUNK):
            imgs, attrs = sample_faces(min(POOL_CHUNK, n - i), DATA_SEED_BASE + i // POOL_CHUNK)
            chunks.append((imgs * 255.0).round().to(torch.uint8))
            cs.append(attributes_to_c(attrs))
        pool, pool_c = torch.cat(chunks), torch.cat(cs)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, pool.numpy())
            np.save(cache_c, pool_c.numpy())
        return pool, pool_c

    def _reals(self, with_c: bool = False):
        idx = torch.randint(0, len(self.pool), (self.cfg.batch,), generator=self.gen)
        real = self.pool[idx].float() / 127.5 - 1.0
        return (real, self.pool_c[idx]) if with_c else real

    def _ws(self, n: int, update_avg: bool = False):
        """Mapped styles with mixing regularization: a second z takes over after a random layer
        (with the same c, as StyleGAN2-ADA does). Returns ws, z and the c that z yields."""
        z = torch.randn(n, Z_DIM, generator=self.gen)
        c = attributes_from_z(z) if self.G.c_dim else None
        ws = self.G.map(z, update_avg=update_avg, c=c).clone()
        if self.cfg.mix_prob > 0:
            z2 = torch.randn(n, Z_DIM, generator=self.gen)
            ws2 = self.G.map(z2, c=c)
            cut = torch.randint(1, NUM_WS, (n,), generator=self.gen)
            use = torch.rand(n, generator=self.gen) < self.cfg.mix_prob
            cut = torch.where(use, cut, torch.full_like(cut, NUM_WS))
            layer = torch.arange(NUM_WS)[None, :, None]
            ws = torch.where(layer >= cut[:, None, None], ws2, ws)
        return ws, z, c

    def _autocast(self, enabled: bool = True):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16 and enabled)

    def _noise(self, n: int):
        return self.G.synthesis.make_noise(n, "random", generator=self.gen)

    # -- one step ------------------------------------------------------------------------------
    def step(self) -> dict:
        """One discriminator update, one generator update, then the EMA; returns the losses."""
        t0 = now()
        out = self.d_step()
        out.update(self.g_step())
        self._update_ema()
        self.step_i += 1
        dt = elapsed_ms(t0) / 1e3
        self.seconds += dt
        out["step"], out["seconds"] = self.step_i, dt
        self.history.append({k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()})
        return out

    @torch.enable_grad()  # the app's worker runs with autograd off
    def d_step(self) -> dict:
        """Logistic loss on a real and a generated batch, plus lazy R1 every ``r1_every`` steps."""
        cfg = self.cfg
        out = {}
        with torch.no_grad(), self._autocast():
            ws, _, c_fake = self._ws(cfg.batch)
            fake = self.G.synthesis(ws, self._noise(cfg.batch)).float()
        real, c_real = self._reals(with_c=True)
        do_r1 = cfg.r1_gamma > 0 and self.step_i % cfg.r1_every == 0
        real.requires_grad_(do_r1)
        with self._autocast(enabled=not do_r1):  # the R1 double backward stays in float32
            d_real = self.D(real, c_real if self.D.c_dim else None).float()
        with self._autocast():
            d_fake = self.D(fake, c_fake).float()
        loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        out["loss_d"] = loss_d.item()
        if do_r1:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.pow(2).sum((1, 2, 3)).mean()
            loss_d = loss_d + r1 * (cfg.r1_gamma / 2) * cfg.r1_every
            out["r1"] = r1.item()
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        out["d_real"], out["d_fake"] = d_real.mean().item(), d_fake.mean().item()
        return out

    @torch.enable_grad()
    def g_step(self) -> dict:
        """Non-saturating loss through a frozen D, with mixing regularization and the optional
        mode-seeking term."""
        cfg = self.cfg
        out = {}
        for p in self.D.parameters():
            p.requires_grad_(False)
        with self._autocast():
            ws, z, c = self._ws(cfg.batch, update_avg=True)
            fake = self.G.synthesis(ws, self._noise(cfg.batch))
            d_fake_g = self.D(fake, c).float()
        fake = fake.float()
        loss_g = F.softplus(-d_fake_g).mean()
        out["loss_g"] = loss_g.item()
        if cfg.ms_weight > 0:
            h = cfg.batch // 2
            # Pooled, so that per-pixel noise cannot buy diversity; only layout and colour count.
            small = F.avg_pool2d(fake, cfg.ms_pool) if cfg.ms_pool > 1 else fake
            d_img = (small[:h] - small[h : 2 * h]).abs().mean((1, 2, 3))
            d_z = (z[:h] - z[h : 2 * h]).abs().mean(1)
            ms = 1.0 / ((d_img / d_z).mean() + 1e-5)
            loss_g = loss_g + cfg.ms_weight * ms
            out["ms"] = ms.item()
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        for p in self.D.parameters():
            p.requires_grad_(True)
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        cfg = self.cfg
        imgs = (self.step_i + 1) * cfg.batch
        ema_imgs = min(cfg.ema_kimg * 1000, imgs * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_kimg * 1000
        beta = 0.5 ** (cfg.batch / max(ema_imgs, 1e-8))
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.lerp_(p, 1.0 - beta)
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    # -- diagnostics ---------------------------------------------------------------------------
    def mapping_change(self) -> float:
        """Relative change of the mapping network's weights since initialization."""
        num = sum((p.detach() - p0).pow(2).sum() for p, p0 in zip(self.G.mapping.parameters(), self.map_init))
        den = sum(p0.pow(2).sum() for p0 in self.map_init)
        return float((num / den).sqrt())

    def noise_strengths(self) -> list[float]:
        return [round(float(L.noise_strength), 4) for L in self.G_ema.synthesis.layers]

    @torch.no_grad()
    def samples(self, n: int, seed: int = 123, psi: float = 1.0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, Z_DIM, generator=g)
        ws = self.G_ema.map(z, psi)
        return to_unit(self.G_ema.synthesis(ws, self.G_ema.synthesis.make_noise(n, "random", generator=g)))

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self) -> None:
        if not self.run_dir:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
            "step": self.step_i, "seconds": self.seconds, "history": self.history,
            "map_init": self.map_init, "config": asdict(self.cfg),
        }
        tmp = self.run_dir / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.run_dir / "checkpoint.pt")

    def _load(self, path: Path) -> None:
        state = torch.load(path, weights_only=True)
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.step_i, self.seconds, self.history = state["step"], state["seconds"], state["history"]
        self.map_init = state["map_init"]
        self.log(f"resumed from {path} at step {self.step_i} ({self.seconds / 60:.1f} min)")


# -- evaluation and export -----------------------------------------------------------------------

def evaluate_generator(G: Generator, n: int = 1000, seed: int = 123, psi: float = 1.0) -> dict:
    """Attribute frequencies of ``n`` samples against ``n`` data faces, and the Frechet distance in
    the attribute classifier's features (with a data-vs-data baseline for scale)."""
    from backends.models.attribute_classifier import attribute_frequencies, frechet_from_features, predict

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, Z_DIM, generator=g)
        fake = to_unit(G.synthesis(G.map(z, psi), G.synthesis.make_noise(n, "random", generator=g)))
    pf = predict(fake)
    pr, pr2 = _data_predictions(n)
    ff, fr = attribute_frequencies(pf), attribute_frequencies(pr)
    ratios = {k: (ff[k] / fr[k] if fr[k] > 0 else float("inf")) for k in fr}
    follows = {}
    if G.c_dim:  # how often the classifier reads the attribute the sample was conditioned on
        c = attributes_from_z(z).numpy()
        follows = {"conditioning_agreement": {
            "smile_sign": round(float(np.mean(pf["smile"] == (c[:, 0] > 0))), 4),
            "smile_value_corr": round(float(np.corrcoef(pf["smile_value"], c[:, 0])[0, 1]), 4),
            "tilt_sign": round(float(np.mean(pf["tilt"] == (c[:, 1] > 0))), 4),
            "tilt_deg_corr": round(float(np.corrcoef(pf["tilt_deg"], c[:, 1])[0, 1]), 4),
            "glasses": round(float(np.mean(pf["glasses"] == c[:, 2])), 4),
            "hair": round(float(np.mean(pf["hair"] == c[:, 3:].argmax(1))), 4),
        }}
    return {
        "n": n,
        "freq_generated": {k: round(v, 4) for k, v in ff.items()},
        "freq_data": {k: round(v, 4) for k, v in fr.items()},
        "freq_ratio": {k: round(v, 3) for k, v in ratios.items()},
        "frechet_generated_vs_data": round(frechet_from_features(pf["features"], pr["features"]), 4),
        "frechet_data_vs_data": round(frechet_from_features(pr2["features"], pr["features"]), 4),
        **follows,
    }


_DATA_PRED: dict[int, tuple] = {}


def _data_predictions(n: int) -> tuple[dict, dict]:
    """Classifier outputs on two held-out data sets of ``n`` faces (cached: drawing takes seconds)."""
    from backends.models.attribute_classifier import predict

    if n not in _DATA_PRED:
        _DATA_PRED[n] = (predict(sample_faces(n, EVAL_DATA_SEED)[0]), predict(sample_faces(n, EVAL_DATA_SEED + 1)[0]))
    return _DATA_PRED[n]


def export(trainer: Trainer, path: Path = WEIGHTS_PATH, log=print) -> dict:
    from backends.models.weights import save_weights

    hist = trainer.history[-200:]
    final = {k: round(float(np.mean([h[k] for h in hist if k in h])), 4) for k in ("loss_d", "loss_g", "r1", "d_real", "d_fake")
             if any(k in h for h in hist)}
    report = evaluate_generator(trainer.G_ema)
    entry = {
        "model": "stylegan",
        "dataset": f"backends.data.faces (procedural cartoon faces), pool of {trainer.cfg.pool} from seeds {DATA_SEED_BASE}+",
        "script": "python -m backends.training.stylegan",
        "steps": trainer.step_i,
        "seed": trainer.cfg.seed,
        "config": asdict(trainer.cfg),
        "train_minutes": round(trainer.seconds / 60, 1),
        "final_losses_last_200_steps": final,
        "generator_parameters": parameter_count(trainer.G_ema),
        "noise_strengths": trainer.noise_strengths(),
        "mapping_relative_change": round(trainer.mapping_change(), 4),
        "conditioning": ("c = [mouth curve, tilt / 30 deg, glasses, hair one-hot none/short/long] embedded into the "
                         "mapping network; D is a projection discriminator; without an explicit c, "
                         "c = attributes_from_z(z), the data's attribute distribution by inverse CDF of z[:4]")
        if trainer.G_ema.c_dim else "none",
        "dtype": "float16",
        **report,
    }
    entry = save_weights(path, trainer.G_ema.state_dict(), entry)
    log(json.dumps(entry, indent=1))
    # Latent directions of the shipped (float16-rounded) generator, fitted once for the operator.
    from backends.models.stylegan import DIRECTIONS_PATH, load_generator, save_directions

    directions = save_directions(load_generator(path), path.with_name(DIRECTIONS_PATH.name), entry={
        "model": "stylegan latent directions",
        "for": path.name,
        "method": "GANSpace PCA of 20000 mapped w; InterFaceGAN-style logistic boundaries in w on 3000 samples "
                  "labelled by the attribute classifier",
        "script": "python -m backends.training.stylegan --export-only",
    })
    log(json.dumps(directions))
    return entry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cfg = Config()
    for k, v in asdict(cfg).items():
        kind = (lambda t: t.lower() in ("1", "true", "yes", "on")) if isinstance(v, bool) else type(v)
        p.add_argument(f"--{k.replace('_', '-')}", type=kind, default=v)
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--max-minutes", type=float, default=60.0, help="stop training after this much compute time")
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = Config(**{k: getattr(args, k) for k in asdict(cfg)})

    def log(msg: str) -> None:
        print(msg, flush=True)

    tr = Trainer(cfg, args.run_dir, resume=not args.fresh, log=log)
    log(f"G {parameter_count(tr.G)} params, D {parameter_count(tr.D)} params, config {asdict(cfg)}")
    while not args.export_only and tr.step_i < cfg.steps and tr.seconds < args.max_minutes * 60:
        tr.step()
        i = tr.step_i
        if i % 50 == 0:
            recent = tr.history[-50:]
            msg = " ".join(f"{k} {np.mean([h[k] for h in recent if k in h]):.3f}"
                           for k in ("loss_d", "loss_g", "d_real", "d_fake", "r1", "ms") if any(k in h for h in recent))
            log(f"step {i} {msg} {np.mean([h['seconds'] for h in recent]):.2f}s/step total {tr.seconds / 60:.1f}min "
                f"map_change {tr.mapping_change():.3f}")
        if i % args.ckpt_every == 0:
            tr.save()
        if args.eval_every and i % args.eval_every == 0:
            try:
                rep = evaluate_generator(tr.G_ema, n=512)
                log(f"eval step {i}: ratio {rep['freq_ratio']} frechet {rep['frechet_generated_vs_data']} "
                    f"(data/data {rep['frechet_data_vs_data']}) noise {tr.noise_strengths()}")
            except FileNotFoundError as exc:
                log(f"eval skipped: {exc}")
            _save_grid(tr.samples(64), tr.run_dir / f"samples_{i:05d}.png")
    tr.save()
    if not args.no_export:
        export(tr, args.out, log)


def _save_grid(images: torch.Tensor, path: Optional[Path], nrow: int = 8) -> None:
    if path is None:
        return
    from backends.imageio import save_png  # OpenCV: only the script writes pictures, the app's Train does not

    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, hwc(image_grid(images, nrow, scale=3, gap=2, fill=1.0)).numpy())


if __name__ == "__main__":
    main()
