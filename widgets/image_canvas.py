"""An image view with zoom, pan, fit and 1:1, a cursor readout, a click point, a mirrored
crosshair and light overlays (points, boxes, segments, meshes, a heat layer).

Built on a bare ViewBox + ImageItem: pyqtgraph's ImageView costs 14-25 ms of UI work per frame,
this about 4 ms. Overlays are single PlotCurveItems with connect='pairs' (thousands of arrows
as ArrowItems would cost over half a second).
"""

from __future__ import annotations

import functools
import time
from typing import Optional, Sequence

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from widgets.colormaps import indexed_table, lookup_table, overlay_table
from widgets.encoding import auto_levels, is_indexed
from widgets.pgconfig import paints_every_pixel, pg

Extent = tuple[float, float, float, float]
GRID_PAD_PX = 8  # between a grid label and the picture, and between label rows
MARKER_PX = 13  # the query marker's diameter, screen pixels


@functools.lru_cache(maxsize=4096)
def _brush(rgba: tuple[int, ...]) -> QtGui.QBrush:
    """One brush object per colour, kept: a scatter item's symbol atlas knows brushes and pens by
    object, so a new brush per point each frame re-rendered every symbol and rebuilt the atlas."""
    return pg.mkBrush(*rgba)


_POINT_PEN = pg.mkPen((0, 0, 0, 200), width=1)


class ScreenFormatImageItem(pg.ImageItem):
    """An ImageItem whose picture is kept in the raster engine's own 32-bit formats. pyqtgraph
    hands Qt RGB888 or indexed pictures, which Qt converts on every paint: a 512x512 picture
    drawn at 800x800 cost 1.5 ms a paint; converted once per picture (0.1 ms), 0.7 ms."""

    def render(self) -> None:
        super().render()
        image = self.qimage
        if image is None:
            return
        Format = QtGui.QImage.Format
        if image.format() not in (Format.Format_RGB32, Format.Format_ARGB32_Premultiplied):
            self.qimage = image.convertToFormat(Format.Format_ARGB32_Premultiplied if image.hasAlphaChannel()
                                                else Format.Format_RGB32)


