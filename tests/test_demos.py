"""Demos: presentation mode enlarges and hides the controls, then puts the window back exactly;
tours are data files checked against their operator's spec, stepping applies each step's values
and query, and a bad step is named; the camera feeds the newest frame, freezes, and says when
there is no camera (a synthetic frame source stands in for one)."""

import json
import threading

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from backends.params import validate
from backends.registry import spec_of
from explorer import camera, presentation, tours
from tests.conftest import wait_for_frame

REQUIRED_TOURS = {"dilated", "deformable", "spatial_transformer", "self_attention"}


# -- presentation mode -------------------------------------------------------------------------
def layout_of(window):
    docks = window.findChildren(QtWidgets.QDockWidget)
    return {d.objectName(): (d.isVisible(), d.isFloating(), window.dockWidgetArea(d)) for d in docks}


def test_presentation_mode_enlarges_hides_controls_and_restores_the_layout(app, qtbot):
    w = app.window
    font_before = QtWidgets.QApplication.font().pointSizeF()
    layout_before, state_before, marker_before = layout_of(w), w.windowState(), w.canvas.marker_size()
    size_before = w.size()
    presentation.toggle(w)
    qtbot.waitUntil(lambda: w.isFullScreen(), timeout=5000)
    assert QtWidgets.QApplication.font().pointSizeF() == pytest.approx(font_before * presentation.FONT_SCALE)
    assert not any(d.isVisible() for d in presentation.control_docks(w))
    assert w.canvas.marker_size() == pytest.approx(marker_before * presentation.MARKER_SCALE)
    assert all(c.marker_size() == pytest.approx(marker_before * presentation.MARKER_SCALE) for c in w.docks.canvases())
    # an operator switched to in the mode gets large markers too
    w.session.set_operator("deformable")
    wait_for_frame(qtbot, w)
    assert all(c.marker_size() > marker_before for c in w.docks.canvases())
    w.session.set_operator("dilated")
    wait_for_frame(qtbot, w)
    presentation.escape(w)  # Esc leaves it
    qtbot.waitUntil(lambda: not w.isFullScreen() and w.size() == size_before, timeout=5000)
    assert QtWidgets.QApplication.font().pointSizeF() == pytest.approx(font_before)
    assert w.windowState() == state_before and layout_of(w) == layout_before
    assert w.canvas.marker_size() == pytest.approx(marker_before)


def test_f11_is_the_presentation_shortcut(app):
    lines = app.window.shortcut_lines()
    assert "F11   Presentation Mode" in lines and any(line.startswith("Ctrl+T") for line in lines)


# -- tours --------------------------------------------------------------------------------------
def test_every_shipped_tour_validates_against_its_operators_spec():
    found = tours.shipped()
    assert REQUIRED_TOURS <= set(found)
    for name, path in found.items():
        tour = tours.load_tour(path)
        assert tour.operator == name and len(tour.steps) >= 4
        assert any(step.sweep for step in tour.steps) and any(step.query for step in tour.steps)
        specs = spec_of(name).params
        for n in range(len(tour.steps)):
            values, _ = tours.state_at(tour, n)
            validate(specs, values)  # raises on a bad value
        assert all(len(step.caption) > 60 for step in tour.steps)  # captions that explain


def expected_state(path, index):
    """Step ``index``'s values computed from the JSON itself, independently of the player."""
    data = json.loads(path.read_text())
    values, query = {}, None
    for n, step in enumerate(data["steps"][: index + 1]):
        values.update(step.get("params", {}))
        query = step.get("query", query)
        if "sweep" in step:
            sweep = step["sweep"]
            values[sweep["param"]] = sweep["to"] if n < index else sweep["from"]
    checked = validate(spec_of(data["operator"]).params, values)  # a file may write choice "3" as 3
    return {k: checked[k] for k in values}, query


def test_stepping_applies_each_steps_parameters_and_query(app, qtbot):
    w = app.window
    path = tours.shipped()["dilated"]
    player = tours.play_file(w, path)
    assert player is not None and tours.current(w) is player
    h, width = w.session.pixels.shape[:2]
    assert w.session.image.name.startswith("chelsea")
    for index in range(len(player.tour.steps)):
        if index:
            qtbot.keyClick(w, QtCore.Qt.Key.Key_Right)
        assert player.index == index
        values, query = expected_state(path, index)
        params = w.session.params()
        assert {k: params[k] for k in values} == values
        assert w.session.query == (int(query[0] * width), int(query[1] * h))
        assert player.caption.isVisible() and player.tour.steps[index].caption in player.caption.text()
        player._timer.stop()  # skip the animation; the next step starts from the sweep's end
    qtbot.keyClick(w, QtCore.Qt.Key.Key_Left)
    assert player.index == len(player.tour.steps) - 2
    values, _ = expected_state(path, player.index)
    assert {k: w.session.params()[k] for k in values} == values
    presentation.escape(w)
    assert tours.current(w) is None


