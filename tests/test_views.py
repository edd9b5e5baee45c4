"""What the views draw for each layer field: positions, colours, labels and axes, checked against
the layer's own numbers, not just that something appeared."""

import numpy as np
import pytest

from backends.layers import BarsLayer, CurveLayer, HeatmapLayer, ImageLayer, Result, VectorFieldLayer
from explorer import layer_views
from explorer.display import encode
from widgets.colormaps import lookup_table
from widgets.encoding import categorical_palette


def shown(qtbot, layer, input_pixels=None):
    layer = encode(Result((layer,))).layers[0]
    panel = layer_views.make_panel(layer, None if input_pixels is None else input_pixels.shape[:2])
    qtbot.addWidget(panel)
    panel.resize(420, 320)
    panel.show()
    layer_views.show(panel, layer, input_pixels)
    return panel


def test_a_categorical_map_is_drawn_in_its_palette_with_a_legend_not_a_colour_bar(qtbot):
    tokens = np.array([[0, 1, 2], [2, 1, 0]])
    panel = shown(qtbot, ImageLayer("tokens", tokens, categories=("masked", "kept", "new")))
    palette = categorical_palette(3)
    assert panel.colorbar is None and panel.legend.names == ("masked", "kept", "new")
    rgb = panel.view.value_at(2.5, 0.5)  # pixel (x 2, y 0) holds category 2
    np.testing.assert_array_equal(rgb, np.round(palette[2] * 255).astype(np.uint8))


def test_grid_labels_sit_outside_the_picture_beside_their_rows_and_columns(qtbot):
    grid = np.zeros((60, 90, 3), np.float32)  # 2 rows x 3 columns of 30 x 30 tiles
    panel = shown(qtbot, ImageLayer("grid", grid, row_labels=("z0", "z1"), column_labels=("-1", "0", "+1"),
                                    axis_titles=("value", "dimension")))
    items = panel.view.grid_labels()
    assert items["z0"][0] < 0 and items["z1"][0] < 0  # left of the picture
    assert items["z0"][1] == pytest.approx(15) and items["z1"][1] == pytest.approx(45)  # row centres
    assert [items[c][0] for c in ("-1", "0", "+1")] == pytest.approx([15, 45, 75]) and items["0"][1] < 0
    assert "value" in items and "dimension" in items


def test_arrows_take_their_maps_colour_by_length_and_the_bar_spans_the_longest(qtbot):
    origins = np.array([[10.0, 10.0], [20.0, 20.0]])
    vectors = np.array([[1.0, 0.0], [0.0, 4.0]])  # lengths 1 and 4
    panel = shown(qtbot, VectorFieldLayer("arrows", origins, vectors, background=np.zeros((40, 40, 3), np.float32),
                                          colormap="viridis", scale=2.0))
    assert panel.colorbar.levels == (0.0, 4.0)  # true lengths, not the drawn (scaled) ones
    pens = panel.view.overlay_colors()
    table = lookup_table("viridis")
    assert tuple(int(v) for v in table[int((7 + 0.5) * 256 / 8)]) in pens  # the longest: the top bin


def test_bars_with_long_names_lie_down_and_every_bar_keeps_its_name(qtbot):
    labels = tuple(f"gabor {a} degrees" for a in (0, 45, 90, 135))
    panel = shown(qtbot, BarsLayer("weights", labels, {"weight": np.array([0.1, 0.5, 0.9, 0.3])}, value_label="weight"))
    assert panel.view.horizontal
    assert panel.view.tick_labels() == list(labels)
    short = shown(qtbot, BarsLayer("few", ("a", "b"), {"x": np.array([1.0, 2.0]), "y": np.array([2.0, 1.0])}))
    assert not short.view.horizontal
    assert "x" in short.view.plotItem.titleLabel.text and "y" in short.view.plotItem.titleLabel.text  # key above