class ImageCanvas(pg.GraphicsView):
    """Signals carry image coordinates of the frame (x right, y down)."""

    hovered = QtCore.Signal(float, float)
    left = QtCore.Signal()
    clicked = QtCore.Signal(float, float)

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None, frame_coords: bool = True) -> None:
        super().__init__(parent, background=(24, 24, 28))
        paints_every_pixel(self)
        self.frame_coords = frame_coords  # False for mosaics: clicks and crosshairs mean nothing there
        self.view = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.view.setDefaultPadding(0.01)
        self.setCentralItem(self.view)
        self.image_item = ScreenFormatImageItem()
        self.heat_item = ScreenFormatImageItem()
        self.heat_item.setZValue(5)
        self.heat_item.setVisible(False)
        self.view.addItem(self.image_item)
        self.view.addItem(self.heat_item)
        pen = pg.mkPen((255, 255, 255, 110), width=1, style=QtCore.Qt.PenStyle.DashLine)
        self._vline = pg.InfiniteLine(angle=90, movable=False, pen=pen)
        self._hline = pg.InfiniteLine(angle=0, movable=False, pen=pen)
        for line in (self._vline, self._hline):
            line.setZValue(20)
            line.setVisible(False)
            self.view.addItem(line, ignoreBounds=True)
        self._marker = pg.ScatterPlotItem(size=MARKER_PX, pen=pg.mkPen((0, 0, 0), width=2), brush=pg.mkBrush(60, 220, 255))
        self._marker.setZValue(30)
        self.view.addItem(self._marker, ignoreBounds=True)
        self._overlays: list[pg.GraphicsObject] = []
        self._boxes: dict[tuple, list[Extent]] = {}  # (colour, width) -> boxes of this frame
        self._spare: dict[type, list[pg.GraphicsObject]] = {}
        self._labels: list[pg.TextItem] = []
        self._labels_key: tuple = ()
        self._grid_items: list[pg.TextItem] = []
        self._text_pool: list[pg.TextItem] = []  # hidden text items, reused
        self._grid_key: tuple = ()
        self._row_items: list = []
        self._column_items: list = []
        self._title_items: list = [None, None]
        self._label_px = (0, 0)  # room the grid labels need left of and above the picture, screen px
        self._column_px = self._row_px = 0
        self._shape: Optional[tuple[int, int]] = None
        self._extent: Optional[Extent] = None
        self._data: Optional[np.ndarray] = None
        self.levels: tuple[float, float] = (0.0, 1.0)  # of the shown image: what its colour bar spans
        self._focus: Optional[Extent] = None
        self._marker_at: Optional[tuple[float, float]] = None
        self._image_key: tuple = ()
        self._heat_key: tuple = ()
        self._heat_data: Optional[np.ndarray] = None
        self.last_paint_ms = 0.0
        self._manual = False  # the user zoomed or panned: frames keep their view until Fit
        self.view.sigRangeChangedManually.connect(self._on_manual_range)
        self.setMouseTracking(True)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.scene().sigMouseClicked.connect(self._on_mouse_clicked)

    # -- content ---------------------------------------------------------------------------
    def set_image(
        self,
        image: np.ndarray,
        levels: Optional[tuple[float, float]] = None,
        colormap: Optional[str] = None,
        extent: Optional[Extent] = None,
    ) -> None:
        """RGB (H, W, 3) floats in [0, 1] by default, or a scalar map through ``colormap``; a
        uint8 scalar map holds :func:`to_indexed` indices made on the worker for ``levels``.

        Float data with fixed levels goes to the ImageItem as is: converting to uint8 here
        would cost the UI thread more than pyqtgraph's own conversion at paint time.
        """
        if levels is None:
            levels = (0.0, 1.0) if image.ndim == 3 else auto_levels(image)
        key = (id(image), tuple(levels), colormap, extent)
        if image is self._data and key == self._image_key:
            return  # the same array as the last frame: nothing to upload or repaint
        self._data, self._image_key = image, key
        self.levels = tuple(levels)
        if is_indexed(image):
            self.image_item.setImage(image, levels=None, lut=indexed_table(colormap or "viridis"), autoLevels=False)
        elif image.ndim == 3 and image.dtype == np.uint8 and tuple(levels) == (0.0, 255.0):
            self.image_item.setImage(image, levels=None, autoLevels=False)  # as it is: no rescale pass (0.5 ms)
        else:
            lut = lookup_table(colormap or "viridis") if image.ndim == 2 else None
            self.image_item.setImage(image, levels=levels, lut=lut, autoLevels=False)
        h, w = image.shape[:2]
        rect = extent if extent is not None else (0.0, 0.0, float(w), float(h))
        self.image_item.setRect(QtCore.QRectF(*rect))
        first = self._shape is None
        if self._shape != (h, w) or self._extent != extent:
            self._shape, self._extent = (h, w), extent
            if first or not self._user_zoomed():
                self.fit()

    def set_heat(self, heat: Optional[np.ndarray], levels: tuple[float, float], colormap: str, opacity: float,
                 extent: Optional[Extent] = None) -> None:
        if heat is None:
            self.heat_item.setVisible(False)
            self._heat_key = ()
            return
        key = (id(heat), tuple(levels), colormap, opacity, extent)
        if key == self._heat_key and heat is self._heat_data:
            return
        self._heat_key, self._heat_data = key, heat
        if is_indexed(heat):
            self.heat_item.setImage(heat, levels=None, lut=indexed_table(colormap, round(opacity, 3)), autoLevels=False)
        else:
            self.heat_item.setImage(heat, levels=levels, lut=overlay_table(colormap, round(opacity, 3)), autoLevels=False)
        h, w = heat.shape[:2]
        self.heat_item.setRect(QtCore.QRectF(*(extent or (0.0, 0.0, float(w), float(h)))))
        self.heat_item.setVisible(True)

    def clear_overlays(self) -> None:
        """Starts a frame's overlays. Last frame's items are kept as spares and refilled by the
        next add_* calls (rebuilding pyqtgraph items cost about 10 ms a panel); ``finish_overlays``
        removes the ones left over."""
        for item in self._overlays:
            self._spare.setdefault(type(item), []).append(item)
        self._overlays = []
        self._boxes: dict[tuple, list[Extent]] = {}

    def finish_overlays(self) -> None:
        """Draws the frame's boxes, one item per colour and width, and drops the spare items."""
        for (color, width), boxes in self._boxes.items():
            x, y, w, h = np.asarray(boxes, np.float64).reshape(-1, 4).T
            corners = np.stack([np.stack([x, y], 1), np.stack([x + w, y], 1),
                                np.stack([x + w, y + h], 1), np.stack([x, y + h], 1)], 1)  # (n, 4, 2)
            xy = np.stack([corners, np.roll(corners, -1, axis=1)], 2).reshape(-1, 2)  # each side a pair
            xy = xy[np.isfinite(xy).reshape(-1, 2, 2).all((1, 2)).repeat(2)]
            self._add(self._line_item(xy, "pairs", pg.mkPen(*color, width=width)), z=11)
        self._boxes = {}
        for items in self._spare.values():
            for item in items:
                self.view.removeItem(item)
        self._spare.clear()

    def _reuse(self, cls: type):
        items = self._spare.get(cls)
        return items.pop() if items else None

    def add_points(self, points: np.ndarray, color: Sequence[int], size: float,
                   values: Optional[np.ndarray] = None) -> None:
        pts = np.asarray(points, np.float64).reshape(-1, 2) + 0.5  # pixel centres
        keep = np.isfinite(pts).all(1)  # a point at NaN or infinity is not drawn
        if values is not None and len(values) == len(pts):
            v = np.nan_to_num(np.asarray(values, np.float64)[keep], nan=0.0, posinf=0.0, neginf=0.0)
            pts = pts[keep]
            v = v / v.max() if len(v) and v.max() > 0 else np.ones_like(v)
            brushes = [_brush(tuple(color) + (int(60 + 195 * a),)) for a in v]
        else:
            pts = pts[keep]
            brushes = _brush(tuple(color))
        pen = _POINT_PEN
        item = self._reuse(pg.ScatterPlotItem)
        if item is None:
            item = pg.ScatterPlotItem()
        item.setData(x=pts[:, 0], y=pts[:, 1], size=size, brush=brushes, pen=pen)
        self._add(item, z=12)

    def add_segments(self, starts: np.ndarray, ends: np.ndarray, color: Sequence[int], width: float = 1.0) -> None:
        """Segments from ``starts`` to ``ends`` (N, 2) in pixel coordinates, one draw call."""
        s = np.asarray(starts, np.float64).reshape(-1, 2) + 0.5
        e = np.asarray(ends, np.float64).reshape(-1, 2) + 0.5
        keep = np.isfinite(s).all(1) & np.isfinite(e).all(1)  # a segment to NaN or infinity is not drawn
        s, e = s[keep], e[keep]
        xy = np.empty((2 * len(s), 2))
        xy[0::2], xy[1::2] = s, e
        self._add(self._line_item(xy, "pairs", pg.mkPen(*color, width=width)), z=10)

    def add_polyline(self, points: np.ndarray, color: Sequence[int], width: float = 1.5, closed: bool = True) -> None:
        """A polyline through pixel-index coordinates (pixel i's centre at i), like points."""
        self._polyline(np.asarray(points, np.float64).reshape(-1, 2) + 0.5, color, width, closed)

    def add_box(self, box: Extent, color: Sequence[int], width: float = 1.5) -> None:
        """A box (x, y, w, h) in edge coordinates, as extents and focus regions are. Boxes of one
        colour and width are drawn as one item by ``finish_overlays`` (an item per box cost
        0.2 ms each, and a deformable kernel frame has 28)."""
        self._boxes.setdefault((tuple(color), float(width)), []).append(tuple(map(float, box)))

    def _polyline(self, p: np.ndarray, color: Sequence[int], width: float, closed: bool) -> None:
        p = p[np.isfinite(p).all(1)]
        if closed and len(p):
            p = np.vstack([p, p[:1]])
        self._add(self._line_item(p, "all", pg.mkPen(*color, width=width)), z=11)

    def _line_item(self, xy: np.ndarray, connect: str, pen) -> pg.PlotCurveItem:
        item = self._reuse(pg.PlotCurveItem)
        if item is None:
            item = pg.PlotCurveItem()
        item.setData(xy[:, 0], xy[:, 1], connect=connect, pen=pen)
        return item

    def add_mesh(self, grid: np.ndarray, color: Sequence[int], max_lines: int = 24) -> None:
        """A (Gh, Gw, 2) grid of pixel-index x, y drawn as a wire mesh, thinned to ``max_lines`` per axis."""
        gh, gw = grid.shape[:2]
        rs = np.unique(np.linspace(0, gh - 1, min(gh, max_lines)).round().astype(int))
        cs = np.unique(np.linspace(0, gw - 1, min(gw, max_lines)).round().astype(int))
        sub = grid[np.ix_(rs, cs)]
        starts = np.concatenate([sub[:, :-1].reshape(-1, 2), sub[:-1, :].reshape(-1, 2)])
        ends = np.concatenate([sub[:, 1:].reshape(-1, 2), sub[1:, :].reshape(-1, 2)])
        self.add_segments(starts, ends, color, width=1.0)

    def set_labels(self, labels: Sequence[str], positions: Sequence[tuple[float, float]],
                   color: Sequence[int] = (235, 235, 235)) -> None:
        """Tile captions. Kept across frames while unchanged: each new TextItem costs about 1 ms."""
        key = (tuple(labels), tuple(map(tuple, positions)), tuple(color))
        if key == self._labels_key:
            return
        for item in self._labels:
            self._text_pool.append(item)
            item.setVisible(False)
        self._labels = []
        for text, (x, y) in zip(labels, positions):
            item = self._text_item(text, (0, 0), tuple(color), fill=(0, 0, 0, 150))  # readable on light tiles
            item.setPos(x, y)
            item.full_text = text
            self._labels.append(item)
        self._labels_key = key
        self._fit_tile_labels()

    def _fit_tile_labels(self) -> None:
        """Each tile caption cut (with an ellipsis) to its tile's width on screen, so captions of
        narrow tiles never run into each other."""
        if not self._labels or self._shape is None:
            return
        scale = self.display_scale()
        metrics = QtGui.QFontMetrics(self.font())
        xs = [item.pos().x() for item in self._labels]
        right = float(self._shape[1])
        for i, item in enumerate(self._labels):
            following = [x for x in xs if x > xs[i] + 1e-6]
            room_px = (min(following) if following else right) - xs[i]
            width = max(int(room_px * scale) - 6, 0)
            text = metrics.elidedText(item.full_text, QtCore.Qt.TextElideMode.ElideRight, width) if width else ""
            item.setVisible(bool(text))
            if item.textItem.toPlainText() != text:
                item.setText(text)

    def set_grid_labels(self, rows: Sequence[str], columns: Sequence[str], titles: tuple[str, str] = ("", "")) -> None:
        """Names the rows and columns of a picture that is a uniform grid of tiles, outside the
        picture (left and above), with an axis title for each. The fit leaves room for them by
        their size on screen, and thins labels wider than their tiles (every k-th is shown)."""
        key = (tuple(rows), tuple(columns), tuple(titles), self._shape)
        if key == self._grid_key:
            return
        layout = (len(rows), len(columns), bool(titles[0]), bool(titles[1]), self._shape)
        same_layout = bool(self._grid_key) and layout == (len(self._grid_key[0]), len(self._grid_key[1]),
                                                          bool(self._grid_key[2][0]), bool(self._grid_key[2][1]),
                                                          self._grid_key[3])
        self._grid_key = key
        if self._shape is None:
            self._drop_grid_items()
            return
        metrics = QtGui.QFontMetrics(self.font())
        line = metrics.height()
        label_px = (
            (max((metrics.horizontalAdvance(t) for t in rows), default=0) + GRID_PAD_PX if rows else 0)
            + (line + GRID_PAD_PX if titles[1] else 0),
            (line + GRID_PAD_PX if columns else 0) + (line + GRID_PAD_PX if titles[0] else 0),
        )
        column_px = max((metrics.horizontalAdvance(t) for t in columns), default=0) + GRID_PAD_PX
        if same_layout:  # new names in the same places (a kernel size changed): re-text in place
            for item, text in zip(self._row_items + self._column_items + self._title_items, [*rows, *columns, *titles]):
                if item is not None and item.textItem.toPlainText() != text:
                    item.setText(text)
            if (label_px, column_px) == (self._label_px, self._column_px):
                return  # the same room: no new fit
            self._label_px, self._column_px = label_px, column_px
            self.fit()
            return
        self._drop_grid_items()
        self._label_px, self._column_px, self._row_px = label_px, column_px, line
        color, title_color = (225, 225, 225), (160, 200, 255)
        self._row_items = [self._grid_text(t, (1.0, 0.5), color) for t in rows]
        self._column_items = [self._grid_text(t, (0.5, 1.0), color) for t in columns]
        self._title_items = [self._grid_text(titles[0], (0.5, 1.0), title_color) if titles[0] else None,
                             self._grid_text(titles[1], (0.5, 1.0), title_color, angle=90) if titles[1] else None]
        self.fit()

    def _drop_grid_items(self) -> None:
        for item in self._grid_items:
            self._text_pool.append(item)
            item.setVisible(False)
        self._grid_items, self._row_items, self._column_items, self._title_items = [], [], [], []

    def _place_grid_labels(self, scale: float) -> None:
        """Positions the grid labels for ``scale`` screen pixels per image pixel."""
        if not self._grid_items or self._shape is None:
            return
        h, w = self._shape
        pad = GRID_PAD_PX / 2 / scale
        for items, extent, tile_px, label_px in ((self._row_items, h, h * scale, self._row_px),
                                                  (self._column_items, w, w * scale, self._column_px)):
            if not items:
                continue
            every = max(1, int(np.ceil(label_px / max(tile_px / len(items), 1e-6))))
            for i, item in enumerate(items):
                centre = (i + 0.5) * extent / len(items)
                if items is self._row_items:
                    item.setPos(-pad, centre)
                else:
                    item.setPos(centre, -pad)
                item.setVisible(i % every == 0)
        line = self._row_px / scale
        x_title, y_title = self._title_items
        if x_title is not None:
            x_title.setPos(w / 2, -pad - (line + pad if self._column_items else 0.0))
        if y_title is not None:
            row_width = (self._label_px[0] - (self._row_px + GRID_PAD_PX)) / scale
            y_title.setPos(-pad - row_width, h / 2)

    @property
    def image_shape(self) -> Optional[tuple[int, int]]:
        """(h, w) of the picture shown, or None before the first."""
        return self._shape

    def grid_labels(self) -> dict[str, tuple[float, float]]:
        """Each grid label's text and where it is anchored, in image coordinates."""
        return {item.textItem.toPlainText(): (item.pos().x(), item.pos().y()) for item in self._grid_items}

    def overlay_colors(self) -> set[tuple[int, int, int]]:
        """The pen colours of the overlays drawn this frame (arrows, segments, boxes)."""
        return {tuple(item.opts["pen"].color().getRgb()[:3]) for item in self._overlays if "pen" in item.opts}

    def overlay_lines(self) -> list[tuple[tuple[int, int, int], np.ndarray]]:
        """Each line overlay of this frame: its pen colour and its (N, 2) vertices as drawn."""
        out = []
        for item in self._overlays:
            if isinstance(item, pg.PlotCurveItem):
                x, y = item.getData()
                out.append((tuple(item.opts["pen"].color().getRgb()[:3]), np.stack([x, y], 1)))
        return out

    @property
    def heat_opacity(self) -> float:
        """The opacity the overlay map is drawn with; 0 when no overlay is shown."""
        return float(self._heat_key[3]) if self.heat_item.isVisible() and self._heat_key else 0.0

    def _grid_text(self, text: str, anchor: tuple[float, float], color, angle: float = 0) -> pg.TextItem:
        item = self._text_item(text, anchor, color, angle=angle)
        self._grid_items.append(item)
        return item

    def _text_item(self, text: str, anchor, color, angle: float = 0, fill=None) -> pg.TextItem:
        """A text item from the pool of hidden ones, or a new one: making a TextItem costs about a
        millisecond, re-texting one a tenth of that (captions that change every frame)."""
        item = self._text_pool.pop() if self._text_pool else None
        if item is None:
            item = pg.TextItem(text, color=color, anchor=anchor, angle=angle, fill=fill)
            item.setZValue(15)
            self.view.addItem(item, ignoreBounds=True)
        else:
            item.setText(text, color=color)
            item.setAnchor(anchor)
            item.setAngle(angle)
            item.fill = pg.mkBrush(fill) if fill is not None else pg.mkBrush(None)
            item.setVisible(True)
        return item

    def _add(self, item: pg.GraphicsObject, z: float) -> None:
        item.setZValue(z)
        if item.scene() is None:
            self.view.addItem(item, ignoreBounds=True)
        self._overlays.append(item)

    # -- query marker and crosshair ---------------------------------------------------------
    def set_marker(self, point: Optional[tuple[float, float]]) -> None:
        if point == self._marker_at:
            return  # unchanged: no repaint
        self._marker_at = point
        if point is None or not self.frame_coords:
            self._marker.setData([])
        else:
            self._marker.setData([point[0] + 0.5], [point[1] + 0.5])

    def set_marker_scale(self, scale: float) -> None:
        """The query marker ``scale`` times its usual size (presentation mode)."""
        self._marker.setSize(MARKER_PX * scale)
        self._marker.setPen(pg.mkPen((0, 0, 0), width=2 * scale))

    def marker_size(self) -> float:
        return float(self._marker.opts["size"])

    def set_crosshair(self, point: Optional[tuple[float, float]]) -> None:
        visible = point is not None and self.frame_coords
        self._vline.setVisible(visible)
        self._hline.setVisible(visible)
        if visible:
            self._vline.setPos(point[0] + 0.5)
            self._hline.setPos(point[1] + 0.5)

    def marker_position(self) -> Optional[tuple[float, float]]:
        """Where the query marker is drawn (the pixel's centre), or None when it is hidden."""
        xs, ys = self._marker.getData()
        return None if xs is None or not len(xs) else (float(xs[0]), float(ys[0]))

    def crosshair_position(self) -> Optional[tuple[float, float]]:
        """Where the crosshair lines cross, or None when they are hidden."""
        if not self._vline.isVisible():
            return None
        return float(self._vline.value()), float(self._hline.value())

    def set_focus(self, box: Optional[Extent]) -> None:
        """Zoom to ``box`` (x, y, w, h) when it changes; None returns to the whole image."""
        if box == self._focus:
            return
        self._focus = box
        if box is None:
            self.fit()
        else:
            self.view.setRange(QtCore.QRectF(*box), padding=0.05)
        self.view.updateMatrix()  # now, not while painting: a transform changed mid-paint paints twice

    # -- view --------------------------------------------------------------------------------
    def fit(self) -> None:
        """The whole picture (and its grid labels). A picture smaller than half the view is shown
        at the largest whole-number scale that fits, so small images stay crisp squares."""
        self._manual = False
        if self._shape is None or self._extent is not None:
            self.view.autoRange(padding=0.01)
            self.view.updateMatrix()
            return
        h, w = self._shape
        vw, vh = max(self.view.width(), 1.0), max(self.view.height(), 1.0)
        left_px, above_px = self._label_px if self._grid_items else (0, 0)
        scale = max(min((vw - left_px) / w, (vh - above_px) / h), 1e-3)
        left, above = left_px / scale, above_px / scale
        x0, y0, width, height = -left, -above, w + left, h + above
        scale = min(vw / width, vh / height)
        if scale >= 2.0:
            whole = float(np.floor(scale))
            width, height = vw / whole, vh / whole
            left, above = left_px / whole, above_px / whole  # the labels' room at this scale
            x0 = -left - (width - (w + left)) / 2  # the block of labels and picture, centred
            y0 = -above - (height - (h + above)) / 2
            self.view.setRange(QtCore.QRectF(x0, y0, width, height), padding=0)
            self._place_grid_labels(whole)
        else:
            self.view.setRange(QtCore.QRectF(x0, y0, width, height), padding=0.01)
            self._place_grid_labels(scale / 1.02)
        self.view.updateMatrix()  # the new range applies now, not during the paint (which then paints twice)

    def display_scale(self) -> float:
        """Screen pixels per image pixel, as shown now."""
        rect = self.view.viewRect()
        return self.view.width() / max(rect.width(), 1e-9)

    def one_to_one(self) -> None:
        """One image pixel to one screen pixel, centred on the current view."""
        rect = self.view.viewRect()
        size = self.view.size()
        cx, cy = rect.center().x(), rect.center().y()
        w, h = size.width(), size.height()
        self.view.setRange(QtCore.QRectF(cx - w / 2, cy - h / 2, w, h), padding=0)
        self._manual = True

    def value_at(self, x: float, y: float) -> Optional[np.ndarray]:
        if self._data is None or self._shape is None:
            return None
        h, w = self._shape
        if self._extent is not None:
            ex, ey, ew, eh = self._extent
            x, y = (x - ex) * w / ew, (y - ey) * h / eh
        ix, iy = int(np.floor(x)), int(np.floor(y))
        if 0 <= ix < w and 0 <= iy < h:
            return np.atleast_1d(self._data[iy, ix])
        return None

    def _user_zoomed(self) -> bool:
        return self._manual

    def _on_manual_range(self, *_args) -> None:
        self._manual = True

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        if getattr(self, "_shape", None) is not None and not self._manual and self._focus is None:
            self.fit()  # a picture sized to the panel follows the panel (resizes come during construction too)
        if getattr(self, "_labels", None):
            self._fit_tile_labels()

    def _on_mouse_moved(self, pos: QtCore.QPointF) -> None:
        if not self.view.sceneBoundingRect().contains(pos):
            self.left.emit()
            return
        p = self.view.mapSceneToView(pos)
        self.hovered.emit(p.x(), p.y())

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != QtCore.Qt.MouseButton.LeftButton or event.double():
            return
        p = self.view.mapSceneToView(event.scenePos())
        self.clicked.emit(p.x(), p.y())

    def leaveEvent(self, event: QtCore.QEvent) -> None:
        self.left.emit()
        super().leaveEvent(event)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        t0 = time.perf_counter()
        super().paintEvent(event)
        self.last_paint_ms = (time.perf_counter() - t0) * 1e3

