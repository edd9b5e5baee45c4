"""What the model lab's cluttered-digit classifiers share in training: a pool of training images
drawn once from ``backends.data.cluttered_glyphs`` (seeds far from the test seed), AdamW with a
one-cycle schedule, accuracy on the fixed test set, and the manifest entry.

Each network has its own script (``python -m backends.training.glyph_stn`` ...) that builds the
model, picks its learning rates and calls :func:`main`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from backends.data import cluttered_glyphs as cg
from backends.models.weights import save_weights
from backends.training.loop import LossHistory, add_common_options, run_record, run_steps

POOL_SEED = 1_000  # training chunk i uses seed POOL_SEED + i; the test seed is far away
CHUNK = 1000


def training_pool(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` training images as uint8 (size, 1, 48, 48) and their labels, drawn in chunks."""
    images, labels = [], []
    for i in range(0, size, CHUNK):
        x, y, _ = cg.sample(min(CHUNK, size - i), POOL_SEED + 1000 * seed + i // CHUNK)
        images.append((x * 255).round().to(torch.uint8))
        labels.append(y)
    return torch.cat(images), torch.cat(labels)


class Trainer(LossHistory):
    """One AdamW step per ``step()`` on a random batch of the pool; ``groups`` gives parameter
    groups with their own learning-rate factor (e.g. a slower localisation network)."""

    def __init__(self, model: nn.Module, groups: Iterable[tuple[Iterable[nn.Parameter], float]], steps: int,
                 lr: float = 2e-3, batch: int = 64, pool: int = 20_000, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model, self.batch, self.seed, self.lr = model, batch, seed, lr
        self.pool_size = pool
        self.images, self.labels = training_pool(pool, seed)
        param_groups = [{"params": list(p), "lr": lr * f} for p, f in groups]
        self.opt = torch.optim.AdamW(param_groups, lr=lr, weight_decay=1e-4)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=[g["lr"] for g in param_groups],
                                                         total_steps=steps, pct_start=0.15)
        self.gen = torch.Generator().manual_seed(seed)
        self.total = steps
        self.steps_done = 0
        self.history: dict[str, list[float]] = {"loss": [], "accuracy": []}

    def step(self) -> dict[str, float]:
        idx = torch.randint(0, len(self.images), (self.batch,), generator=self.gen)
        x, y = self.images[idx].float() / 255.0, self.labels[idx]
        self.model.train()
        with torch.enable_grad():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if self.steps_done + 1 < self.total:
            self.sched.step()
        self.model.eval()
        self.steps_done += 1
        out = {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean())}
        for k, v in out.items():
            self.history[k].append(v)
        return out


@torch.no_grad()
def _as_shipped(model: nn.Module) -> None:
    """Round the weights to float16 and back, so the accuracy written is the shipped file's."""
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.copy_(t.half().float())


@torch.no_grad()
def test_accuracy(model: nn.Module, n: int | None = None, batch: int = 500) -> float:
    """Accuracy on the fixed test set (its first ``n`` items when given)."""
    x, y, _ = cg.test_set()
    if n is not None:
        x, y = x[:n], y[:n]
    model.eval()
    hits = sum(int((model(x[i: i + batch]).argmax(1) == y[i: i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def main(name: str, build: Callable[[], nn.Module], groups: Callable[[nn.Module], list], out: Path,
         module: str, description: str, steps: int, lr: float, extra: Callable[[nn.Module], dict] | None = None) -> dict:
    """Command line of one network's training script: train, score, write weights and manifest."""
    p = argparse.ArgumentParser(description=description)
    add_common_options(p)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pool", type=int, default=20_000)
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = build()
    trainer = Trainer(model, groups(model), args.steps, args.lr, args.batch, args.pool, args.seed)
    seconds = run_steps(trainer, args.steps, args.log_every,
                        lambda r: f"loss {r['loss']:.4f} acc {r['accuracy']:.3f}", args.max_minutes)
    _as_shipped(model)
    accuracy = test_accuracy(model)
    entry = {
        "model": name,
        "dataset": f"backends.data.cluttered_glyphs: a pool of {args.pool} images (seeds {POOL_SEED}+), "
                   f"scored on test_set() ({cg.TEST_SIZE} images, seed {cg.TEST_SEED})",
        "seed": args.seed, "batch": args.batch, "lr": args.lr,
        "test_accuracy": round(accuracy, 4),
        **(extra(model) if extra else {}),
        **run_record(trainer, seconds, args.threads, module),
    }
    print(f"test accuracy {accuracy:.4f} after {trainer.steps_done} steps, {seconds:.0f} s", flush=True)
    if not args.no_write:
        entry = save_weights(args.out, model.state_dict(), entry)
        print(f"wrote {args.out} sha256 {entry['sha256']}", flush=True)
    return entry
