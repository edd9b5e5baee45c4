"""Reusable Qt / pyqtgraph views. They take numpy arrays and small dataclasses and never
import torch or backends/. Modules that draw with pyqtgraph take it from
:mod:`widgets.pgconfig`, which sets the project's options once; :mod:`widgets.encoding` is
numpy alone, so a worker without Qt can import it."""
