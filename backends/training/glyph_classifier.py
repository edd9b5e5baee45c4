"""What the glyph classifiers' training scripts share: a trainer over pools of cluttered glyphs
with light augmentation, the test-set score, and the manifest entry.

Batches come from a pool of ``pool`` fresh glyphs (``backends.data.cluttered_glyphs.sample`` with
seed ``seed * 1e6 + round``), drawn anew every ``repeats * pool / batch`` steps, so each image is
seen about ``repeats`` times (drawing costs about a millisecond per glyph, as much as a training
step spends on it). Every batch is re-placed by a small random affine (rotation up to ``rotate``
degrees, scale, shift), so even a repeated glyph is a new picture. The fixed test set
(``test_set()``) is never trained on.

Budgets are CPU seconds of the training process (``time.process_time``, one thread by default):
on a machine that several people share, wall time says more about the neighbours than the run.
The manifest records both. The test accuracy is measured on the float32 model before the
weights are written in float16; the tests check the shipped file stays within half a point.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from backends.data.cluttered_glyphs import TEST_SEED, TEST_SIZE, sample, test_set
from backends.models.weights import save_weights
from backends.training.loop import LossHistory, add_common_options, run_record, run_steps


def augment(x: torch.Tensor, gen: torch.Generator, rotate: float = 10.0, scale: float = 0.1,
            shift: float = 3.0) -> torch.Tensor:
    """Each image of x (B, 1, H, W) turned by up to ``rotate`` degrees, scaled by 1 +- ``scale``
    and moved by up to ``shift`` pixels (bilinear, zero outside)."""
    b, _, h, w = x.shape
    u = torch.rand(b, 4, generator=gen) * 2 - 1
    a = torch.deg2rad(u[:, 0] * rotate)
    s = 1 + u[:, 1] * scale
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = a.cos() / s, -a.sin() / s
    theta[:, 1, 0], theta[:, 1, 1] = a.sin() / s, a.cos() / s
    theta[:, 0, 2], theta[:, 1, 2] = u[:, 2] * 2 * shift / w, u[:, 3] * 2 * shift / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class Trainer(LossHistory):
    """One AdamW step per ``step()`` on cross-entropy (label smoothing 0.05), the learning rate
    warming up over the first 5% of ``steps`` and following a cosine to 2% of ``lr`` after."""

    def __init__(self, model: nn.Module, steps: int, batch: int = 128, lr: float = 2e-3, pool: int = 8192,
                 seed: int = 0, weight_decay: float = 0.05, rotate: float = 10.0, repeats: int = 4) -> None:
        torch.manual_seed(seed)
        self.model, self.steps, self.batch, self.lr, self.pool_size = model, int(steps), int(batch), float(lr), int(pool)
        self.seed, self.weight_decay, self.rotate = int(seed), float(weight_decay), float(rotate)
        self.repeats = int(repeats)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.gen = torch.Generator().manual_seed(seed)
        self.steps_done, self.rounds = 0, 0
        self.history: dict[str, list[float]] = {"loss": [], "accuracy": []}
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rate(self) -> float:
        warm = max(1, self.steps // 20)
        if self.steps_done < warm:
            return self.lr * (self.steps_done + 1) / warm
        t = min(1.0, (self.steps_done - warm) / max(1, self.steps - warm))
        return self.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        per_pool = max(1, self.repeats * self.pool_size // self.batch)
        if self._pool is None or self.steps_done % per_pool == 0:
            x, y, _ = sample(self.pool_size, self.seed * 1_000_000 + self.rounds)
            self._pool, self.rounds = (x, y), self.rounds + 1
        idx = torch.randint(0, self.pool_size, (self.batch,), generator=self.gen)
        x, y = self._pool[0][idx], self._pool[1][idx]
        return augment(x, self.gen, self.rotate), y

    def step(self) -> dict[str, float]:
        x, y = self._batch()
        for group in self.opt.param_groups:
            group["lr"] = self._rate()
        self.model.train()
        with torch.enable_grad():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.model.eval()
        self.steps_done += 1
        out = {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean())}
        for k, v in out.items():
            self.history[k].append(v)
        return out

    def manifest_entry(self, name: str, module: str, seconds: float, threads: int, test_accuracy: float,
                       wall_seconds: float) -> dict:
        return {
            "model": name,
            "dataset": f"backends.data.cluttered_glyphs: pools of {self.pool_size} from seeds seed * 1e6 + round "
                       f"({self.rounds} pools), each image seen about {self.repeats} times, random affine augmentation "
                       f"(rotation +-{self.rotate:g} deg, scale +-10%, shift +-3 px)",
            "test_set": f"cluttered_glyphs.test_set(): {TEST_SIZE} glyphs, seed {TEST_SEED}",
            "test_accuracy": round(test_accuracy, 4),
            "seed": self.seed, "batch": self.batch, "lr": self.lr, "weight_decay": self.weight_decay,
            "planned_steps": self.steps,
            **run_record(self, seconds, threads, module),
            "train_seconds_measure": "CPU seconds of the training process (time.process_time)",
            "train_wall_seconds": round(wall_seconds, 1),
        }


def train(trainer: Trainer, steps: int, log_every: int, max_minutes: float) -> tuple[float, float]:
    """``run_steps`` on the process's CPU clock; returns (CPU seconds, wall seconds)."""
    wall = time.perf_counter()
    cpu = run_steps(trainer, steps, log_every, describe, max_minutes, clock=time.process_time)
    return cpu, time.perf_counter() - wall


def describe(losses: dict[str, float]) -> str:
    return f"loss {losses.get('loss', float('nan')):.4f}  batch accuracy {losses.get('accuracy', float('nan')):.3f}"


@torch.no_grad()
def accuracy(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             batch: int = 500) -> float:
    """Fraction of ``images`` whose argmax logit is the label."""
    hits = sum(int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
               for i in range(0, len(images), batch))
    return hits / max(1, len(images))


def test_accuracy(model: nn.Module) -> float:
    """Accuracy on the fixed test set, in eval mode."""
    x, y, _ = test_set()
    model.eval()
    return accuracy(model, x, y)


def add_options(p: argparse.ArgumentParser, steps: int, repeats: int, out: Path) -> None:
    """The options every glyph classifier's script takes, with its own defaults."""
    add_common_options(p)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pool", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=repeats, help="how often each pooled glyph is seen (augmented)")
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--no-write", action="store_true")


def train_and_ship(model: nn.Module, args: argparse.Namespace, name: str, module: str, config: dict) -> dict:
    """Trains ``model`` as ``args`` say, scores it on the test set and (unless ``--no-write``)
    writes its float16 weights and manifest entry; returns the entry."""
    trainer = Trainer(model, args.steps, args.batch, args.lr, args.pool, args.seed, repeats=args.repeats)
    seconds, wall = train(trainer, args.steps, args.log_every, args.max_minutes)
    acc = test_accuracy(model)
    entry = trainer.manifest_entry(name, module, seconds, args.threads, acc, wall)
    entry["config"] = config
    print(f"test accuracy {acc:.4f} after {trainer.steps_done} steps, {seconds:.0f} CPU s, {wall:.0f} s wall", flush=True)
    if not args.no_write:
        entry = save_weights(args.out, model.state_dict(), entry, metadata=config)
        print(f"wrote {args.out} sha256 {entry['sha256']}", flush=True)
    return entry
