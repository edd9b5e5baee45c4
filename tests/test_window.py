"""The main window as a person uses it: operators, sliders, clicks, bad files, layout."""

import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from backends.imageio import normalize_array
from explorer import window_actions
from tests.conftest import wait_for_frame


def test_window_opens_with_the_operator_docks(app):
    w = app.window
    assert set(w.docks.panels) == {"Output", "Dilated kernel", "Receptive field", "Stack effective receptive field", "Metrics"}
    assert w.docks.centre == "Output" and "Output" not in w.docks.docks  # the result gets the centre
    assert w.stage.result is w.docks.panels["Output"] and w.stage.showing() == (False, True)
    assert "chelsea" in w.image_label.text()
    assert w.device_label.text().startswith("device: cpu")
    assert "compute" in w.timing_label.text()


def test_moving_a_slider_draws_a_new_frame(app, qtbot):
    w = app.window
    row = w.form.rows["dilation"]
    with qtbot.waitSignal(w.frameApplied, timeout=30_000) as applied:
        row.slider.setValue(7)
    wait_for_frame(qtbot, w)
    assert applied.args[0] == app.scheduler.stamp
    assert app.session.params()["dilation"] == 7
    assert row.spin.value() == 7
    caption = w.docks.panels["Dilated kernel"].caption.text()
    assert "15x15" in caption  # 3 taps, dilation 7: 7 * 2 + 1


def test_clicking_the_canvas_moves_the_query_and_the_receptive_field_follows(app, qtbot):
    w = app.window
    w.canvas.clicked.emit(100.4, 80.7)
    wait_for_frame(qtbot, w)
    assert app.session.query == (100, 80)
    rf = w.docks.panels["Receptive field"].view
    assert w.docks.panels["Metrics"].view.value("query") == "(100, 80)"
    # The marker sits on the clicked pixel in the canvas and in every frame panel.
    for canvas in (w.canvas, rf):
        assert canvas.marker_position() == (100.5, 80.5)


def test_an_operator_that_ignores_the_query_draws_no_query_marker(app, qtbot):
    w = app.window
    w.canvas.clicked.emit(100.4, 80.7)
    wait_for_frame(qtbot, w)
    app.session.set_operator("reparam")  # its spec: uses_query=False
    wait_for_frame(qtbot, w)
    assert w.canvas.marker_position() is None
    assert all(c.marker_position() is None for c in w.docks.canvases())
    app.session.set_operator("dilated")
    wait_for_frame(qtbot, w)
    assert w.canvas.marker_position() == (100.5, 80.5)


def test_hovering_mirrors_a_crosshair_in_every_image_panel(app):
    w = app.window
    w.canvas.hovered.emit(30.2, 40.9)
    frame_canvases = [c for c in w.docks.canvases() if c.frame_coords]
    assert frame_canvases
    for canvas in frame_canvases:
        assert canvas.crosshair_position() == (30.5, 40.5)
    assert w.cursor_label.text().startswith("x 30  y 40  rgb")
    w.canvas.left.emit()
    assert frame_canvases[0].crosshair_position() is None


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.png", b""),
        ("notes.png", b"plain text pretending to be a picture"),
        ("cut.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01"),
        ("document.pdf", b"%PDF-1.4 not an image"),
    ],
)
def test_a_bad_file_keeps_the_image_and_says_why(app, qtbot, tmp_path, name, content):
    w = app.window
    path = tmp_path / name
    path.write_bytes(content)
    before_key = app.session.image_key
    with qtbot.waitSignal(w.imageRejected, timeout=2000):
        assert not w.open_path(path)
    assert app.session.image_key == before_key
    assert w.banner.isVisible() and "current image is kept" in w.banner.text()
    assert name in w.banner.text()


