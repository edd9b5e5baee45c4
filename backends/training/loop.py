"""What every training script shares: the common command-line options and the step loop."""

from __future__ import annotations

import argparse
import math
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from backends.layers import Result
from backends.registry import JobUpdate
from backends.timing import now

Clock = Callable[[], float]  # seconds, monotonic: backends.timing.now, or a test's fake

MAX_MINUTES = 15.0  # each non-adversarial training script's budget on a 2-core CPU


class Stepper(Protocol):
    def step(self) -> dict[str, float]: ...


class Steppable(Stepper, Protocol):
    steps_done: int

    def recent(self, n: int = ...) -> dict[str, float]: ...


class LossHistory:
    """What the trainers that log one value per loss and step share: ``history`` maps each loss's
    name to its values, step by step, and ``recent`` averages the last of them."""

    history: dict[str, list[float]]

    def recent(self, window: int = 100) -> dict[str, float]:
        """Each logged loss's mean over the last ``window`` steps (losses not logged yet left out)."""
        return {k: float(np.mean(v[-window:])) for k, v in self.history.items() if v}


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=200)
    parser.add_argument("--max-minutes", type=float, default=MAX_MINUTES,
                        help="stop at this much training time, whatever --steps says (the budget per script)")


def run_record(trainer: Steppable, seconds: float, threads: int, module: str, digits: int = 4) -> dict:
    """What every training script's manifest entry says about the run itself."""
    return {
        "steps": trainer.steps_done,
        "final_losses": {k: round(v, digits) for k, v in trainer.recent().items()},
        "train_seconds": round(seconds, 1),
        "threads": threads,
        "torch": torch.__version__,
        "script": f"python -m {module}",
    }


def run_steps(trainer: Steppable, steps: int, log_every: int, describe: Callable[[dict[str, float]], str],
              max_minutes: float = MAX_MINUTES, clock: Clock = now) -> float:
    """Steps ``trainer`` up to ``steps`` times or until more than ``max_minutes`` have passed on
    ``clock``, printing ``describe`` of the recent mean losses after the first step and every
    ``log_every``; stops the script on a loss that is not finite. Returns the seconds taken."""
    t0 = clock()
    for i in range(steps):
        if clock() - t0 > max_minutes * 60:
            print(f"stopped at the {max_minutes:g}-minute budget after {i} steps", flush=True)
            break
        losses = trainer.step()
        if not math.isfinite(losses["loss"]):
            raise SystemExit(f"loss is {losses['loss']} at step {i}")
        if (i + 1) % log_every == 0 or i == 0:
            print(f"step {i + 1:5d}  {describe(trainer.recent(log_every))}  {clock() - t0:.0f} s", flush=True)
    return clock() - t0


def training_job(trainer: Stepper, total: int, preview_every: int, describe: Callable[[dict[str, float]], str],
                 preview: Callable[[float], Result], save: Callable[[float], None], steps_done: Callable[[], int],
                 saved: Callable[[], str], clock: Clock = now) -> Iterator[JobUpdate]:
    """An in-app Train action on the worker: ``total`` steps, each reported with ``describe`` of
    its losses, a ``preview`` (given the seconds so far) every ``preview_every`` steps and at the
    end. On any exit, Stop included, what was learned is saved once ``preview_every`` steps ran.
    Steps run with autograd on whatever the caller's mode."""
    t0 = clock()
    try:
        for i in range(total):
            with torch.enable_grad():  # the worker computes with autograd off
                losses = trainer.step()
            result = preview(clock() - t0) if i % preview_every == 0 or i == total - 1 else None
            yield JobUpdate((i + 1) / total, f"step {i + 1}/{total}  {describe(losses)}", result)
    finally:
        if steps_done() >= preview_every:
            save(clock() - t0)
    yield JobUpdate(1.0, saved())