def test_a_curve_of_another_unit_is_read_against_the_right_axis(qtbot):
    steps = np.arange(5.0)
    panel = shown(qtbot, CurveLayer("training", {"loss": (steps, 5 - steps), "box share %": (steps, 10 * steps)},
                                    x_label="step", y_label="loss", right=("box share %",), right_label="%"))
    assert panel.view.axis_of("loss") == "left" and panel.view.axis_of("box share %") == "right"
    assert panel.view.getAxis("right").isVisible() and not panel.view.getAxis("top").isVisible()
    assert panel.view.getAxis("right").grid is False  # one set of grid lines, the left axis's
    np.testing.assert_array_equal(panel.view.curve_data("box share %")[1], 10 * steps)


def test_a_curves_scale_holds_still_while_the_data_stays_well_inside_and_refits_when_it_leaves(qtbot):
    """Axes that jump on every frame of a drag are unreadable (and remade each time): the view
    keeps its range while the curve stays inside and fills most of it, and refits when the curve
    leaves it or shrinks to a small part of it; a user's zoom is left alone."""
    x = np.linspace(0, 10, 50)
    panel = shown(qtbot, CurveLayer("c", {"y": (x, np.sin(x))}, x_label="x", y_label="y"))
    view = panel.view

    def range_after(y: np.ndarray) -> tuple:
        layer_views.show(panel, encode(Result((CurveLayer("c", {"y": (x, y)}, x_label="x", y_label="y"),))).layers[0])
        view.plotItem.vb.updateAutoRange()  # what the next paint does
        return tuple(view.plotItem.vb.viewRange()[1])

    first = range_after(np.sin(x))
    assert first[0] <= -1 and first[1] >= 1
    assert range_after(0.9 * np.sin(x)) == first  # inside and filling 90 %: the same scale
    grown = range_after(3 * np.sin(x))
    assert grown[0] <= -3 and grown[1] >= 3  # left the view: refitted to hold it
    small = range_after(0.1 * np.sin(x))
    assert small[1] - small[0] < 0.3  # a tenth of the view: refitted to it
    view.plotItem.vb.setYRange(-50, 50, padding=0)  # the user zooms out: auto-range is off
    assert range_after(np.sin(x)) == pytest.approx((-50, 50))


def test_an_overlay_has_an_opacity_the_user_can_change_and_a_map_only_view(qtbot):
    heat = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(30, 40)
    back = np.full((30, 40, 3), 0.5, np.float32)
    panel = shown(qtbot, HeatmapLayer("erf", heat, background=back, opacity=0.6), back)
    assert panel.overlay.opacity.value() == 60
    panel.overlay.opacity.setValue(20)
    assert panel.view.heat_opacity == pytest.approx(0.2)
    panel.overlay.map_only.setChecked(True)
    assert panel.view.heat_opacity == 0.0  # the map is the picture now, nothing under it


