"""The loop every training script and in-app Train action shares: budgets, logging, saving."""

import pytest
import torch

from backends.training.loop import run_steps, training_job


class FakeClock:
    """Seconds that pass only when a step says so: budgets are checked without waiting."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


class Counting:
    """A trainer whose every step takes ``seconds`` on ``clock`` and records the autograd mode."""

    def __init__(self, loss: float = 1.0, clock: "FakeClock | None" = None, seconds: float = 0.0) -> None:
        self.steps_done, self.loss, self.clock, self.seconds = 0, loss, clock, seconds
        self.grad_enabled: list[bool] = []

    def step(self) -> dict[str, float]:
        if self.clock is not None:
            self.clock.seconds += self.seconds
        self.grad_enabled.append(torch.is_grad_enabled())
        self.steps_done += 1
        return {"loss": self.loss}

    def recent(self, n: int = 1) -> dict[str, float]:
        return {"loss": self.loss}


def test_a_script_stops_at_its_time_budget_whatever_the_step_count(capsys):
    """Steps of 1 s against a 10 s budget: the check before step 12 sees 11 s > 10 s and stops."""
    clock = FakeClock()
    trainer = Counting(clock=clock, seconds=1.0)
    seconds = run_steps(trainer, 10_000, 1000, lambda r: "", max_minutes=10 / 60, clock=clock)
    assert trainer.steps_done == 11 and seconds == 11.0
    assert "budget after 11 steps" in capsys.readouterr().out


def test_a_script_within_its_budget_runs_every_step(capsys):
    clock = FakeClock()
    trainer = Counting(clock=clock, seconds=1.0)
    run_steps(trainer, 50, 1000, lambda r: "", max_minutes=1.0, clock=clock)
    assert trainer.steps_done == 50
    assert "budget" not in capsys.readouterr().out


def test_a_loss_that_is_not_finite_stops_the_script():
    with pytest.raises(SystemExit, match="nan"):
        run_steps(Counting(loss=float("nan")), 5, 1, lambda r: "")


def test_a_stopped_train_action_saves_what_it_learned():
    trainer, saved = Counting(), []
    job = training_job(trainer, 100, 5, lambda losses: "", preview=lambda s: None, save=saved.append,
                       steps_done=lambda: trainer.steps_done, saved=lambda: "saved")
    updates = [next(job) for _ in range(7)]
    job.close()  # what Stop does
    assert updates[-1].progress == pytest.approx(0.07) and len(saved) == 1


def test_a_train_action_stopped_before_its_first_preview_saves_nothing():
    trainer, saved = Counting(), []
    job = training_job(trainer, 100, 50, lambda losses: "", preview=lambda s: None, save=saved.append,
                       steps_done=lambda: trainer.steps_done, saved=lambda: "saved")
    next(job)
    job.close()
    assert saved == []


def test_train_action_previews_on_schedule_and_reports_the_clock():
    """Previews at steps 1, 1 + every, ... and the last, each given the seconds so far; the save
    gets the whole job's seconds; steps run with autograd on although the caller turned it off."""
    clock = FakeClock()
    trainer, saved, shown = Counting(clock=clock, seconds=2.0), [], []
    with torch.no_grad():
        updates = list(training_job(trainer, 7, 3, lambda losses: "", preview=lambda s: shown.append(s) or s,
                                    save=saved.append, steps_done=lambda: trainer.steps_done, saved=lambda: "done",
                                    clock=clock))
    assert [u.result for u in updates[:-1]] == [2.0, None, None, 8.0, None, None, 14.0]
    assert shown == [2.0, 8.0, 14.0] and saved == [14.0]
    assert updates[-1].message == "done" and all(trainer.grad_enabled)


def test_loss_history_recent_averages_the_last_steps_of_each_loss():
    """The VAE, VQ-VAE and MaskGIT trainers share LossHistory.recent: a mean over the last
    ``window`` steps per loss, losses with no value yet left out."""
    from backends.training.loop import LossHistory
    from backends.training.maskgit import Trainer as MaskGITTrainer
    from backends.training.vae import Trainer as VAETrainer
    from backends.training.vqvae import Trainer as VQVAETrainer

    class Logged(LossHistory):
        def __init__(self) -> None:
            self.history = {"loss": [4.0, 1.0, 2.0, 3.0], "kl": [], "mse": [10.0]}

    assert Logged().recent(3) == {"loss": 2.0, "mse": 10.0}
    assert Logged().recent() == {"loss": 2.5, "mse": 10.0}
    assert all(issubclass(t, LossHistory) for t in (VAETrainer, VQVAETrainer, MaskGITTrainer))
