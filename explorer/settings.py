"""Where the app keeps window layout and recent files. ``OPSCOPE_CONFIG_DIR`` redirects it
(tests point it at a temporary folder so they never touch a user's settings)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PySide6 import QtCore

ORG, APP = "OpScope", "OpScope"


def make_settings() -> QtCore.QSettings:
    """The settings file; a configured folder that cannot be made or written falls back to a
    temporary one (the app then forgets its layout at exit, and says nothing breaks)."""
    folder = os.environ.get("OPSCOPE_CONFIG_DIR")
    if folder:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(folder)
        except OSError:
            folder = tempfile.mkdtemp(prefix="opscope-settings-")
        return QtCore.QSettings(str(Path(folder) / "opscope.ini"), QtCore.QSettings.Format.IniFormat)
    return QtCore.QSettings(QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Scope.UserScope, ORG, APP)


def user_data_dir() -> Path:
    """For things the user makes (trained weights, exports): beside the settings file."""
    folder = Path(make_settings().fileName()).parent
    folder.mkdir(parents=True, exist_ok=True)
    return folder