@pytest.mark.parametrize("kind", ["points", "heatmap"])
def test_a_picture_of_the_layers_own_is_drawn_at_its_brightness_not_white(qtbot, kind):
    """Backgrounds reach the views as uint8 (display form): mid grey must paint mid grey."""
    from backends.layers import PointSet, PointsLayer

    grey = np.full((40, 60, 3), 0.5, np.float32)
    if kind == "points":
        layer = PointsLayer("p", (PointSet(np.array([[1.0, 1.0]])),), background=grey)
    else:
        layer = HeatmapLayer("h", np.zeros((40, 60), np.float32), background=grey, levels=(0.0, 1.0))
    panel = shown(qtbot, layer, grey)
    qtbot.wait(20)
    pixel = panel.view.grab().toImage().pixelColor(panel.view.width() // 2, panel.view.height() // 2)
    assert 110 <= pixel.red() <= 145 and 110 <= pixel.green() <= 145


def test_grid_lines_are_drawn_behind_the_bars_and_at_their_faint_colour_beside_them(qtbot):
    """Grid lines are opaque (a translucent line costs the raster engine a blend per pixel), each
    the colour the translucent line would have over the background, and never cross the data."""
    from PySide6 import QtCore

    from widgets.plots import PLOT_BACKGROUND, SERIES_COLORS

    panel = shown(qtbot, BarsLayer("one", ("a", "b"), {"v": np.array([10.0, 0.0])}))
    qtbot.wait(20)
    view = panel.view
    image = view.grab().toImage()

    def pixel(x: float, y: float) -> tuple[int, int, int]:
        """The brightest of the three pixels around (x, y): a 1 px line may round to either side."""
        p = view.mapFromScene(view.plotItem.vb.mapViewToScene(QtCore.QPointF(x, y)))
        colors = [image.pixelColor(p.x(), p.y() + d) for d in (-1, 0, 1)]
        return max(((c.red(), c.green(), c.blue()) for c in colors), key=sum)

    ticks = [v for _spacing, values in view.getAxis("left").tickValues(0, 10, 300) for v in values if 1 <= v <= 9]
    assert ticks  # grid lines cross the bar's height
    assert all(pixel(0.0, v) == SERIES_COLORS[0] for v in ticks)  # the bar is drawn over every line
    beside = [pixel(1.0, v) for v in ticks]  # over the background, where bar "b" is empty
    assert all(c != PLOT_BACKGROUND and max(c) < 90 for c in beside)  # a faint line, not bright, not missing


def test_every_box_is_drawn_with_its_four_sides_at_its_edges(qtbot):
    boxes = ((2.0, 3.0, 10.0, 5.0), (20.0, 4.0, 6.0, 6.0))
    panel = shown(qtbot, ImageLayer("boxes", np.zeros((30, 40, 3), np.float32), boxes=boxes))
    lines = [xy for color, xy in panel.view.overlay_lines() if color == (255, 220, 80)]
    sides = {tuple(map(tuple, pair)) for xy in lines for pair in xy.reshape(-1, 2, 2)}
    for x, y, w, h in boxes:
        corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        assert {(corners[i], corners[(i + 1) % 4]) for i in range(4)} <= sides


def test_the_room_for_tick_labels_holds_while_the_content_stays_and_refits_for_new_content(qtbot):
    """A narrower label mid-drag does not re-lay out the plot (5-7 ms a time); new content refits."""
    x = np.arange(5.0)
    panel = shown(qtbot, CurveLayer("c", {"y": (x, 123456.0 * x)}, x_label="step", y_label="value"))
    view, axis = panel.view, panel.view.getAxis("left")
    view.grab()
    wide = axis.textWidth
    layer_views.show(panel, encode(Result((CurveLayer("c", {"y": (x, 0.5 * x)}, x_label="step", y_label="value"),))).layers[0])
    view.grab()
    assert axis.textWidth == wide
    layer_views.show(panel, encode(Result((CurveLayer("c", {"y": (x, 0.5 * x)}, x_label="step", y_label="share"),))).layers[0])
    view.grab()
    assert axis.textWidth < wide


def test_in_a_small_panel_the_key_wraps_within_the_data_and_a_long_axis_title_moves_whole_above_the_plot(qtbot):
    from PySide6 import QtGui

    from widgets.plot_text import KEY_PT, font_at

    series = {"squeeze: channel mean": np.array([0.2, 0.4]), "excitation weight": np.array([0.5, 0.1])}
    panel = shown(qtbot, BarsLayer("se", ("a", "b"), series, value_label="channel mean; weight (0 to 1) of every channel"))
    panel.resize(220, 200)
    qtbot.wait(30)
    view = panel.view
    metrics = QtGui.QFontMetricsF(font_at(view.font(), KEY_PT))
    lines = view.key_rows()
    assert " ".join(" ".join(line) for line in lines).split() == " ".join(series).split()  # every word, in order
    assert all(metrics.horizontalAdvance("\u25a0 " + "   ".join(line)) <= view.plotItem.vb.width() for line in lines)
    # vertical bars: the value title belongs to the left axis, too short for it even at 7.5 pt, so it
    # reads whole in the title row (wrapped within the data's column) and the axis keeps no cut copy
    assert view.axis_label("left") == ("", 0.0) and not view.getAxis("left").label.isVisible()
    notes = view.title_notes()
    assert " ".join(notes) == "y: channel mean; weight (0 to 1) of every channel"
    assert all(metrics.horizontalAdvance(line) <= view.plotItem.vb.width() for line in notes)
    panel.resize(420, 640)  # room again: the title goes back to its axis, whole
    qtbot.wait(30)
    text, points = view.axis_label("left")
    assert text == "channel mean; weight (0 to 1) of every channel" and view.title_notes() == []
    assert view.getAxis("left").label.boundingRect().width() <= view.getAxis("left").geometry().height()


def test_many_bars_keep_every_name_at_a_smaller_size_while_it_fits(qtbot):
    names = tuple(f"channel {i} name" for i in range(24))
    panel = shown(qtbot, BarsLayer("many", names, {"w": np.linspace(0, 1, 24)}))
    panel.resize(300, 480)
    qtbot.wait(30)
    assert panel.view.horizontal and panel.view.tick_labels() == list(names)
    panel.resize(300, 200)  # too short for 24 rows at the smallest size: every other name
    qtbot.wait(30)
    assert panel.view.tick_labels() == list(names[::2])


def test_new_row_and_column_names_in_the_same_grid_take_the_old_names_places(qtbot):
    grid = np.zeros((60, 90, 3), np.float32)
    panel = shown(qtbot, ImageLayer("grid", grid, row_labels=("r2", "r3"), column_labels=("2", "3", "4")))
    before = panel.view.grid_labels()
    layer = encode(Result((ImageLayer("grid", grid, row_labels=("r5", "r6"), column_labels=("5", "6", "7")),))).layers[0]
    layer_views.show(panel, layer)
    after = panel.view.grid_labels()
    assert set(after) == {"r5", "r6", "5", "6", "7"}
    assert after["7"] == before["4"] and after["r6"] == before["r3"]  # each new name in its old name's place


def test_a_long_dock_title_is_cut_to_its_bar_and_whole_in_its_tooltip(qtbot):
    """A title must not set its dock's minimum width (it pushed a 1366 px window wider)."""
    from PySide6 import QtCore, QtWidgets

    from widgets.dock_title import DockTitleBar

    full = "Receptive field: deformable convolution"
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    dock = QtWidgets.QDockWidget(full, window)
    bar = DockTitleBar(dock)
    dock.setTitleBarWidget(bar)
    window.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, dock)
    window.resize(160, 200)  # the dock takes the window's width
    window.show()
    qtbot.wait(20)
    assert bar.label.text() == full and full in bar.label.toolTip()
    assert dock.width() <= 160 and bar.label.shown_text().endswith("\u2026")
    assert bar.minimumSizeHint().width() < 150