def test_opening_a_good_file_replaces_the_image_and_recomputes(app, qtbot, tmp_path):
    import cv2

    path = tmp_path / "grey16.png"
    cv2.imwrite(str(path), (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16))
    assert app.window.open_path(path)
    wait_for_frame(qtbot, app.window)
    assert app.session.pixels.shape == (48, 64, 3)
    assert app.window.docks.panels["Metrics"].view.value("output size") == "64 x 48"
    assert str(path.resolve()) in app.window.images.recent.list()


def test_a_huge_image_is_downscaled_with_a_visible_notice(app, qtbot, tmp_path):
    import cv2

    path = tmp_path / "huge.png"
    cv2.imwrite(str(path), np.zeros((100, 3000, 3), np.uint8))
    assert app.window.open_path(path)
    assert app.session.pixels.shape[1] == 2048
    assert app.window.banner.isVisible() and "downscaled" in app.window.banner.text()


def test_pasting_an_image_from_the_clipboard(app, qtbot):
    img = QtGui.QImage(40, 30, QtGui.QImage.Format.Format_RGB32)
    img.fill(QtGui.QColor(255, 0, 0))
    mime = QtCore.QMimeData()
    mime.setImageData(img)
    app.window.images.from_mime(mime, "clipboard")
    wait_for_frame(qtbot, app.window)
    assert app.session.pixels.shape == (30, 40, 3)
    np.testing.assert_allclose(app.session.pixels[0, 0], [1, 0, 0])


def test_dropping_a_file_url_opens_it(app, qtbot, tmp_path):
    import cv2

    path = tmp_path / "drop.png"
    cv2.imwrite(str(path), np.full((20, 25, 3), 200, np.uint8))
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(path))])
    app.window.images.from_mime(mime, "drop")
    assert app.session.pixels.shape == (20, 25, 3)


def test_an_operator_error_is_shown_and_the_last_frame_kept(app, qtbot):
    w = app.window
    w.set_image(normalize_array(np.random.default_rng(0).random((40, 40, 3))), "small")
    wait_for_frame(qtbot, w)
    with qtbot.waitSignal(w.frameFailed, timeout=20000) as failure:
        app.session.set_params({"padding": "reflect", "dilation": 16, "kernel_size": "7"})
    assert "reflect padding" in failure.args[0]
    assert w.banner.isVisible() and "last good frame" in w.banner.text()
    assert "Output" in w.docks.panels  # the old panels stay
    app.session.set_params({"padding": "zeros"})
    wait_for_frame(qtbot, w)
    assert not w.banner.isVisible()


def test_reset_parameters_restores_defaults_in_form_and_session(app, qtbot):
    w = app.window
    w.form.rows["dilation"].spin.setValue(9)
    assert app.session.params()["dilation"] == 9
    w.form.resetRequested.emit()
    assert app.session.params()["dilation"] == 2
    assert w.form.rows["dilation"].spin.value() == 2


def test_every_panel_exports_to_png(app, tmp_path):
    for name, panel in app.window.docks.panels.items():
        out = tmp_path / f"{name}.png"
        assert panel.export_png(out)
        img = QtGui.QImage(str(out))
        assert img.width() > 50 and img.height() > 50


def _window_with_settings_in(folder, qtbot, persist: bool):
    from backends.imageio import load_image
    from explorer.app import build
    from explorer.image_sources import sample_path

    path = sample_path("chelsea")
    built = build(load_image(path), str(path), "dilated", restore_layout=persist, synchronous=True)
    qtbot.addWidget(built.window)
    built.window.show()
    return built


def _settings_keys(folder) -> list[str]:
    ini = folder / "opscope.ini"
    return [] if not ini.exists() else [line for line in ini.read_text().splitlines() if line.startswith("window")]


