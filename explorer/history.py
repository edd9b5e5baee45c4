"""Undo and redo of the session's edits (parameters, query, operator), on Qt's undo stack.

A slider drag is one step: changes of one parameter less than ``MERGE_S`` apart merge into one
command. Undo puts the state back through the session, so every view follows as for any edit."""

from __future__ import annotations

from typing import Optional

from PySide6 import QtCore, QtGui

from backends.registry import spec_of
from backends.timing import now
from explorer.session import Edit, Session

MERGE_S = 0.6  # a drag sends changes far closer together than a person's separate edits
PARAM_COMMAND = 1


class EditCommand(QtGui.QUndoCommand):
    def __init__(self, history: History, edit: Edit) -> None:
        super().__init__(describe(edit))
        self.history, self.edit, self.at = history, edit, now()
        self._first = True

    def redo(self) -> None:
        if self._first:  # pushed after the change happened: nothing to do the first time
            self._first = False
            return
        self.history.apply(self.edit, "after")

    def undo(self) -> None:
        self.history.apply(self.edit, "before")

    def id(self) -> int:
        return PARAM_COMMAND if self.edit.kind == "params" and self.edit.name else -1

    def mergeWith(self, other: QtGui.QUndoCommand) -> bool:
        e, o = self.edit, other.edit
        if (o.kind, o.operator, o.name) != (e.kind, e.operator, e.name) or other.at - self.at > MERGE_S:
            return False
        self.edit = Edit(e.kind, e.operator, e.before, o.after, e.name)
        self.at = other.at
        self.setText(describe(self.edit))
        return True


class History(QtCore.QObject):
    def __init__(self, session: Session, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.session = session
        self.stack = QtGui.QUndoStack(self)
        self._applying = False
        session.edited.connect(self._record)

    def _record(self, edit: Edit) -> None:
        if not self._applying:
            self.stack.push(EditCommand(self, edit))

    def apply(self, edit: Edit, side: str) -> None:
        self._applying = True
        try:
            self.session.restore(edit, side)
        finally:
            self._applying = False


def describe(edit: Edit) -> str:
    """The step as the History view lists it."""
    if edit.kind == "operator":
        return f"operator: {spec_of(edit.after).title}"
    if edit.kind == "query":
        return f"query: {edit.after}"
    if edit.name:
        return f"{edit.name} = {edit.after.get(edit.name, '(default)')}"
    return "parameters reset" if not edit.after else "parameters set"
