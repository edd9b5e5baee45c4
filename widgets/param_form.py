"""A parameter form generated from parameter specs (duck-typed on ``kind``, ``name``, range).

A small builder of our own rather than pyqtgraph's ParameterTree: each numeric row needs a
slider and a spin box bound both ways without echo, and seeds need a dice button; the tree's
slider item has no spin box and its indentation wastes a narrow dock's width.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Optional, Sequence

from PySide6 import QtCore, QtWidgets

SLIDER_STEPS = 1000


class _Row(QtCore.QObject):
    changed = QtCore.Signal(str, object)

    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.spec = spec
        self.widget = QtWidgets.QWidget()
        self.layout = QtWidgets.QHBoxLayout(self.widget)
        self.layout.setContentsMargins(0, 0, 0, 0)
        self.widget.setToolTip(getattr(spec, "help", ""))

    def emit(self, value: Any) -> None:
        self.changed.emit(self.spec.name, value)


class _NumberRow(_Row):
    def __init__(self, spec: Any, integer: bool) -> None:
        super().__init__(spec)
        self.integer = integer
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        if integer:
            self.spin = QtWidgets.QSpinBox()
            self.slider.setRange(int(spec.minimum), int(spec.maximum))
            self.slider.setSingleStep(int(spec.step))
            self.spin.setRange(int(spec.minimum), int(spec.maximum))
            self.spin.setSingleStep(int(spec.step))
        else:
            self.spin = QtWidgets.QDoubleSpinBox()
            self.slider.setRange(0, SLIDER_STEPS)
            self.spin.setRange(spec.minimum, spec.maximum)
            self.spin.setSingleStep(spec.step)
            self.spin.setDecimals(max(0, min(6, len(f"{spec.step:g}".split(".")[-1]) if "." in f"{spec.step:g}" else 0)))
        self.spin.setKeyboardTracking(False)
        self.spin.setMinimumWidth(70)
        self.layout.addWidget(self.slider, 1)
        self.layout.addWidget(self.spin)
        self.slider.valueChanged.connect(self._from_slider)
        self.spin.valueChanged.connect(self._from_spin)

    def _to_slider(self, value: float) -> int:
        if self.integer:
            return int(value)
        lo, hi = self.spec.minimum, self.spec.maximum
        return round((value - lo) / (hi - lo) * SLIDER_STEPS) if hi > lo else 0

    def _from_slider(self, pos: int) -> None:
        if self.integer:
            value: Any = int(pos)
        else:
            lo, hi = self.spec.minimum, self.spec.maximum
            value = lo + (hi - lo) * pos / SLIDER_STEPS
            value = round(value / self.spec.step) * self.spec.step
            value = float(min(max(value, lo), hi))
        with QtCore.QSignalBlocker(self.spin):
            self.spin.setValue(value)
        self.emit(value)

    def _from_spin(self, value: Any) -> None:
        with QtCore.QSignalBlocker(self.slider):
            self.slider.setValue(self._to_slider(value))
        self.emit(int(value) if self.integer else float(value))

    def set_value(self, value: Any) -> None:
        with QtCore.QSignalBlocker(self.spin), QtCore.QSignalBlocker(self.slider):
            self.spin.setValue(value)
            self.slider.setValue(self._to_slider(value))


class _ChoiceRow(_Row):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.combo = QtWidgets.QComboBox()
        self.combo.addItems(list(spec.choices))
        self.layout.addWidget(self.combo, 1)
        self.combo.currentTextChanged.connect(self.emit)

    def set_value(self, value: Any) -> None:
        with QtCore.QSignalBlocker(self.combo):
            self.combo.setCurrentText(str(value))


class _BoolRow(_Row):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.check = QtWidgets.QCheckBox()
        self.layout.addWidget(self.check, 1)
        self.check.toggled.connect(self.emit)

    def set_value(self, value: Any) -> None:
        with QtCore.QSignalBlocker(self.check):
            self.check.setChecked(bool(value))


class _SeedRow(_Row):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.spin = QtWidgets.QSpinBox()
        self.spin.setRange(int(spec.minimum), int(spec.maximum))
        self.spin.setKeyboardTracking(False)
        dice = QtWidgets.QToolButton()
        dice.setText("New")
        dice.setToolTip("Draw a new random seed")
        dice.clicked.connect(lambda: self.spin.setValue(random.randint(0, 99999)))
        self.layout.addWidget(self.spin, 1)
        self.layout.addWidget(dice)
        self.spin.valueChanged.connect(lambda v: self.emit(int(v)))

    def set_value(self, value: Any) -> None:
        with QtCore.QSignalBlocker(self.spin):
            self.spin.setValue(int(value))


class _PointRow(_Row):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.xs, self.ys = QtWidgets.QDoubleSpinBox(), QtWidgets.QDoubleSpinBox()
        for box in (self.xs, self.ys):
            box.setRange(0.0, 1.0)
            box.setSingleStep(0.01)
            box.setKeyboardTracking(False)
            box.valueChanged.connect(lambda _v: self.emit((self.xs.value(), self.ys.value())))
            self.layout.addWidget(box)

    def set_value(self, value: Any) -> None:
        with QtCore.QSignalBlocker(self.xs), QtCore.QSignalBlocker(self.ys):
            self.xs.setValue(float(value[0]))
            self.ys.setValue(float(value[1]))


def _make_row(spec: Any) -> _Row:
    kind = spec.kind
    if kind in ("float", "int"):
        return _NumberRow(spec, integer=kind == "int")
    if kind == "choice":
        return _ChoiceRow(spec)
    if kind == "bool":
        return _BoolRow(spec)
    if kind == "seed":
        return _SeedRow(spec)
    if kind == "point":
        return _PointRow(spec)
    raise ValueError(f"no form row for parameter kind {kind!r}")


class ParamForm(QtWidgets.QWidget):
    """``valueChanged(name, value)`` fires on every user edit, live while a slider moves."""

    valueChanged = QtCore.Signal(str, object)
    resetRequested = QtCore.Signal()

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        outer = QtWidgets.QVBoxLayout(self)
        self.title = QtWidgets.QLabel()
        self.title.setWordWrap(True)
        self.title.setStyleSheet("font-weight: bold;")
        self.description = QtWidgets.QLabel()
        self.description.setWordWrap(True)
        self.description.setStyleSheet("color: #aaa;")
        outer.addWidget(self.title)
        outer.addWidget(self.description)
        self._form_host = QtWidgets.QWidget()
        self._form = QtWidgets.QFormLayout(self._form_host)
        self._form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        outer.addWidget(self._form_host)
        self.footer = QtWidgets.QVBoxLayout()  # for a caller's widgets under the form (job buttons)
        outer.addLayout(self.footer)
        reset = QtWidgets.QPushButton("Reset parameters")
        reset.setToolTip("Every parameter back to its default")
        reset.clicked.connect(self.resetRequested)
        outer.addWidget(reset)
        outer.addStretch(1)
        self.rows: dict[str, _Row] = {}

    def set_specs(self, specs: Sequence[Any], values: Mapping[str, Any], title: str = "", description: str = "") -> None:
        while self._form.rowCount():
            self._form.removeRow(0)
        self.rows.clear()
        self.title.setText(title)
        self.description.setText(description)
        for spec in specs:
            row = _make_row(spec)
            row.set_value(values.get(spec.name, spec.default))
            row.changed.connect(self.valueChanged)
            label = QtWidgets.QLabel(spec.name.replace("_", " "))
            label.setToolTip(getattr(spec, "help", ""))
            self._form.addRow(label, row.widget)
            row.label = label
            self.rows[spec.name] = row

    def set_active(self, reasons: Mapping[str, str]) -> None:
        """Greys out the rows named in ``reasons`` (parameter -> why it does nothing now, shown
        as its tooltip); every other row is enabled."""
        for name, row in self.rows.items():
            reason = reasons.get(name, "")
            active = not reason
            if row.widget.isEnabled() != active:
                row.widget.setEnabled(active)
                row.label.setEnabled(active)
            help_text = getattr(row.spec, "help", "")
            tip = f"{help_text}\n(does nothing now: {reason})" if reason else help_text
            row.widget.setToolTip(tip)
            row.label.setToolTip(tip)

    def is_active(self, name: str) -> bool:
        return self.rows[name].widget.isEnabled()

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Shows ``values`` without emitting valueChanged (no echo back to the session)."""
        for name, value in values.items():
            if name in self.rows:
                self.rows[name].set_value(value)
