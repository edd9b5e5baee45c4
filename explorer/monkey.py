"""A seeded monkey for the real window: random operators, parameters, clicks, images, docks and
jobs, checking after each action that the app answers and that the frame drawn belongs to the
newest request. The suite runs a few hundred actions; point it at any count:

    QT_QPA_PLATFORM=offscreen python -m explorer.monkey --actions 6000 --seed 3
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from backends.imageio import normalize_array
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, SeedParam

ANSWER_TIMEOUT_S = float(os.environ.get("OPSCOPE_MONKEY_TIMEOUT", 120.0))  # an action the app has not answered in this long is a hang


@dataclass
class MonkeyReport:
    actions: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # operator messages shown (expected for odd input)
    problems: list[str] = field(default_factory=list)  # hangs, stale frames: what must never happen
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0


def rss_mb() -> float:
    """The process's resident memory now, in MiB (its peak where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Monkey:
    def __init__(self, app, seed: int, process_events: Callable[[], None], wait: Callable[[float], bool]) -> None:
        self.app, self.rng = app, random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.process_events, self.wait = process_events, wait
        self.report = MonkeyReport(rss_start_mb=rss_mb())
        self.last = ""
        self.trail: list[str] = []
        app.window.frameFailed.connect(self.report.failures.append)
        self.actions: list[tuple[str, Callable[[], None], int]] = [
            ("operator", self.switch_operator, 2), ("parameter", self.set_parameter, 10), ("click", self.click, 5),
            ("image", self.load_image, 2), ("dock", self.toggle_dock, 2), ("job", self.job, 1), ("resize", self.resize, 1),
            ("centre", self.toggle_centre, 1),
        ]

    # -- actions -------------------------------------------------------------------------------
    def switch_operator(self) -> None:
        from backends.registry import operator_names

        self.app.session.set_operator(self.rng.choice([n for n in operator_names() if not n.startswith("_")]))

    def set_parameter(self) -> None:
        from backends.params import ParamError
        from backends.registry import spec_of

        spec = self.rng.choice(spec_of(self.app.session.operator).params or (None,))
        if spec is None:
            return
        value = self._value(spec)
        self.last = f"parameter {spec.name}={value!r}"
        try:
            self.app.session.set_param(spec.name, value)
        except ParamError:
            pass  # refused with a message and the last good value kept: what the form shows

    def _value(self, spec):
        if isinstance(spec, FloatParam):
            return self.rng.choice([spec.minimum, spec.maximum, self.rng.uniform(spec.minimum, spec.maximum), float("nan")])
        if isinstance(spec, (IntParam, SeedParam)):
            return self.rng.choice([spec.minimum, spec.maximum, self.rng.randint(spec.minimum, min(spec.maximum, 10**6))])
        if isinstance(spec, ChoiceParam):
            return self.rng.choice(spec.choices + ("no such choice",))
        if isinstance(spec, BoolParam):
            return self.rng.choice([True, False])
        return spec.default

    def click(self) -> None:
        pixels = self.app.session.pixels
        h, w = pixels.shape[:2]
        self.app.window.canvas.clicked.emit(self.rng.uniform(-20, w + 20), self.rng.uniform(-20, h + 20))

    def load_image(self) -> None:
        kind = self.rng.choice(["random", "thin", "tall", "flat", "tiny", "large"])
        h, w = {"random": (self.rng.randint(8, 300), self.rng.randint(8, 300)), "thin": (1, self.rng.randint(2, 200)),
                "tall": (self.rng.randint(2, 200), 1), "flat": (64, 96), "tiny": (2, 2), "large": (900, 1300)}[kind]
        pixels = self.np_rng.random((h, w, 3)).astype(np.float32) if kind != "flat" else np.full((h, w, 3), 0.5, np.float32)
        self.app.window.set_image(normalize_array(pixels, f"monkey {kind} {w}x{h}"), "monkey")

    def toggle_dock(self) -> None:
        docks = list(self.app.window.docks.docks.values())
        if docks:
            dock = self.rng.choice(docks)
            dock.setVisible(not dock.isVisible())

    def job(self) -> None:
        """Start an action of the current operator and stop it at once (or let an instant one run)."""
        from backends.registry import spec_of

        actions = spec_of(self.app.session.operator).actions
        if not actions:
            return
        action = self.rng.choice(actions)
        self.app.window.start_job(action.name)
        self.process_events()
        if not action.instant:
            self.app.scheduler.stop_job()

    def resize(self) -> None:
        self.app.window.resize(*self.rng.choice([(1366, 768), (1920, 1080), (900, 700)]))

    def toggle_centre(self) -> None:
        self.app.window.stage.set_mode(self.rng.choice(["result", "input", "side by side"]))

    # -- the run -------------------------------------------------------------------------------
    def step(self) -> None:
        names, calls, weights = zip(*self.actions)
        i = self.rng.choices(range(len(names)), weights=weights)[0]
        self.last = names[i]
        calls[i]()
        self.trail = (self.trail + [f"{self.app.session.operator}: {self.last}"])[-6:]
        self.report.actions += 1
        self.report.counts[names[i]] = self.report.counts.get(names[i], 0) + 1
        self.process_events()

    def settle_and_check(self) -> None:
        """The app answers and draws the newest request (or says why it could not)."""
        scheduler = self.app.scheduler
        answered = self.wait(ANSWER_TIMEOUT_S)
        if not answered:
            self.report.problems.append(
                f"no answer within {ANSWER_TIMEOUT_S:.0f} s after action {self.report.actions} "
                f"({self.app.session.operator}: drawn {scheduler.frame_drawn()}, settled {scheduler.frame_settled()}, "
                f"waiting {scheduler.waiting_ms()}, job running {self.app.worker.job_running}, worker busy "
                f"{self.app.worker.busy}, alive {self.app.worker.alive}; last actions {self.trail})")
        elif not scheduler.frame_drawn() and not self.report.failures:
            self.report.problems.append(f"action {self.report.actions}: the drawn frame is not the newest request")

    def run(self, actions: int, check_every: int = 10) -> MonkeyReport:
        for n in range(actions):
            self.step()
            if (n + 1) % check_every == 0:
                self.settle_and_check()
        self.settle_and_check()
        self.report.rss_end_mb = rss_mb()
        return self.report


def wait_for_answer(app, process_events: Callable[[], None], timeout_s: float) -> bool:
    """Until the newest request is drawn or has failed, and no job runs; False on a time-out."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process_events()
        idle = app.scheduler.frame_settled() or app.scheduler.waiting_ms() is None
        if idle and not app.worker.job_running:
            return True
        time.sleep(0.005)
    return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="monkey", description=__doc__.splitlines()[0])
    p.add_argument("--actions", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    from backends.imageio import load_image
    from explorer.app import build
    from explorer.image_sources import sample_path

    app = build(load_image(sample_path()), "sample", "dilated", restore_layout=False)
    app.window.show()
    events = QtWidgets.QApplication.processEvents
    monkey = Monkey(app, args.seed, events, lambda t: wait_for_answer(app, events, t))
    previous_hook = sys.excepthook

    def reached_the_event_loop(kind, value, tb) -> None:  # an exception no handler caught
        monkey.report.problems.append(f"action {monkey.report.actions}: {kind.__name__}: {value}")
        previous_hook(kind, value, tb)

    sys.excepthook = reached_the_event_loop
    report = monkey.run(args.actions)
    app.close()
    print(f"{report.actions} actions {report.counts}; {len(report.failures)} messages shown; "
          f"problems: {report.problems or 'none'}; memory {report.rss_start_mb:.0f} -> {report.rss_end_mb:.0f} MiB")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