def test_layout_is_remembered_per_operator(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("OPSCOPE_CONFIG_DIR", str(tmp_path))
    built = _window_with_settings_in(tmp_path, qtbot, persist=True)
    w = built.window
    try:
        w.docks.docks["Metrics"].setVisible(False)
        built.session.set_operator("self_attention")  # leaving an operator saves its layout
        assert w.settings.value("window/state/dilated") is not None
        built.session.set_operator("dilated")
        w.reset_layout()
        assert w.docks.docks["Metrics"].isVisible()
        assert w.settings.value("window/state/dilated") is None
    finally:
        built.close()


def test_headless_windows_and_tests_never_write_the_users_settings(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("OPSCOPE_CONFIG_DIR", str(tmp_path))
    built = _window_with_settings_in(tmp_path, qtbot, persist=False)
    built.window.docks.docks["Metrics"].setVisible(False)
    built.session.set_operator("self_attention")
    built.close()
    assert _settings_keys(tmp_path) == []


def test_the_shortcut_help_lists_the_menus_own_shortcuts(app):
    lines = app.window.shortcut_lines()
    assert any(line.startswith("Ctrl+R") and "Reset Parameters" in line for line in lines)
    assert any(line.startswith("F1") for line in lines)
    listed = {line.split("   ")[0] for line in lines}
    for action in app.window.menuBar().findChildren(QtGui.QAction):
        key = action.shortcut().toString()
        assert not key or key in listed, action.text()


def test_view_menu_toggles_every_dock(app):
    texts = {a.text() for a in app.window.menus.view_menu.actions()}
    assert {"Operators", "Parameters", "Dilated kernel", "Metrics"} <= texts and "Output" not in texts  # in the centre


def test_a_sketch_becomes_the_working_image_and_undo_takes_a_stroke_back(app, qtbot):
    w = app.window
    window_actions.show_sketchpad(w)
    pad = w.sketchpad.canvas
    assert app.session.state.image_source == "sketch"
    assert app.session.pixels.shape == (256, 256, 3) and app.session.pixels.min() == 1.0
    pad.begin_stroke()
    pad.draw_line(QtCore.QPointF(20, 128), QtCore.QPointF(230, 128))
    pad.strokeFinished.emit()
    wait_for_frame(qtbot, w)
    assert app.session.pixels[128, 20:230].max() < 0.2  # the dark stroke
    assert w.docks.panels["Metrics"].view.value("output size") == "256 x 256"
    pad.undo()
    assert app.session.pixels.min() == 1.0


def test_a_long_job_shows_progress_partial_results_and_stops(app, qtbot):
    import threading

    from backends.layers import CurveLayer, Result
    from backends.registry import Action, JobUpdate, Operator, OperatorSpec, register, unregister

    stop = threading.Event()

    @register
    class Counter(Operator):
        spec = OperatorSpec(name="_test_counter", title="Counter", family="Tests", description="test double",
                            params=(), actions=(Action("count", "Counting"),))

        def run(self, image, params, query):
            return Result((CurveLayer("Loss", {"loss": (np.arange(2), np.ones(2))}),))

        def job_count(self, image, params, query):
            for i in range(10_000):
                stop.wait(0.005)  # an endless job, paced so the test can watch it
                yield JobUpdate(i / 10_000, f"step {i}", Result((CurveLayer("Loss", {"loss": (np.arange(i + 2), np.ones(i + 2))}),)))

    try:
        w = app.window
        app.session.set_operator("_test_counter")
        wait_for_frame(qtbot, w)
        button = w.actions_bar.buttons["count"]
        button.setChecked(True)
        qtbot.waitUntil(lambda: w.job_progress.isVisible() and w.job_progress.value() > 0, timeout=10000)
        qtbot.waitUntil(lambda: "step" in w.timing_label.text(), timeout=10000)
        button.setChecked(False)
        qtbot.waitUntil(lambda: not w.job_progress.isVisible(), timeout=10000)
        assert not button.isChecked()
    finally:
        stop.set()
        app.session.set_operator("dilated")
        unregister("_test_counter")


SCREENS = ((1366, 768), (1920, 1080))


def test_every_operator_draws_its_panels_in_the_window_at_both_screen_sizes(app, qtbot):
    """The primary layer in the centre; every panel in front is at least 200x150 px and inside
    the window, at a laptop's and a desktop's size."""
    from PySide6 import QtWidgets

    from backends.registry import operator_names, spec_of
    from explorer.result_docks import PANEL_MIN

    w = app.window
    failures = []
    w.frameFailed.connect(failures.append)
    for name in [n for n in operator_names() if not n.startswith("_")]:
        app.session.set_operator(name)
        qtbot.waitUntil(lambda: bool(failures) or w.frame_settled(), timeout=60_000)
        assert not failures, f"{name}: {failures}"
        assert w.docks.panels and w.form.title.text()
        primary = spec_of(name).primary
        assert w.docks.centre == (primary or w.docks.centre) and w.stage.result is w.docks.panels[w.docks.centre]
        for size in SCREENS:
            w.resize(*size)
            for _ in range(5):
                QtWidgets.QApplication.processEvents()
            assert w.size().toTuple() == size, f"{name}: the window grew past the screen to {w.size().toTuple()}"
            inside = w.rect()
            for dock_name, dock in w.docks.docks.items():
                if not w.docks.dock_is_in_front(dock_name):
                    continue  # behind another tab
                g = dock.widget().geometry()
                assert g.width() >= PANEL_MIN[0] and g.height() >= PANEL_MIN[1], f"{name} {size}: {dock_name} {g}"
                assert inside.contains(dock.geometry()), f"{name} {size}: {dock_name} off-screen at {dock.geometry()}"


def test_full_matrix_panels_say_they_are_updating_until_the_slider_rests(app, qtbot):
    from explorer.result_docks import UPDATING

    w = app.window
    app.session.set_operator("self_attention")
    wait_for_frame(qtbot, w)
    seen = []
    w.frameApplied.connect(lambda stamp: seen.append((w.frame_settled(), w.docks.panels["Attention entropy"].caption.text())))
    w.form.rows["temperature"].spin.setValue(0.7)
    wait_for_frame(qtbot, w)
    assert seen[0] == (False, UPDATING)  # the clicked query's rows came first, the entropy panel kept
    assert seen[-1][0] and seen[-1][1] != UPDATING and "entropy" in seen[-1][1]


def test_a_panel_drawn_on_a_picture_of_its_own_takes_no_query_marker(app, qtbot):
    """The VAE's latent plane is decoded faces, not the input: no marker, no crosshair, no clicks."""
    w = app.window
    app.session.set_operator("vae")
    wait_for_frame(qtbot, w)
    assert not w.docks.panels["Latent plane"].view.frame_coords


def test_an_instant_action_is_a_plain_button_that_runs_once(app, qtbot):
    w = app.window
    app.session.set_operator("spatial_transformer")
    wait_for_frame(qtbot, w)
    button = w.actions_bar.buttons["reset"]
    assert button.text() == "Forget clicks and fits" and not button.isCheckable()
    fit = w.actions_bar.buttons["fit"]
    assert fit.text().startswith("Start ") and fit.isCheckable()
    with qtbot.waitSignal(app.scheduler.jobEnded, timeout=30_000) as ended:
        button.click()
    assert (ended.args[0].action, ended.args[0].how, ended.args[0].failed) == ("reset", "done", False)


def test_the_input_is_one_keystroke_from_the_result(app):
    w = app.window
    assert w.stage.showing() == (False, True)
    w.stage.toggle_input()
    assert w.stage.showing() == (True, False)
    w.stage.set_mode("side by side")
    assert w.stage.showing() == (True, True)
    w.stage.toggle_input()
    assert w.stage.showing() == (False, True)
    shortcuts = {a.text(): a.shortcut().toString() for a in w.menus.view_menu.actions()}
    assert shortcuts["Show &Input"] == "Ctrl+I"


def test_double_clicking_a_panels_title_shows_it_in_the_centre(app, qtbot):
    w = app.window
    kernel = w.docks.panels["Dilated kernel"]
    dock = w.docks.docks["Dilated kernel"]
    qtbot.mouseDClick(dock.titleBarWidget(), QtCore.Qt.MouseButton.LeftButton)
    assert w.docks.centre == "Dilated kernel" and w.stage.result is kernel
    assert "Output" in w.docks.docks and w.docks.docks["Output"].widget() is w.docks.panels["Output"]
    assert dock is w.docks.docks["Output"]  # the old centre took the promoted panel's place
    app.session.set_param("dilation", 5)
    wait_for_frame(qtbot, w)
    assert "11x11" in kernel.caption.text()  # the promoted panel keeps updating in the centre


def test_a_closed_panel_does_no_work_until_it_is_shown_again(app, qtbot):
    w = app.window
    metrics = w.docks.docks["Metrics"]
    metrics.close()
    before = w.docks.panels["Metrics"].view.value("query")
    app.session.set_query(40, 30)
    wait_for_frame(qtbot, w)
    assert w.docks.panels["Metrics"].view.value("query") == before  # not drawn while hidden
    metrics.show()
    qtbot.waitUntil(lambda: w.docks.panels["Metrics"].view.value("query") == "(40, 30)", timeout=5000)


def test_a_panel_behind_another_tab_does_no_work_until_its_tab_is_chosen(app, qtbot):
    w = app.window
    metrics, kernel = w.docks.docks["Metrics"], w.docks.docks["Dilated kernel"]
    w.tabifyDockWidget(kernel, metrics)
    kernel.raise_()
    qtbot.waitUntil(lambda: not w.docks.dock_is_in_front("Metrics"), timeout=5000)
    before = w.docks.panels["Metrics"].view.value("query")
    app.session.set_query(41, 31)
    wait_for_frame(qtbot, w)
    assert w.docks.panels["Metrics"].view.value("query") == before
    metrics.raise_()
    qtbot.waitUntil(lambda: w.docks.panels["Metrics"].view.value("query") == "(41, 31)", timeout=5000)


def test_the_window_fits_the_screen_it_opens_on():
    from explorer.main_window import LARGEST_SIZE, fitting_size

    class Screen:
        def __init__(self, w, h):
            self.area = QtCore.QRect(0, 0, w, h)

        def availableGeometry(self):
            return self.area

    width, height = fitting_size(Screen(1366, 740))
    assert 1300 <= width <= 1366 and 700 <= height <= 740
    assert fitting_size(Screen(1920, 1050)) == (1843, 1008)
    assert fitting_size(Screen(5120, 2880)) == LARGEST_SIZE


def test_a_failed_jobs_message_stays_after_the_frames_that_follow(app, qtbot):
    from backends.layers import MetricsLayer, Result
    from backends.registry import Action, Operator, OperatorSpec, register, unregister

    @register
    class Failing(Operator):
        spec = OperatorSpec(name="_test_failing_job", title="Failing job", family="Tests", description="test double",
                            params=(), actions=(Action("save", "Saving"),))

        def run(self, image, params, query):
            return Result((MetricsLayer("m", {"ok": 1}),))

        def job_save(self, image, params, query):
            raise OSError("the save folder is a file")
            yield  # a generator

    try:
        w = app.window
        app.session.set_operator("_test_failing_job")
        wait_for_frame(qtbot, w)
        with qtbot.waitSignal(app.scheduler.jobEnded, timeout=30_000):
            w.actions_bar.buttons["save"].setChecked(True)
        wait_for_frame(qtbot, w)  # the frame the job's end asks for
        assert w.banner.isVisible() and "Saving stopped with an error" in w.banner.text()
        assert "the save folder is a file" in w.banner.text()
        assert not w.actions_bar.buttons["save"].isChecked()
    finally:
        app.session.set_operator("dilated")
        unregister("_test_failing_job")


def test_a_file_name_with_markup_is_shown_as_written(app, tmp_path):
    name = "<b style='color:red'>WARNING<br>.png"  # no slash: it is one file name
    (tmp_path / name).write_bytes(b"not an image")
    assert not app.window.open_path(tmp_path / name)
    banner = app.window.banner
    assert banner.textFormat() == QtCore.Qt.TextFormat.PlainText and "<b style" in banner.text()


def test_nan_and_infinity_in_every_kind_of_layer_are_drawn_without_a_crash(app, qtbot):
    from backends.layers import (
        BarsLayer,
        CurveLayer,
        FeatureMapsLayer,
        HeatmapLayer,
        ImageLayer,
        MetricsLayer,
        PointSet,
        PointsLayer,
        Result,
        SamplingGridLayer,
        VectorFieldLayer,
    )
    from backends.registry import Operator, OperatorSpec, register, unregister

    bad = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)

    @register
    class Broken(Operator):
        spec = OperatorSpec(name="_test_nan", title="NaN everywhere", family="Tests", description="test double", params=())

        def run(self, image, params, query):
            grid = np.tile(bad.reshape(2, 2, 1), (1, 1, 2))
            return Result((
                ImageLayer("image", np.full((4, 4), np.nan, np.float32)),
                ImageLayer("rgb", np.full((4, 4, 3), np.inf, np.float32)),
                FeatureMapsLayer("maps", np.resize(bad, (2, 4, 4))),
                HeatmapLayer("heat", np.resize(bad, (8, 8)), background=np.zeros((8, 8, 3), np.float32)),
                VectorFieldLayer("arrows", np.resize(bad, (4, 2)), np.resize(bad[::-1], (4, 2))),
                SamplingGridLayer("grid", grid),
                PointsLayer("points", (PointSet(np.resize(bad, (4, 2)), values=bad),)),
                BarsLayer("bars", ("a", "b", "c", "d"), {"v": bad}),
                CurveLayer("curve", {"c": (np.arange(4.0), bad)}),
                MetricsLayer("metrics", {"value": float("nan")}),
            ))

    try:
        w = app.window
        failures = []
        w.frameFailed.connect(failures.append)
        app.session.set_operator("_test_nan")
        wait_for_frame(qtbot, w)
        assert not failures and len(w.docks.panels) == 10
        for name in w.docks.docks:  # draw the tabs behind others too
            w.docks.docks[name].raise_()
        qtbot.wait(50)
        broken = {n: p.caption.text() for n, p in w.docks.panels.items() if "could not draw" in p.caption.text()}
        assert not broken
    finally:
        app.session.set_operator("dilated")
        unregister("_test_nan")


def test_a_damaged_recent_files_list_and_long_pasted_text_give_messages_not_errors(app, qtbot):
    w = app.window
    w.settings.setValue("recent_files", 12345)  # not a list of paths
    assert w.images.recent.list() == []
    mime = QtCore.QMimeData()
    mime.setText("a" * 100_000)
    with qtbot.waitSignal(w.imageRejected, timeout=5000) as rejected:
        w.images.from_mime(mime, "clipboard")
    assert "no image" in rejected.args[0]
    w.settings.setValue("recent_files", [])


def test_an_unwritable_settings_folder_falls_back_to_a_temporary_one(monkeypatch, tmp_path):
    from explorer.settings import make_settings

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("OPSCOPE_CONFIG_DIR", str(blocker / "settings"))
    settings = make_settings()
    settings.setValue("probe", 1)
    settings.sync()
    assert settings.status() == settings.Status.NoError and str(blocker) not in settings.fileName()



def test_a_large_image_loads_in_the_background_and_the_window_says_so(app, qtbot, tmp_path):
    import cv2

    big = np.zeros((2000, 4200, 3), np.uint8)  # 8.4 MP: decoded off the UI thread
    big[:, 2100:] = 255
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), big)
    w = app.window
    with qtbot.waitSignal(w.images.loaded, timeout=30_000):
        assert w.open_path(path)
        assert "Loading big.png" in w.banner.text()  # said at once, before the decode ends
    assert app.session.image.original_size == (4200, 2000) and max(app.session.pixels.shape) == 2048
    assert "downscaled" in w.banner.text()


