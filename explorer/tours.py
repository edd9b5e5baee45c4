"""Guided tours: per operator a short script of steps, each a caption that teaches, the parameter
values it sets, where it puts the query point and, optionally, a sweep it animates. Stepped with
the arrow keys (Right, Left; Esc ends). Tours are JSON data files (``assets/tours/<operator>.json``),
so a teacher can write their own and open it with Help > Open Tour File…; a file is checked
against the operator's spec when it loads, and a bad step is named in the message.

    {"operator": "dilated", "title": "...", "image": "chelsea",        (image: a sample, optional)
     "steps": [{"caption": "...", "params": {"dilation": 1}, "query": [0.5, 0.4]},
               {"caption": "...", "sweep": {"param": "dilation", "from": 1, "to": 8, "frames": 8}}]}

``query`` is a fraction of the image's width and height (so a tour fits any image). Parameters
accumulate from the operator's defaults through the steps; a sweep leaves its parameter at its
last value for the steps after it. Stepping back restores the earlier step exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from PySide6 import QtCore, QtGui, QtWidgets

from backends.params import ParamError, validate
from backends.registry import UnknownOperator, spec_of
from explorer.sweep import set_shown_param, sweep_values

TOURS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tours"
SWEEP_INTERVAL_MS = 350  # per sweep frame: slow enough to read, quick enough to see the motion
MAX_SWEEP_FRAMES = 60
CAPTION_SCALE = 1.25
PAD_X, PAD_Y = 16, 12  # the caption's padding, pixels


class TourError(ValueError):
    """A tour file that cannot be played; the message names the file and the step."""


@dataclass(frozen=True)
class Sweep:
    param: str
    values: tuple[Any, ...]
    interval_ms: int = SWEEP_INTERVAL_MS


@dataclass(frozen=True)
class Step:
    caption: str
    params: dict[str, Any]
    query: Optional[tuple[float, float]] = None  # fractions of width and height
    sweep: Optional[Sweep] = None


@dataclass(frozen=True)
class Tour:
    operator: str
    title: str
    steps: tuple[Step, ...]
    image: str = ""  # a bundled sample's name, or "" for the image already open
    source: str = ""


def shipped() -> dict[str, Path]:
    """The bundled tours, by operator name."""
    return {p.stem: p for p in sorted(TOURS_DIR.glob("*.json"))}


def load_tour(path: str | Path) -> Tour:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TourError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TourError(f"{path.name}: not valid JSON ({exc})") from None
    return parse_tour(data, path.name)


def parse_tour(data: Any, source: str = "tour") -> Tour:
    """Checks every step against the operator's spec; a TourError names the step that fails."""
    if not isinstance(data, dict):
        raise TourError(f"{source}: expected a JSON object with operator, title and steps")
    try:
        spec = spec_of(str(data.get("operator", "")))
    except UnknownOperator:
        raise TourError(f"{source}: no operator {data.get('operator')!r}") from None
    image = str(data.get("image", ""))
    if image:
        from explorer.image_sources import samples

        if image not in samples():
            raise TourError(f"{source}: no sample image {image!r}; samples are {', '.join(samples())}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise TourError(f"{source}: 'steps' must be a non-empty list")
    steps, values = [], {}
    for n, raw in enumerate(raw_steps, 1):
        try:
            step = _step(spec.name, raw, values)
        except (ParamError, TypeError, ValueError) as exc:
            raise TourError(f"{source}: step {n}: {exc}") from None
        steps.append(step)
        values.update(step.params)
        if step.sweep is not None:
            values[step.sweep.param] = step.sweep.values[-1]
    return Tour(spec.name, str(data.get("title", spec.title)), tuple(steps), image, source)


def _step(operator: str, raw: Any, before: dict[str, Any]) -> Step:
    if not isinstance(raw, dict):
        raise ValueError("expected an object with a caption")
    unknown = set(raw) - {"caption", "params", "query", "sweep"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} (a step has caption, params, query, sweep)")
    caption = raw.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError("a step needs a caption")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise ValueError("'params' must be an object of parameter values")
    checked = validate(spec_of(operator).params, {**before, **params})
    params = {k: checked[k] for k in params}
    query = raw.get("query")
    if query is not None:
        if not (isinstance(query, list) and len(query) == 2 and all(isinstance(v, (int, float)) for v in query)
                and all(0.0 <= v <= 1.0 for v in query)):
            raise ValueError(f"query {query!r}: expected [x, y], fractions of the width and height in 0..1")
        query = (float(query[0]), float(query[1]))
    sweep = None
    if "sweep" in raw:
        s = raw["sweep"]
        if not isinstance(s, dict) or "param" not in s:
            raise ValueError("'sweep' must be an object with param, from, to and frames")
        frames = int(s.get("frames", 8))
        if not 2 <= frames <= MAX_SWEEP_FRAMES:
            raise ValueError(f"sweep frames must be within 2..{MAX_SWEEP_FRAMES}, got {frames}")
        try:
            found = sweep_values(operator, str(s["param"]), s.get("from", 0), s.get("to", 0), frames)
        except KeyError:
            raise ParamError(f"sweep: {operator} has no parameter {s['param']!r}") from None
        sweep = Sweep(str(s["param"]), tuple(found), int(s.get("interval_ms", SWEEP_INTERVAL_MS)))
    return Step(caption.strip(), params, query, sweep)


def state_at(tour: Tour, index: int) -> tuple[dict[str, Any], Optional[tuple[float, float]]]:
    """The edited values and query fraction on arriving at step ``index``: every earlier step's
    values (a sweep's last one), then this step's (its sweep's first)."""
    values: dict[str, Any] = {}
    query = None
    for n, step in enumerate(tour.steps[: index + 1]):
        values.update(step.params)
        query = step.query if step.query is not None else query
        if step.sweep is not None:
            values[step.sweep.param] = step.sweep.values[-1 if n < index else 0]
    return values, query


class TourPlayer(QtCore.QObject):
    """Plays a tour on the window: a caption over the stage, Right and Left to step."""

    stepped = QtCore.Signal(int)
    sweepDone = QtCore.Signal()
    ended = QtCore.Signal()

    def __init__(self, window, tour: Tour) -> None:
        super().__init__(window)
        self.window, self.tour = window, tour
        self.index = -1
        self._sweep: list[Any] = []
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self._sweep_frame)
        self.caption = QtWidgets.QLabel(window)  # over the stage, above every panel in it
        self.caption.setObjectName("tourCaption")
        self.caption.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.caption.setWordWrap(True)
        self.caption.setStyleSheet(f"background: rgba(10, 10, 14, 215); color: #fff; padding: {PAD_Y}px {PAD_X}px;"
                                   "border-radius: 6px; border: 1px solid rgba(120, 190, 255, 160);")
        self._keys = [QtGui.QShortcut(QtGui.QKeySequence(k), window, slot) for k, slot in
                      ((QtCore.Qt.Key.Key_Right, self.next), (QtCore.Qt.Key.Key_Left, self.back))]
        window.stage.installEventFilter(self)
        window.frameApplied.connect(self._keep_on_top)  # a new centre panel is stacked above it

    @property
    def active(self) -> bool:
        return self.index >= 0

    def start(self) -> None:
        w = self.window
        if self.tour.image:
            from explorer.image_sources import samples

            w.open_path(samples()[self.tour.image])
        w.session.set_operator(self.tour.operator)
        self.go(0)
        self.caption.show()

    def next(self) -> None:
        if self.index + 1 < len(self.tour.steps):
            self.go(self.index + 1)

    def back(self) -> None:
        if self.index > 0:
            self.go(self.index - 1)

    def go(self, index: int) -> None:
        """Puts the session in step ``index``'s state and starts its sweep, if it has one."""
        w, step = self.window, self.tour.steps[index]
        self._timer.stop()
        self.index = index
        if w.session.operator != self.tour.operator:
            w.session.set_operator(self.tour.operator)
        values, query = state_at(self.tour, index)
        if values != w.session.state.params.get(self.tour.operator, {}):
            w.session.reset_params()
            if values:
                w.session.set_params(values)
        if query is not None and w.session.pixels is not None:
            h, width = w.session.pixels.shape[:2]
            w.session.set_query(min(width - 1, int(query[0] * width)), min(h - 1, int(query[1] * h)))
        self._show_caption(step)
        if step.sweep is not None:
            self._sweep = list(step.sweep.values[1:])
            self._timer.start(step.sweep.interval_ms)
        self.stepped.emit(index)

    def _sweep_frame(self) -> None:
        if not self._sweep:
            self._timer.stop()
            self.sweepDone.emit()
            return
        set_shown_param(self.window, self.tour.steps[self.index].sweep.param, self._sweep.pop(0))

    def _show_caption(self, step: Step) -> None:
        n = len(self.tour.steps)
        keys = "→ next   ← back   Esc end" if self.index + 1 < n else "← back   Esc end"
        self.caption.setText(f"{self.tour.title}  ·  step {self.index + 1} of {n}\n\n{step.caption}\n\n{keys}")
        font = QtGui.QFont(QtWidgets.QApplication.font())
        font.setPointSizeF(font.pointSizeF() * CAPTION_SCALE)
        self.caption.setFont(font)
        self._place()

    def _place(self) -> None:
        stage = self.window.stage
        width = max(200, min(stage.width() - 40, int(stage.width() * 0.8)))
        self.caption.setFixedWidth(width)
        metrics = QtGui.QFontMetrics(self.caption.font())
        text = metrics.boundingRect(QtCore.QRect(0, 0, width - 2 * PAD_X - 2, 10_000), QtCore.Qt.TextFlag.TextWordWrap,
                                    self.caption.text())
        self.caption.setFixedHeight(text.height() + 2 * PAD_Y + metrics.height())  # a line's slack: the label wraps a little narrower
        self.caption.move(stage.mapTo(self.window, QtCore.QPoint((stage.width() - width) // 2,
                                                                  max(0, stage.height() - self.caption.height() - 24))))
        self.caption.raise_()

    def _keep_on_top(self, _stamp: int = 0) -> None:
        if self.active:
            self.caption.raise_()

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if not self.active:
            return False
        if watched is self.window.stage and event.type() == QtCore.QEvent.Type.Resize:
            self._place()
        return False

    def stop(self) -> None:
        self._timer.stop()
        self.index = -1
        self.window.stage.removeEventFilter(self)
        self.window.frameApplied.disconnect(self._keep_on_top)
        for key in self._keys:
            key.setEnabled(False)
            key.deleteLater()
        self.caption.deleteLater()
        self.ended.emit()
        self.deleteLater()