def test_a_caption_shows_its_whole_text_and_asks_for_a_new_layout_only_when_its_lines_change(qtbot):
    """Captions carry numbers that change every frame: a new text on as many lines repaints the
    caption alone; one that needs more lines grows it, and it is never cut."""
    from PySide6 import QtCore, QtGui, QtWidgets

    from widgets.panel import Panel

    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    panel = Panel("p", QtWidgets.QWidget())
    window.setCentralWidget(panel)
    window.resize(300, 300)
    window.show()
    panel.set_caption("compute 1.0 ms for this panel")
    qtbot.wait(20)
    requests = []

    class Count(QtCore.QObject):
        def eventFilter(self, obj, event):
            if event.type() == QtCore.QEvent.Type.LayoutRequest:
                requests.append(obj)
            return False

    counter = Count()
    panel.installEventFilter(counter)
    height = panel.caption.height()
    panel.set_caption("compute 2.5 ms for this panel")
    qtbot.wait(20)
    assert panel.caption.text() == "compute 2.5 ms for this panel" and requests == [] and panel.caption.height() == height
    long = "a caption long enough to need several lines at this width, " * 3
    panel.set_caption(long)
    qtbot.wait(20)
    metrics = QtGui.QFontMetrics(panel.caption.font())
    needed = metrics.boundingRect(QtCore.QRect(0, 0, panel.caption.width() - 6, 10_000),
                                  QtCore.Qt.TextFlag.TextWordWrap, long).height()
    assert panel.caption.height() >= needed > 2 * metrics.height()  # grown to every line of it
    panel.removeEventFilter(counter)
