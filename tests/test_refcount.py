"""Guards the pinned PySide6: some releases drop a reference to None on every pyqtgraph paint
until CPython aborts (measured: 6.12.0 lost about 500 per frame; 6.11.2 none)."""

import sys

import numpy as np
from PySide6 import QtWidgets

from widgets.image_canvas import ImageCanvas


def test_painting_many_frames_does_not_leak_none_references(qtbot):
    canvas = ImageCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(400, 300)
    canvas.show()
    rng = np.random.default_rng(0)
    frames = [rng.random((64, 96, 3), dtype=np.float32) for _ in range(4)]

    def paint(n: int) -> None:
        for i in range(n):
            canvas.set_image(frames[i % 4])
            canvas.add_points(np.array([[10.0, 10.0]]), (255, 0, 0), 5)
            canvas.clear_overlays()
            canvas.viewport().repaint()
            QtWidgets.QApplication.processEvents()

    paint(20)
    before = sys.getrefcount(None)
    paint(300)
    after = sys.getrefcount(None)
    assert after >= before - 50, f"None lost {before - after} references over 300 frames"