def refresh_caption(window) -> None:
    """Redraws the running tour's caption in the application's font (presentation mode scales it)."""
    player = current(window)
    if player is not None:
        player._show_caption(player.tour.steps[player.index])


def current(window) -> Optional[TourPlayer]:
    return next((p for p in window.findChildren(TourPlayer) if p.active), None)


def play(window, tour: Tour) -> TourPlayer:
    """Ends any tour running, then starts ``tour``."""
    stop(window)
    player = TourPlayer(window, tour)
    player.start()
    return player


def stop(window) -> bool:
    """Ends the running tour; False when none runs."""
    player = current(window)
    if player is None:
        return False
    player.stop()
    return True


def play_file(window, path: str | Path) -> Optional[TourPlayer]:
    """Loads and plays a tour file; a bad file is said in the banner, and nothing changes."""
    try:
        tour = load_tour(path)
    except TourError as exc:
        window.banner.show_message(f"Tour not started: {exc}", "error")
        return None
    return play(window, tour)


def play_current(window) -> Optional[TourPlayer]:
    """Help > Tour of This Operator: the bundled tour of the current operator, if it has one."""
    path = shipped().get(window.session.operator)
    if path is None:
        names = ", ".join(spec_of(n).title for n in shipped())
        window.banner.show_message(f"{spec_of(window.session.operator).title} has no tour yet; tours: {names}.", "notice")
        return None
    return play_file(window, path)


def open_dialog(window) -> None:
    path, _ = QtWidgets.QFileDialog.getOpenFileName(window, "Open tour", str(TOURS_DIR), "Tour (*.json)")
    if path:
        play_file(window, path)
