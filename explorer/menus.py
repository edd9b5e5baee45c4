"""The window's menus, built from its actions; the shortcut help is read back from them, so a
shortcut added to a menu is listed without another edit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6 import QtGui, QtWidgets

from backends.registry import families, spec_of
from explorer import (
    batch_dialog,
    camera,
    image_sources,
    model_lab,
    presentation,
    session_actions,
    sweep_dialog,
    tours,
    window_actions,
)

if TYPE_CHECKING:
    from explorer.main_window import MainWindow


class WindowMenus:
    def __init__(self, window: MainWindow) -> None:
        self.window = w = window
        mb = w.menuBar()
        file_menu = mb.addMenu("&File")
        self.action(file_menu, "&Open Image…", lambda: w.images.open_dialog(w), QtGui.QKeySequence.StandardKey.Open)
        recent_menu = file_menu.addMenu("Open &Recent")
        recent_menu.aboutToShow.connect(lambda: w.images.fill_recent_menu(recent_menu))
        samples_menu = file_menu.addMenu("&Samples")
        for name, path in image_sources.samples().items():
            samples_menu.addAction(name, lambda p=path: w.open_path(p))
        self.action(file_menu, "&Paste Image", w.images.paste, QtGui.QKeySequence.StandardKey.Paste)
        self.action(file_menu, "&Sketch…", lambda: window_actions.show_sketchpad(w), "Ctrl+K")
        self.action(file_menu, "&Camera", lambda: camera.start(w))
        file_menu.addSeparator()
        self.action(file_menu, "Open &Model…", lambda: model_lab.open_dialog(w))
        self.action(file_menu, "Open timm Model…", lambda: model_lab.open_timm_dialog(w))
        file_menu.addSeparator()
        self.action(file_menu, "Save &Image", w.edits.save, "Ctrl+S")
        self.action(file_menu, "Save Image &As…", w.edits.save_as, "Ctrl+Shift+S")
        file_menu.addSeparator()
        self.action(file_menu, "Open Sessio&n…", lambda: session_actions.open_dialog(w))
        self.action(file_menu, "Save Sess&ion…", lambda: session_actions.save_dialog(w))
        self.action(file_menu, "Recover &Last Session", lambda: session_actions.recover(w))
        file_menu.addSeparator()
        self.action(file_menu, "&Export Window as PNG…", lambda: window_actions.export_window_dialog(w), "Ctrl+E")
        self.action(file_menu, "Record S&weep…", lambda: sweep_dialog.show_dialog(w))
        self.action(file_menu, "&Batch…", lambda: batch_dialog.show_dialog(w))
        self.action(file_menu, "Export &All Panels…", w.exports.export_all_dialog, "Ctrl+Shift+E")
        file_menu.addSeparator()
        self.action(file_menu, "&Quit", w.close, QtGui.QKeySequence.StandardKey.Quit)

        edit_menu = mb.addMenu("&Edit")
        undo = w.history.stack.createUndoAction(w, "&Undo")
        undo.setShortcut(QtGui.QKeySequence("Ctrl+Z"))
        redo = w.history.stack.createRedoAction(w, "&Redo")
        redo.setShortcut(QtGui.QKeySequence("Ctrl+Shift+Z"))
        edit_menu.addAction(undo)
        edit_menu.addAction(redo)
        self.action(edit_menu, "&History", lambda: window_actions.show_history(w), "Ctrl+H")
        edit_menu.addSeparator()
        self.action(edit_menu, "&Reset Parameters", w.reset_operator, "Ctrl+R")
        self.action(edit_menu, "&Forget Learned State", w.forget_learned_state)

        image_menu = mb.addMenu("&Image")
        image_menu.setToolTipsVisible(True)  # a disabled Apply says why
        w.edits.apply_action = self.action(image_menu, "&Apply as Edit", w.edits.apply, "Ctrl+Return")
        w.edits.update_action()
        self.action(image_menu, "Edit &History Panel", lambda: (w.edits.dock.setVisible(True), w.edits.dock.raise_()),
                    "Ctrl+Shift+H")

        self.view_menu = mb.addMenu("&View")
        self.fill_view_menu()

        ops_menu = mb.addMenu("&Operators")
        for fam, specs in families().items():
            sub = ops_menu.addMenu(fam)
            for spec in specs:
                sub.addAction(spec.title, lambda n=spec.name: w.session.set_operator(n))

        help_menu = mb.addMenu("&Help")
        self.action(help_menu, "&Keyboard Shortcuts", w.show_shortcuts, "F1")
        help_menu.addSeparator()
        self.action(help_menu, "&Tour of This Operator", lambda: tours.play_current(w), "Ctrl+T")
        tours_menu = help_menu.addMenu("T&ours")
        for name, path in tours.shipped().items():
            tours_menu.addAction(spec_of(name).title, lambda p=path: tours.play_file(w, p))
        self.action(help_menu, "Open Tour &File…", lambda: tours.open_dialog(w))

    @staticmethod
    def action(menu: QtWidgets.QMenu, text: str, slot, shortcut=None) -> QtGui.QAction:
        act = menu.addAction(text, slot)
        if shortcut is not None:
            act.setShortcut(QtGui.QKeySequence(shortcut))
        return act

    def fill_view_menu(self) -> None:
        """View actions, then a toggle for every dock: rebuilt when the docks change."""
        w, menu = self.window, self.view_menu
        menu.clear()
        self.action(menu, "&Fit to Window", w.canvas.fit, "Ctrl+0")
        self.action(menu, "Zoom &1:1", w.canvas.one_to_one, "Ctrl+1")
        self.action(menu, "Show &Input", w.stage.toggle_input, "Ctrl+I")
        self.action(menu, "Input and Result &Side by Side", lambda: w.stage.set_mode("side by side"), "Ctrl+Shift+I")
        self.action(menu, "&Pin Result for A/B", lambda: window_actions.pin_result(w), "Ctrl+P")
        self.action(menu, "A/B &Difference", lambda: w.stage.set_mode("A-B"), "Ctrl+Shift+P")
        self.action(menu, "A/B S&plit", lambda: w.stage.set_mode("A|B"), "Ctrl+Shift+B")
        self.action(menu, "Reset &Layout", w.reset_layout)
        self.action(menu, "Presentation &Mode", lambda: presentation.toggle(w), "F11")
        self.action(menu, "Leave Presentation or Tour", lambda: presentation.escape(w), "Esc")
        menu.addSeparator()
        for dock in (w.picker_dock, w.params_dock, w.sketch_dock, w.edits.dock, *w.docks.docks.values()):
            menu.addAction(dock.toggleViewAction())

    def shortcut_lines(self) -> list[str]:
        """Every menu action that has a shortcut, as the help lists it."""
        lines = []
        for menu in self.window.menuBar().findChildren(QtWidgets.QMenu):
            for act in menu.actions():
                key = act.shortcut().toString(QtGui.QKeySequence.SequenceFormat.NativeText)
                if key and not act.menu():
                    lines.append(f"{key}   {act.text().replace('&', '').rstrip('…')}")
        return list(dict.fromkeys(lines))
