"""Frame pacing: a heavy frame is drawn in turns of the event loop, the centre panel first and the
docks a few a turn, so input and timers get the UI thread in between (and the result shows first).

Qt paints a window straight after a frame is applied, before any timer runs, so a frame's apply
and paint were one block: 9-10 ms for the operators with six changing panels. In turns, the
longest turn is what stalls. A turn costs the frame about half a millisecond, so only frames that
need it are split: after a frame whose apply and paint took past STALL_MS (and while they keep
costing past KEEP_SPLIT_MS), and any frame that changes as many docks in view as a heavy frame of
the same operator did (upsampling's heavy frames come between light ones). A fixed dock count
split light frames too: deformable kernels' p95 rose from 15.3 to 17.4 ms with a one-millisecond
timer between turns."""

from __future__ import annotations

from PySide6 import QtCore

from backends.timing import elapsed_ms, now

STALL_MS = 8.0  # a frame drawing longer than this in one block is split
KEEP_SPLIT_MS = 6.0  # ...and frames keep being split while they draw longer than this in all
DOCKS_AFTER_MS = 0  # a zero timer: it runs after the paint Qt queued for the turn before
HEAVY_DOCKS_UNKNOWN = 1_000  # no heavy frame seen yet for this operator
DOCKS_PER_TURN = 3  # a split frame's docks come this many a turn
LEARN_WITHIN = 16  # a dock count is learned from the second heavy frame within this many frames
FORGET_AFTER = 48  # ...and forgotten when this many frames pass without another heavy one


class PaintTimed:
    """A window mixin that times each paint of the window (Qt's UpdateRequest), dirty panels and
    all, into ``last_paint_ms`` and its ``pacer``."""

    last_paint_ms = 0.0
    pacer: FramePacer

    def event(self, event: QtCore.QEvent) -> bool:
        if event.type() != QtCore.QEvent.Type.UpdateRequest:
            return super().event(event)
        t0 = now()
        handled = super().event(event)
        self.last_paint_ms = elapsed_ms(t0)
        self.pacer.painted(self.last_paint_ms)
        return handled


class FramePacer:
    """Whether a frame's docks wait for a later turn, judged by the UI time the last frame took
    (its apply, in one turn or two, and every paint until the next frame)."""

    def __init__(self) -> None:
        self._split = False
        self._apply_ms = self._paint_ms = 0.0
        self._docks, self._heavy_docks, self._unlearned = 0, HEAVY_DOCKS_UNKNOWN, 0
        self._frame = 0
        self._heavy: list[tuple[int, int]] = []  # (frame, docks) of the recent heavy frames
        self._timer = QtCore.QTimer(singleShot=True, interval=DOCKS_AFTER_MS)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._run)
        self._callback = None

    def frame_started(self, docks: int = 0) -> bool:
        """A new frame changing ``docks`` docks in view: judges the last one, and says whether this
        one is split: after a heavy frame, or when it changes as many docks as a heavy frame of
        this operator did (an operator whose heavy frames come between light ones)."""
        total = self._apply_ms + self._paint_ms
        if total > 0:
            self._split = total > (KEEP_SPLIT_MS if self._split else STALL_MS)
            if total > STALL_MS and self._docks and not self._unlearned:
                self._learn(self._docks)
        self._frame += 1
        if self._heavy and self._frame - self._heavy[-1][0] > FORGET_AFTER:
            self._heavy, self._heavy_docks = [], HEAVY_DOCKS_UNKNOWN  # light for long enough: no longer heavy
        self._unlearned = max(0, self._unlearned - 1)
        self._apply_ms = self._paint_ms = 0.0
        self._docks = docks
        self._timer.stop()  # a split frame's second turn is dropped: this one draws it all
        self._callback = None
        return self._split or docks >= self._heavy_docks

    def _learn(self, docks: int) -> None:
        """A heavy frame that changed ``docks`` docks in view. One alone (a collection, a cache
        filled once) teaches nothing: lab_vit's frames, 3 ms each, were all split after one. A
        second within LEARN_WITHIN frames makes frames that change as many docks split."""
        self._heavy = [(f, d) for f, d in self._heavy if self._frame - f < LEARN_WITHIN] + [(self._frame, docks)]
        if len(self._heavy) >= 2:
            self._heavy_docks = min(self._heavy_docks, max(d for _f, d in self._heavy[-2:]))

    def panels_changed(self) -> None:
        """This frame made or removed panels: neither its time nor the next frame's (the first
        paint of new panels) says anything about its docks, so neither is learned from."""
        self._unlearned = 2

    def new_operator(self) -> None:
        """What made a frame heavy for the last operator says nothing about this one."""
        self._heavy_docks, self._heavy = HEAVY_DOCKS_UNKNOWN, []

    def applied(self, ms: float) -> None:
        self._apply_ms += ms

    def painted(self, ms: float) -> None:
        self._paint_ms += ms

    def later(self, callback) -> None:
        """Runs ``callback`` a timer tick from now, unless a newer frame starts first."""
        self._callback = callback
        self._timer.start()

    def _run(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()
