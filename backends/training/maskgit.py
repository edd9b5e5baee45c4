"""Train the MaskGIT transformer on VQ-VAE token maps of natural-image patches.

    python -m backends.training.maskgit --steps 3000 --out assets/weights/maskgit_patches.safetensors

Each step draws fresh 32x32 crops of the bundled samples (the 'train' split), encodes them with
the shipped VQ-VAE to 8x8 token maps, masks a cosine-distributed fraction of each map and trains
the transformer to predict the masked tokens (cross-entropy on masked positions only). Fixed seed,
one CPU thread by default.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from backends.data.patches import sample_patches
from backends.models.maskgit import SHIPPED, MaskGIT, MaskGITConfig, config_dict, random_mask_ratio
from backends.models.vqvae import SHIPPED as VQ_SHIPPED
from backends.models.vqvae import VQVAE, load_vqvae
from backends.models.weights import save_weights
from backends.training.loop import LossHistory, add_common_options, run_record, run_steps

EVAL_SEED = 987_654_321


def mask_tokens(tokens: torch.Tensor, ratio: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A bool mask (N, h, w) with ceil(ratio * h * w) (at least one) random positions per map."""
    n, h, w = tokens.shape
    k = (ratio * h * w).ceil().clamp(1, h * w).long()
    order = torch.rand((n, h * w), generator=generator).argsort(1).argsort(1)  # random rank of each position
    return (order < k[:, None]).view(n, h, w)


class Trainer(LossHistory):
    def __init__(self, vqvae: Optional[VQVAE] = None, batch: int = 32, lr: float = 1e-3, steps: int = 3000,
                 seed: int = 0, warmup: int = 200, label_smoothing: float = 0.1, fixed_data: bool = False,
                 config: MaskGITConfig = MaskGITConfig()) -> None:
        self.vq = (vqvae or load_vqvae(VQ_SHIPPED)).eval()
        self.batch, self.seed, self.lr, self.total = int(batch), int(seed), float(lr), int(steps)
        self.label_smoothing, self.fixed_data = float(label_smoothing), bool(fixed_data)
        torch.manual_seed(seed)
        config = MaskGITConfig(**{**config.__dict__, "codes": self.vq.codes})
        self.model = MaskGIT(config)
        self.patch = 4 * config.size
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, warmup, self.total))
        self.gen = torch.Generator().manual_seed(seed)
        self.steps_done = 0
        self.history: dict[str, list[float]] = {"loss": [], "accuracy": []}

    @torch.no_grad()
    def tokens(self, n: int, seed: int, split: str = "train") -> torch.Tensor:
        x, _ = sample_patches(n, seed, self.patch, split=split)
        return self.vq.encode(x)

    def step(self) -> dict[str, float]:
        data_seed = self.seed * 1_000_000 + (0 if self.fixed_data else self.steps_done)
        tokens = self.tokens(self.batch, data_seed)
        mask = mask_tokens(tokens, random_mask_ratio(self.batch, self.gen), self.gen)
        inp = torch.where(mask, torch.full_like(tokens, self.model.mask_id), tokens)
        self.model.train()
        with torch.enable_grad():
            logits = self.model(inp)
            loss = F.cross_entropy(logits[mask], tokens[mask], label_smoothing=self.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
        self.model.eval()
        self.steps_done += 1
        acc = float((logits[mask].argmax(-1) == tokens[mask]).float().mean())
        out = {"loss": float(loss.detach()), "accuracy": acc}
        for k, v in out.items():
            self.history[k].append(v)
        return out

    @torch.no_grad()
    def evaluate(self, split: str = "test", n: int = 512, ratio: float = 0.5) -> dict[str, float]:
        """Cross-entropy (no smoothing) and accuracy on masked tokens of held-out crops at a fixed ratio."""
        tokens = self.tokens(n, EVAL_SEED, split)
        gen = torch.Generator().manual_seed(EVAL_SEED)
        mask = mask_tokens(tokens, torch.full((n,), ratio), gen)
        logits = self.model(torch.where(mask, torch.full_like(tokens, self.model.mask_id), tokens))
        ce = float(F.cross_entropy(logits[mask], tokens[mask]))
        acc = float((logits[mask].argmax(-1) == tokens[mask]).float().mean())
        # The unigram baseline: cross-entropy of always predicting the codes' overall frequencies.
        freq = torch.bincount(tokens.flatten(), minlength=self.vq.codes).float() + 1
        unigram = float(F.cross_entropy(freq.log().expand(int(mask.sum()), -1), tokens[mask]))
        return {"ce": ce, "accuracy": acc, "unigram_ce": unigram}


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    add_common_options(p)
    p.add_argument("--vqvae", type=Path, default=VQ_SHIPPED)
    p.add_argument("--out", type=Path, default=SHIPPED)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = MaskGITConfig(dim=args.dim, layers=args.layers, mlp=2 * args.dim)
    trainer = Trainer(load_vqvae(args.vqvae), args.batch, args.lr, args.steps, args.seed, config=config)
    seconds = run_steps(trainer, args.steps, args.log_every, lambda r: f"loss {r['loss']:.3f}  accuracy {r['accuracy']:.3f}", args.max_minutes)
    held, train = trainer.evaluate("test"), trainer.evaluate("train")
    entry = {
        "model": "maskgit",
        "dataset": f"VQ-VAE tokens ({args.vqvae.name}) of 32x32 patches, 'coffee' held out",
        "seed": args.seed,
        "batch": args.batch,
        "lr": args.lr,
        "metric": {"name": "masked-token cross-entropy at 50% masking, held-out crops (nats)",
                   "value": round(held["ce"], 4), "heldout_accuracy": round(held["accuracy"], 4),
                   "heldout_unigram_ce": round(held["unigram_ce"], 4), "train_ce": round(train["ce"], 4),
                   "train_accuracy": round(train["accuracy"], 4)},
        **run_record(trainer, seconds, args.threads, "backends.training.maskgit"),
    }
    save_weights(args.out, trainer.model.state_dict(), entry, metadata=config_dict(trainer.model))
    print(f"wrote {args.out} after {seconds:.0f} s: held-out {held}, train {train}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
