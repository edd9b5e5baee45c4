"""Writing a widget's picture to a PNG file whole or not at all (Qt's QSaveFile writes to a
temporary file and renames it over the target only when everything was written)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from PySide6 import QtCore, QtGui


def save_png(picture: Union[QtGui.QPixmap, QtGui.QImage], path: Union[str, Path]) -> bool:
    out = QtCore.QSaveFile(str(path))
    if not out.open(QtCore.QIODevice.OpenModeFlag.WriteOnly):
        return False
    if not picture.save(out, "PNG"):
        out.cancelWriting()
        out.commit()
        return False
    return out.commit()