def test_a_sweep_step_animates_every_value_in_order(app, qtbot):
    w = app.window
    player = tours.play_file(w, tours.shipped()["dilated"])
    seen = [w.session.params()["dilation"]]  # step 1 starts where step 0 left dilation, at 1
    w.session.paramsChanged.connect(lambda _name: seen.append(w.session.params()["dilation"]))
    with qtbot.waitSignal(player.sweepDone, timeout=20_000):
        player.next()
    shown = [v for n, v in enumerate(seen) if n == 0 or v != seen[n - 1]]
    assert shown == list(range(1, 9))  # the step sets the first value, the animation the rest, in order
    tours.stop(w)


def test_a_tour_with_a_bad_parameter_names_the_step(tmp_path, app):
    bad = {"operator": "dilated", "title": "t", "steps": [
        {"caption": "fine", "params": {"dilation": 2}},
        {"caption": "too far", "params": {"dilation": 99}}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(tours.TourError, match=r"bad.json: step 2: dilation: 99 is outside \[1, 16\]"):
        tours.load_tour(path)
    assert tours.play_file(app.window, path) is None
    assert app.window.banner.isVisible() and "step 2" in app.window.banner.text()
    for steps, fragment in (([{"caption": "x", "params": {"colour": 1}}], "step 1: unknown parameter 'colour'"),
                            ([{"caption": "x", "sweep": {"param": "nope"}}], "step 1: sweep: dilated has no parameter"),
                            ([{"caption": "x", "query": [2, 0]}], "step 1: query"),
                            ([{"params": {}}], "step 1: a step needs a caption")):
        with pytest.raises(tours.TourError, match=fragment):
            tours.parse_tour({"operator": "dilated", "steps": steps}, "t.json")


# -- camera -------------------------------------------------------------------------------------
class FakeCamera:
    """Synthetic 64x48 frames numbered in their colour (red n // 256, green n % 256); stops after ``limit``."""

    def __init__(self, limit=10_000, gate=None):
        self.n, self.limit, self.gate, self.closed = 0, limit, gate, False

    def read(self):
        if self.gate is not None:
            self.gate.wait(5.0)
        if self.n >= self.limit:
            return None
        self.n += 1
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 0], frame[..., 1] = self.n // 256, self.n % 256
        return frame

    def close(self):
        self.closed = True


def frame_number(window):
    """The number of the frame shown."""
    red, green = (round(float(v) * 255) for v in window.session.pixels[0, 0, :2])
    return 256 * red + green


def test_the_camera_feeds_the_newest_frame_and_freezes(app, qtbot):
    w = app.window
    fake = FakeCamera()
    panel = camera.start(w, source=lambda: fake)
    feed = panel.feed
    qtbot.waitUntil(lambda: feed.shown_count >= 3, timeout=20_000)
    assert w.session.image.name == "camera" and w.session.pixels.shape[:2] == (48, 64)
    assert feed.shown_count <= feed.read_count  # frames the operator could not keep up with are dropped
    panel.freeze_button.setChecked(True)
    wait_for_frame(qtbot, w)
    kept, shown = frame_number(w), feed.shown_count
    reads = feed.read_count
    qtbot.waitUntil(lambda: feed.read_count > reads + 5, timeout=20_000)  # the camera goes on...
    assert frame_number(w) == kept and feed.shown_count == shown  # ...but the frozen frame stays
    panel.freeze_button.setChecked(False)
    qtbot.waitUntil(lambda: feed.shown_count > shown, timeout=20_000)
    assert frame_number(w) > kept  # a newer frame, not the ones read while frozen
    panel.close()
    assert not feed.running and fake.closed


def test_newest_frame_wins_while_the_operator_is_busy(app, qtbot):
    w = app.window
    gate = threading.Event()
    gate.set()
    fake = FakeCamera(limit=40)
    feed = camera.CameraFeed(w, source=lambda: fake)
    feed._waiting_for_frame = True  # as if the window were still computing the last frame
    feed.start()
    qtbot.waitUntil(lambda: fake.n == 40, timeout=20_000)
    feed._waiting_for_frame = False
    feed._offer()
    assert frame_number(w) == 40 and feed.shown_count == 1  # the newest frame, and only it
    feed.stop()


def test_no_camera_gives_a_clear_message(app, qtbot):
    def no_camera():
        raise camera.CameraError("No camera found: OpenCV could not open camera 0.")

    panel = camera.start(app.window, source=no_camera)
    qtbot.waitUntil(lambda: app.window.banner.isVisible(), timeout=10_000)
    assert "No camera found" in app.window.banner.text()
    qtbot.waitUntil(lambda: panel.status.text() == "No camera.", timeout=5_000)
    assert not panel.feed.running
    panel.close()


def test_the_opencv_source_says_when_there_is_no_camera():
    with pytest.raises(camera.CameraError, match="No camera found"):
        camera.OpenCVSource(index=97)
