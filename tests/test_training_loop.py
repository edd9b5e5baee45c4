"""The loop every training script and in-app Train action shares: budgets, logging, saving."""

import time

import pytest

from backends.training.loop import run_steps, training_job


class Counting:
    def __init__(self, loss: float = 1.0, pause: float = 0.0) -> None:
        self.steps_done, self.loss, self.pause = 0, loss, pause

    def step(self) -> dict[str, float]:
        time.sleep(self.pause)
        self.steps_done += 1
        return {"loss": self.loss}

    def recent(self, n: int = 1) -> dict[str, float]:
        return {"loss": self.loss}


def test_a_script_stops_at_its_time_budget_whatever_the_step_count(capsys):
    trainer = Counting(pause=0.01)
    run_steps(trainer, 10_000, 1000, lambda r: "", max_minutes=0.1 / 60)
    assert 3 <= trainer.steps_done <= 30
    assert "budget" in capsys.readouterr().out


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
