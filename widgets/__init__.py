"""Reusable Qt / pyqtgraph views. They take numpy arrays and small dataclasses and never
import torch or backends/."""

import pyqtgraph as pg

# Arrays are (row, column) = (y, x) everywhere in the project, as numpy and OpenCV have them.
pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
