"""pyqtgraph with the project's options, set once on first import.

Arrays are (row, column) = (y, x) everywhere in the project, as numpy and OpenCV have them."""

import pyqtgraph as pg
from PySide6 import QtCore

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

__all__ = ["pg", "paints_every_pixel"]


def paints_every_pixel(view: pg.GraphicsView) -> None:
    """Tell Qt a view's scene background covers its whole viewport, so nothing is filled under it
    first: Qt filled each viewport and then the scene painted over it (0.13 ms a repaint at
    880 x 880, about half a millisecond a frame across a window's panels)."""
    view.viewport().setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
