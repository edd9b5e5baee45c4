"""Train the (beta-)VAE on a procedural dataset and score its disentanglement.

    python -m backends.training.vae --dataset sprites --beta 1 --steps 6000 --out assets/weights/vae_sprites_beta1.safetensors
    python -m backends.training.vae --dataset faces --latent-dim 16 --steps 4000 --pool 20000 --out assets/weights/vae_faces.safetensors

Fixed seed, one CPU thread by default (``--threads`` raises it). Batches come from a pool of
``--pool`` images drawn once from the dataset's generator (seed * 1e6 + i), or with ``--pool 0``
fresh every step (seed * 1e6 + step). On sprites the script reports the mutual information gap
(MIG, Chen et al. 2018) of the encoder's means against the true factors; on faces, the Frechet
distance of prior samples to held-out faces in the attribute classifier's features. Either goes
to the manifest with the losses.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from backends.data import sampler
from backends.models.vae import VAE, VAEConfig, config_dict, vae_loss
from backends.models.weights import WEIGHTS_DIR, save_weights
from backends.training.loop import LossHistory, add_common_options, run_record, run_steps

EVAL_SEED = 987_654_321  # held out: training batches use seeds seed * 1e6 + step


class Trainer(LossHistory):
    """One optimizer step per ``step()``; the CLI and the app's Train action share it."""

    def __init__(self, dataset: str = "sprites", beta: float = 1.0, latent_dim: int = 10, batch: int = 64,
                 lr: float = 1e-3, seed: int = 0, warmup: int = 500, device: str | torch.device = "cpu",
                 fixed_data: bool = False, pool: int = 0) -> None:
        self.dataset, self.beta, self.batch, self.seed = dataset, float(beta), int(batch), int(seed)
        self.pool_size = int(pool)
        self.warmup = int(warmup)
        self.fixed_data = bool(fixed_data)  # one batch over and over: for tests of the optimizer
        self.lr = float(lr)
        self.device = torch.device(device)
        self._sample = sampler(dataset)
        torch.manual_seed(seed)
        self.model = VAE(VAEConfig(latent_dim=latent_dim)).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.steps_done = 0
        self.history: dict[str, list[float]] = {"loss": [], "recon": [], "kl": []}
        self._pool: torch.Tensor | None = None

    def _batch(self) -> torch.Tensor:
        """Fresh images every step, or (``pool`` > 0) a random batch of a pool drawn once, as uint8:
        rendering costs about a fifth of a step, so a pool buys more steps in the same minutes."""
        if self.pool_size <= 0 or self.fixed_data:
            x, _ = self._sample(self.batch, self.seed * 1_000_000 + (0 if self.fixed_data else self.steps_done))
            return x
        if self._pool is None:
            chunks = [self._sample(min(1024, self.pool_size - i), self.seed * 1_000_000 + i)[0]
                      for i in range(0, self.pool_size, 1024)]
            self._pool = (torch.cat(chunks) * 255).round().to(torch.uint8)
        idx = torch.randint(0, len(self._pool), (self.batch,), generator=self.gen)
        return self._pool[idx].float() / 255.0

    def step(self) -> dict[str, float]:
        x = self._batch().to(self.device)
        eps = torch.randn((self.batch, self.model.latent_dim), generator=self.gen).to(self.device)
        self.model.train()
        with torch.enable_grad():
            losses = vae_loss(self.model, x, self.current_beta(), eps)
            self.opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            self.opt.step()
        self.model.eval()
        self.steps_done += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        for k, v in out.items():
            self.history[k].append(v)
        return out

    def current_beta(self) -> float:
        """The KL weight ramps from 0 to beta over the warm-up steps: without it the small sprites
        let the KL term collapse the posterior to the prior before the decoder learns anything."""
        return self.beta * min(1.0, (self.steps_done + 1) / max(self.warmup, 1))

    def manifest_entry(self, seconds: float, threads: int) -> dict:
        return {
            "model": "vae",
            "dataset": self.dataset,
            "beta": self.beta,
            "latent_dim": self.model.latent_dim,
            "seed": self.seed,
            "batch": self.batch,
            "lr": self.lr,
            "kl_warmup_steps": self.warmup,
            "pool": self.pool_size or "fresh batches",
            **run_record(self, seconds, threads, "backends.training.vae"),
        }


@torch.no_grad()
def evaluate(model: VAE, dataset: str, n: int = 1024, seed: int = EVAL_SEED) -> dict[str, float]:
    """Held-out reconstruction (from the means): BCE per image and mean squared error per pixel."""
    x, _ = sampler(dataset)(n, seed)
    x = x.to(next(model.parameters()).device)
    mu, _ = model.encode(x)
    logits = model.decode_logits(mu)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
    mse = F.mse_loss(torch.sigmoid(logits), x)
    return {"heldout_bce": float(bce), "heldout_mse": float(mse)}