def test_undo_takes_back_a_whole_drag_a_click_and_an_operator_switch(app, qtbot):
    w = app.window
    stack = w.history.stack
    row = w.form.rows["dilation"]
    for value in (3, 4, 5, 6):  # one drag: changes far closer together than separate edits
        row.spin.setValue(value)
    w.canvas.clicked.emit(50.5, 40.5)
    app.session.set_operator("spatial_transformer")
    wait_for_frame(qtbot, w)
    stack.undo()  # the switch
    assert app.session.operator == "dilated"
    stack.undo()  # the click
    assert app.session.query is None
    stack.undo()  # the whole drag, in one step
    assert app.session.params()["dilation"] == 2 and w.form.rows["dilation"].spin.value() == 2  # a new form
    wait_for_frame(qtbot, w)
    assert "5x5" in w.docks.panels["Dilated kernel"].caption.text()  # the frame follows: dilation 2 again
    stack.redo()
    assert app.session.params()["dilation"] == 6
    keys = {a.text().replace("&", "").split(" ")[0]: a.shortcut().toString() for a in w.findChildren(QtGui.QAction)
            if a.text().replace("&", "").startswith(("Undo", "Redo"))}
    assert keys == {"Undo": "Ctrl+Z", "Redo": "Ctrl+Shift+Z"}


