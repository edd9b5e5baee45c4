"""A seeded monkey drives the real window through a few hundred random actions: operators,
parameters (in range, at the bounds, NaN, unknown choices), clicks inside and outside the image,
odd images (1xN, Nx1, flat, large), docks, jobs started and stopped, window sizes. After every ten
actions the app must answer and draw the newest request (or say why not); no exception may reach
the event loop (pytest-qt fails the test if one does); memory stays bounded.

The long run is a script: ``python -m explorer.monkey --actions 6000 --seed 3``."""

from PySide6 import QtWidgets

from explorer.monkey import Monkey, rss_mb, wait_for_answer

ACTIONS = 200
MEMORY_GROWTH_MB = 1500  # models and caches of every operator loaded once, plus large test images


def test_a_few_hundred_random_actions_leave_the_app_answering(app, qtbot):
    start = rss_mb()
    events = QtWidgets.QApplication.processEvents
    monkey = Monkey(app, seed=5, process_events=events, wait=lambda t: wait_for_answer(app, events, t))
    report = monkey.run(ACTIONS)
    assert report.actions == ACTIONS and len(report.counts) >= 6
    assert not report.problems
    assert rss_mb() - start < MEMORY_GROWTH_MB
