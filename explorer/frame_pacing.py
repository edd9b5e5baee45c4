"""Frame pacing: a frame whose drawing held the UI thread past STALL_MS is drawn in two turns of
the event loop, the centre panel first and the docks a timer tick later, so input and timers get
the thread in between (and the result shows first).

Qt paints a window straight after the frame is applied, before any timer runs, so a frame's apply
and paint were one block: 9-10 ms for the operators with six changing panels. Split, the longer
half is what stalls. The split costs the docks about a millisecond, so it is taken only by frames
that need it, judged by the last frame's apply and paint time (with hysteresis)."""

from __future__ import annotations

from PySide6 import QtCore

from backends.timing import elapsed_ms, now

STALL_MS = 8.0  # a frame drawing longer than this in one block is split
KEEP_SPLIT_MS = 6.0  # ...and frames keep being split while they draw longer than this in all
DOCKS_AFTER_MS = 1  # the docks' turn comes a timer tick after the centre's paint
DOCKS_PER_TURN = 3  # a split frame's docks are drawn this many a turn
SPLIT_PANELS = 7  # a frame bringing this many panels is split whatever the last one took


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
        self.split = False
        self._apply_ms = self._paint_ms = 0.0
        self._timer = QtCore.QTimer(singleShot=True, interval=DOCKS_AFTER_MS)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._run)
        self._callback = None

    def frame_started(self, panels: int) -> bool:
        """A new frame of ``panels`` layers: judges the last frame, and says whether this one is
        split (a frame with many panels is, since the last may have been a light one)."""
        total = self._apply_ms + self._paint_ms
        if total > 0:
            self.split = total > (KEEP_SPLIT_MS if self.split else STALL_MS)
        self._apply_ms = self._paint_ms = 0.0
        self._timer.stop()  # a split frame's second turn is dropped: this one draws it all
        self._callback = None
        return self.split or panels >= SPLIT_PANELS

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
