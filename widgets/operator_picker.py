"""A filterable tree of operators grouped by family."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from PySide6 import QtCore, QtWidgets

NAME_ROLE = QtCore.Qt.ItemDataRole.UserRole


class OperatorPicker(QtWidgets.QWidget):
    operatorChosen = QtCore.Signal(str)

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.filter = QtWidgets.QLineEdit()
        self.filter.setPlaceholderText("Filter operators…")
        self.filter.setClearButtonEnabled(True)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderHidden(True)
        layout.addWidget(self.filter)
        layout.addWidget(self.tree)
        self.filter.textChanged.connect(self._apply_filter)
        self.tree.currentItemChanged.connect(self._on_current)

    def set_operators(self, families: Mapping[str, Sequence[tuple[str, str, str]]]) -> None:
        """``families[family] = [(name, title, description), ...]``."""
        self.tree.clear()
        for family, ops in families.items():
            parent = QtWidgets.QTreeWidgetItem([family])
            parent.setFlags(parent.flags() & ~QtCore.Qt.ItemFlag.ItemIsSelectable)
            for name, title, description in ops:
                child = QtWidgets.QTreeWidgetItem([title])
                child.setData(0, NAME_ROLE, name)
                child.setToolTip(0, description)
                parent.addChild(child)
            self.tree.addTopLevelItem(parent)
        self.tree.expandAll()

    def select(self, name: str) -> None:
        item = self._find(name)
        if item is not None:
            with QtCore.QSignalBlocker(self.tree):
                self.tree.setCurrentItem(item)

    def _find(self, name: str) -> Optional[QtWidgets.QTreeWidgetItem]:
        for i in range(self.tree.topLevelItemCount()):
            fam = self.tree.topLevelItem(i)
            for j in range(fam.childCount()):
                if fam.child(j).data(0, NAME_ROLE) == name:
                    return fam.child(j)
        return None

    def _on_current(self, item: Optional[QtWidgets.QTreeWidgetItem], _prev) -> None:
        if item is not None and item.data(0, NAME_ROLE):
            self.operatorChosen.emit(item.data(0, NAME_ROLE))

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()
        for i in range(self.tree.topLevelItemCount()):
            fam = self.tree.topLevelItem(i)
            fam_match = needle in fam.text(0).lower()
            shown = 0
            for j in range(fam.childCount()):
                child = fam.child(j)
                hit = not needle or fam_match or needle in child.text(0).lower() or needle in (child.data(0, NAME_ROLE) or "")
                child.setHidden(not hit)
                shown += hit
            fam.setHidden(shown == 0)