def test_a_pinned_result_is_compared_with_the_live_one(app, qtbot):
    from explorer import layer_views

    w = app.window
    assert not w.stage.buttons["A/B"].isEnabled()  # nothing pinned yet
    window_actions.pin_result(w)
    assert w.stage.mode == "A/B" and w.stage.pinned.isVisible() and w.stage.result.isVisible()
    pinned = layer_views.picture(w.docks.panels["Output"].last_shown[0]).copy()
    app.session.set_param("dilation", 9)
    wait_for_frame(qtbot, w)
    live = layer_views.picture(w.docks.panels["Output"].last_shown[0])
    w.stage.set_mode("A-B")
    shown = w.stage.pinned.pixmap().toImage()
    assert shown.width() > 50 and not np.array_equal(pinned, live)
    from widgets.stage import difference

    diff = difference(pinned, live)
    expected = np.abs(pinned.astype(int) - live.astype(int)).max(axis=2)
    assert (diff[..., 0] == 255).sum() == (expected == expected.max()).sum()  # brightest where A and B differ most
    assert not difference(live, live).any()


def test_a_heavy_frame_is_drawn_in_turns_and_counts_as_drawn_after_its_last_dock(app, qtbot):
    """Frame pacing: after a frame that held the UI thread too long, the centre first and the docks
    a few a turn; a frame is drawn (frameApplied) only when every dock in view shows it."""
    w = app.window
    app.session.set_operator("position_embeddings")
    wait_for_frame(qtbot, w)
    frames, turns, stale = {}, [], []
    app.scheduler.frameReady.connect(lambda frame: frames.__setitem__(frame.stamp, frame))

    def check(stamp: int) -> None:
        for layer in frames[stamp].result.layers:
            if layer.name == w.docks.centre or w.docks.dock_is_in_front(layer.name):
                if w.docks.panels[layer.name].last_shown[0] is not layer:
                    stale.append(layer.name)

    w.frameApplied.connect(check)
    original = w.docks.draw_staged
    w.docks.draw_staged = lambda count=None: turns.append(original(count)) or turns[-1]
    w.pacer.applied(100.0)  # as if the last frame had held the thread for 100 ms
    app.session.set_param("base_log10", 2.0)
    wait_for_frame(qtbot, w)
    assert True in turns  # its docks were left for later turns
    assert not stale  # yet when the frame counted as drawn, every panel in view showed it
