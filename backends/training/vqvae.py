"""Train the VQ-VAE tokenizer on natural-image patches cut from the bundled samples.

    python -m backends.training.vqvae --steps 3000 --out assets/weights/vqvae_patches.safetensors

Fixed seed, one CPU thread by default. Every ``--restart-every`` steps, codes used fewer than
``--min-usage`` times in those steps move to random encoder outputs of the batch, which keeps the
codebook's perplexity high. The held-out score (MSE, PSNR, perplexity) uses crops of a photo the model never
sees in training (``backends.data.patches.HELD_OUT``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

import torch

from backends.data.patches import sample_patches
from backends.models.vqvae import SHIPPED, VQVAE, VQVAEConfig, config_dict, perplexity
from backends.models.weights import save_weights
from backends.training.loop import LossHistory, add_common_options, run_record, run_steps

EVAL_SEED = 987_654_321


class Trainer(LossHistory):
    def __init__(self, codes: int = 128, code_dim: int = 16, batch: int = 32, size: int = 32, lr: float = 2e-3,
                 seed: int = 0, restart_every: int = 20, min_usage: float = 1.0,
                 device: str | torch.device = "cpu", fixed_data: bool = False) -> None:
        self.fixed_data = bool(fixed_data)  # one batch over and over: for tests of the optimizer
        self.batch, self.size, self.seed, self.lr = int(batch), int(size), int(seed), float(lr)
        self.restart_every, self.min_usage = int(restart_every), float(min_usage)
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.model = VQVAE(VQVAEConfig(codes=codes, code_dim=code_dim)).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.steps_done = 0
        self.restarted = 0
        self.history: dict[str, list[float]] = {"loss": [], "mse": [], "commit": [], "perplexity": []}

    def step(self) -> dict[str, float]:
        x, _ = sample_patches(self.batch, self.seed * 1_000_000 + (0 if self.fixed_data else self.steps_done), self.size)
        x = x.to(self.device)
        self.model.train()
        with torch.enable_grad():
            out = self.model(x)
            self.opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            self.opt.step()
        if self.restart_every and (self.steps_done + 1) % self.restart_every == 0:
            flat = out["z"].detach().permute(0, 2, 3, 1).reshape(-1, self.model.config.code_dim)
            self.restarted += self.model.quantizer.restart_dead(flat, self.min_usage)
        self.model.eval()
        self.steps_done += 1
        losses = {"loss": float(out["loss"].detach()), "mse": float(out["mse"].detach()), "commit": float(out["commit"].detach()),
                  "perplexity": perplexity(out["tokens"], self.model.codes)}
        for k, v in losses.items():
            self.history[k].append(v)
        return losses


@torch.no_grad()
def evaluate(model: VQVAE, n: int = 512, size: int = 32, split: str = "test", seed: int = EVAL_SEED) -> dict[str, float]:
    """Reconstruction MSE and PSNR and codebook perplexity on held-out crops."""
    x, _ = sample_patches(n, seed, size, split=split)
    tokens = model.encode(x)
    recon = model.decode(tokens)
    mse = float((recon - x).square().mean())
    return {"mse": mse, "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "perplexity": perplexity(tokens, model.codes),
            "codes_used": int(torch.unique(tokens).numel())}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--codes", type=int, default=128)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--restart-every", type=int, default=20)
    p.add_argument("--min-usage", type=float, default=1.0)
    add_common_options(p)
    p.add_argument("--out", type=Path, default=SHIPPED)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    trainer = Trainer(args.codes, args.code_dim, args.batch, args.size, args.lr, args.seed, args.restart_every, args.min_usage)
    seconds = run_steps(trainer, args.steps, args.log_every, lambda r: f"mse {r['mse']:.5f}  commit {r['commit']:.5f}  "
                        f"perplexity {r['perplexity']:.1f}  restarted {trainer.restarted}", args.max_minutes)
    held = evaluate(trainer.model)
    train_eval = evaluate(trainer.model, split="train")
    entry = {
        "model": "vqvae",
        "dataset": "patches (bundled samples, 'coffee' held out)",
        "seed": args.seed,
        "batch": args.batch,
        "lr": args.lr,
        "codes": args.codes,
        "code_dim": args.code_dim,
        "codes_restarted": trainer.restarted,
        "metric": {"name": "codebook perplexity on 512 fresh 32x32 crops of the training photos (unseen seed)",
                   "value": round(train_eval["perplexity"], 2), "train_psnr": round(train_eval["psnr"], 2),
                   "heldout_photo_perplexity": round(held["perplexity"], 2), "heldout_photo_psnr": round(held["psnr"], 2),
                   "heldout_photo_mse": round(held["mse"], 5), "heldout_photo_codes_used": held["codes_used"]},
        **run_record(trainer, seconds, args.threads, "backends.training.vqvae", digits=5),
    }
    save_weights(args.out, trainer.model.state_dict(), entry, metadata=config_dict(trainer.model))
    print(f"wrote {args.out} after {seconds:.0f} s: held-out {held}, train {train_eval}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
