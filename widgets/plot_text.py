"""Text around a plot that must stay whole in a narrow dock: the series key wrapped to the plot's
width in pixels, axis titles shrunk and then elided to their axis, and the names of many bars
shrunk before any is left out. Each is fitted again when the plot is resized."""

from __future__ import annotations

import html
from typing import Sequence

from PySide6 import QtCore, QtGui

KEY_PT = 9.0
LABEL_PT = (9.0, 8.0, 7.5)  # axis titles: the first size that fits, else the last one elided
TICK_PT = (9.0, 8.0, 7.0)  # bar names: the first size at which every bar keeps its name
KEY_GAP = "&nbsp;&nbsp;&nbsp;"
AXIS_NOTE = "axis"  # a title-row entry that is an axis title, drawn plain
KEY_MARGIN_PX = 16  # the title row's margins inside the plot
LABEL_MARGIN_PX = 16  # an axis title's document margins and pyqtgraph's trailing space


def font_at(base: QtGui.QFont, points: float) -> QtGui.QFont:
    font = QtGui.QFont(base)
    font.setPointSizeF(points)
    return font


def key_rows(names: Sequence[str], width_px: float, base: QtGui.QFont) -> list[list[str]]:
    """The key's lines: each a list of entries, an entry the index of a series (its square and
    name) or, for a name too long for a line, the rest of that name carried to the next line.
    A line takes entries while they fit ``width_px``; entries are three spaces apart."""
    metrics = QtGui.QFontMetricsF(font_at(base, KEY_PT))
    square, gap = metrics.horizontalAdvance("\u25a0 "), metrics.horizontalAdvance("   ")
    rows: list[list] = [[]]
    used = 0.0
    for i, name in enumerate(names):
        pieces = _wrap_words(name, width_px - square, metrics)
        entry = square + metrics.horizontalAdvance(pieces[0])
        if rows[-1] and used + gap + entry > width_px:
            rows.append([])
            used = 0.0
        used += (gap if rows[-1] else 0.0) + entry
        rows[-1].append((i, pieces[0]))
        for piece in pieces[1:]:  # the rest of a long name, under its first line
            rows.append([(None, piece)])
            used = square + metrics.horizontalAdvance(piece)
    return rows


def note_rows(notes: Sequence[str], width_px: float, base: QtGui.QFont) -> list[list]:
    """Plain lines of the title row (an axis title moved there), wrapped at spaces to ``width_px``:
    one entry each, marked ``AXIS_NOTE`` for :func:`key_html`."""
    metrics = QtGui.QFontMetricsF(font_at(base, KEY_PT))
    return [[(AXIS_NOTE, line)] for note in notes for line in _wrap_words(note, width_px, metrics)]


def _wrap_words(text: str, width_px: float, metrics: QtGui.QFontMetricsF) -> list[str]:
    """``text`` in lines no wider than ``width_px``, broken at spaces (a single word too wide
    keeps a line of its own)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and metrics.horizontalAdvance(lines[-1] + " " + word) <= width_px:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def key_html(colors: Sequence[tuple[int, int, int]], rows: list[list]) -> str:
    def entry(index, text: str) -> str:
        if index == AXIS_NOTE:
            return f"<span style='color:#aaa'>{html.escape(text, quote=False)}</span>"
        # the rest of a long name gets a square in the background's colour: it lines up under its first line
        r, g, b = (24, 24, 28) if index is None else colors[index]
        return f"<span style='color:#{r:02x}{g:02x}{b:02x}'>&#9632;</span>&nbsp;{html.escape(text, quote=False)}"

    body = "<br>".join(KEY_GAP.join(entry(i, t) for i, t in row) for row in rows)
    return f"<span style='font-size:{KEY_PT:g}pt; color:#ddd'>{body}</span>"


def fit_axis_title(axis, text: str, length_px: float, base: QtGui.QFont) -> tuple[str, float]:
    """Sets ``axis``'s title to ``text`` at the largest of LABEL_PT at which the title as drawn
    (units and SI scale included) fits ``length_px``, else at the smallest, cut at the end with an
    ellipsis until it fits. Returns (text as shown, point size)."""
    def drawn(shown: str, points: float) -> float:
        axis.setLabel(shown, **{"font-size": f"{points:g}pt"}) if shown else axis.setLabel("")
        return axis.label.boundingRect().width() if shown else 0.0

    for points in LABEL_PT:
        if drawn(text, points) <= length_px:
            return text, points
    points = LABEL_PT[-1]
    metrics = QtGui.QFontMetricsF(font_at(base, points))
    room = metrics.horizontalAdvance(text)
    shown = text
    for _ in range(4):  # the drawn title runs wider than the metrics say (margins, units): shrink to fit
        width = drawn(shown, points)
        if width <= length_px:
            break
        room *= length_px / width
        shown = metrics.elidedText(text, QtCore.Qt.TextElideMode.ElideRight, max(room, 1.0))
    return shown, points


def bar_names_font(base: QtGui.QFont, count: int, room_px: float, needed_px) -> tuple[QtGui.QFont, int]:
    """(font, step): the largest of TICK_PT at which ``count`` names fit ``room_px`` side by side
    (``needed_px(metrics)`` is one name's share of the room), step 1; else the smallest size and
    every step-th name."""
    for points in TICK_PT:
        font = font_at(base, points)
        if needed_px(QtGui.QFontMetricsF(font)) * count <= room_px:
            return font, 1
    font = font_at(base, TICK_PT[-1])
    per = needed_px(QtGui.QFontMetricsF(font))
    return font, max(1, -(-int(per * count) // max(int(room_px), 1)))
