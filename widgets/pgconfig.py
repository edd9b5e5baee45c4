"""pyqtgraph with the project's options, set once on first import.

Arrays are (row, column) = (y, x) everywhere in the project, as numpy and OpenCV have them."""

import pyqtgraph as pg

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

__all__ = ["pg"]