def _entropy(labels: np.ndarray) -> float:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def mutual_information_gap(codes: np.ndarray, factors: Mapping[str, np.ndarray], bins: int = 20) -> dict[str, float]:
    """MIG: for each factor, the gap between the two latents with the most mutual information
    with it, over the factor's entropy; ``mig`` is their mean. ``codes`` (N, D) are continuous
    (binned into ``bins`` equal-width bins per dimension); factors are integer classes."""
    disc = np.empty(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins)
        disc[:, j] = np.clip(np.digitize(codes[:, j], edges[1:-1]), 0, bins - 1)
    out: dict[str, float] = {}
    for name, v in factors.items():
        v = np.asarray(v, np.int64)
        mi = np.sort([_mutual_information(disc[:, j], v) for j in range(codes.shape[1])])[::-1]
        out[f"gap_{name}"] = float((mi[0] - mi[1]) / max(_entropy(v), 1e-12))
    out["mig"] = float(np.mean([out[f"gap_{k}"] for k in factors]))
    return out


@torch.no_grad()
def sprites_mig(model: VAE, n: int = 10_000, seed: int = EVAL_SEED) -> dict[str, float]:
    """MIG of the encoder means against the true sprite factors (continuous ones in 10 bins)."""
    from backends.data.sprites import discretize_factors, sample_sprites

    device = next(model.parameters()).device
    codes = []
    x, factors = sample_sprites(n, seed)
    for chunk in x.split(1000):
        codes.append(model.encode(chunk.to(device))[0].cpu())
    return mutual_information_gap(torch.cat(codes).numpy(), discretize_factors(factors))


@torch.no_grad()
def faces_scores(model: VAE, n: int = 2000, seed: int = EVAL_SEED) -> dict[str, float]:
    """Frechet distance, in the faces attribute classifier's features, of prior samples and of
    reconstructions to held-out faces, and attribute frequencies of samples against the data."""
    from backends.data.faces import sample_faces
    from backends.models.attribute_classifier import attribute_frequencies, frechet_distance, load_classifier, predict

    clf = load_classifier()
    real, _ = sample_faces(n, seed)
    z = torch.randn((n, model.latent_dim), generator=torch.Generator().manual_seed(seed))
    samples = torch.cat([model.decode(c) for c in z.split(500)])
    recon = torch.cat([model.decode(model.encode(c)[0]) for c in real.split(500)])
    out = {"frechet_samples": frechet_distance(samples, real, clf), "frechet_reconstructions": frechet_distance(recon, real, clf)}
    data_freq, sample_freq = attribute_frequencies(predict(real, clf)), attribute_frequencies(predict(samples, clf))
    out.update({f"data_{k}": v for k, v in data_freq.items()})
    out.update({f"samples_{k}": v for k, v in sample_freq.items()})
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="sprites", choices=("sprites", "glyphs", "patches", "faces"))
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--pool", type=int, default=50_000, help="images drawn once and sampled from (0: fresh every step)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=500, help="steps over which the KL weight ramps up to beta")
    add_common_options(p)
    p.add_argument("--eval-samples", type=int, default=10_000, help="held-out sprites for MIG")
    p.add_argument("--out", type=Path, default=None, help="safetensors path (default assets/weights/vae_<dataset>_beta<beta>.safetensors)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or WEIGHTS_DIR / f"vae_{args.dataset}_beta{args.beta:g}.safetensors"

    trainer = Trainer(args.dataset, args.beta, args.latent_dim, args.batch, args.lr, args.seed, args.warmup, pool=args.pool)
    seconds = run_steps(trainer, args.steps, args.log_every, lambda r: f"loss {r['loss']:.2f}  recon {r['recon']:.2f}  kl {r['kl']:.2f}", args.max_minutes)
    entry = trainer.manifest_entry(seconds, args.threads)
    entry.update({k: round(v, 5) for k, v in evaluate(trainer.model, args.dataset).items()})
    if args.dataset == "sprites":
        mig = sprites_mig(trainer.model, args.eval_samples)
        entry["metric"] = {"name": f"MIG (sprites, {args.eval_samples} held-out, 20 latent bins)", "value": round(mig["mig"], 4),
                           **{k: round(v, 4) for k, v in mig.items() if k != "mig"}}
        print("MIG", {k: round(v, 3) for k, v in mig.items()})
    if args.dataset == "faces":
        scores = faces_scores(trainer.model)
        entry["metric"] = {"name": "Frechet distance of 2000 prior samples to held-out faces (attribute classifier features)",
                           "value": round(scores["frechet_samples"], 3), **{k: round(v, 4) for k, v in scores.items()}}
        print("faces", {k: round(v, 3) for k, v in scores.items()})
    save_weights(out, trainer.model.state_dict(), entry, metadata=config_dict(trainer.model))
    print(f"wrote {out} after {seconds:.0f} s: {entry['final_losses']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
