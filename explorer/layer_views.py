"""Each result layer class mapped to a view inside a Panel; the only place that knows both the
backends' layer dataclasses and the widgets. Runs on the UI thread and takes layers in display
form (explorer.display), so it only hands arrays to views (no computation beyond tiling).

Adding a layer kind: one layer class in backends/layers.py, one ``_show_*`` here, and its entry
in ``VIEWS`` (which view shows it, whether it has a colour bar, which function fills it)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from backends.layers import (
    INPUT,
    BarsLayer,
    CurveLayer,
    FeatureMapsLayer,
    HeatmapLayer,
    ImageLayer,
    Layer,
    MetricsLayer,
    PointsLayer,
    SamplingGridLayer,
    VectorFieldLayer,
)
from widgets.colormaps import indexed_table, lookup_table
from widgets.encoding import auto_levels, rgb_to_uint8
from widgets.image_canvas import ImageCanvas
from widgets.mosaic import tile
from widgets.panel import Panel
from widgets.pgconfig import pg
from widgets.plots import BarsView, CurveView, MetricsView

ARROW_BINS = 8  # arrows are drawn in this many colours of their map, by length


def _view(layer: Layer) -> tuple[type, bool, Callable[[Panel, Layer], None]]:
    try:
        return VIEWS[type(layer)]
    except KeyError:
        raise TypeError(f"no view for {type(layer).__name__}; add it to layer_views.VIEWS") from None


def _furniture(layer: Layer) -> tuple[bool, bool, bool]:
    """(colour bar, category legend, overlay controls) the layer's panel needs."""
    _, colorbar, _ = _view(layer)
    categorical = isinstance(layer, ImageLayer) and bool(layer.categories)
    overlay = isinstance(layer, HeatmapLayer) and layer.background is not None and np.ndim(layer.maps) == 2
    return colorbar and not categorical, categorical, overlay


def make_panel(layer: Layer, input_shape: Optional[tuple[int, int]] = None) -> Panel:
    cls = _view(layer)[0]
    view = ImageCanvas(frame_coords=_frame_coords(layer, input_shape)) if cls is ImageCanvas else cls()
    colorbar, legend, overlay = _furniture(layer)
    panel = Panel(layer.name, view, with_colorbar=colorbar, with_legend=legend, with_overlay=overlay)
    if panel.overlay is not None:  # redraw the last layer with the user's opacity, no recompute
        panel.overlay.changed.connect(lambda: show(panel, *panel.last_shown))
    return panel


def panel_fits(panel: Panel, layer: Layer, input_shape: Optional[tuple[int, int]] = None) -> bool:
    """Whether ``panel`` can show ``layer`` in place (same view type, furniture and coordinate frame)."""
    if type(panel.view) is not _view(layer)[0]:
        return False
    colorbar, legend, overlay = _furniture(layer)
    if ((panel.colorbar is not None) != colorbar or (panel.legend is not None) != legend
            or (panel.overlay is not None) != overlay):
        return False
    return not isinstance(panel.view, ImageCanvas) or panel.view.frame_coords == _frame_coords(layer, input_shape)


def _frame_coords(layer: Layer, input_shape: Optional[tuple[int, int]] = None) -> bool:
    """Whether the panel shows the input's frame, so clicks, markers and crosshairs apply.
    An image of another size without an extent (a codebook, a sample grid) does not."""
    if isinstance(layer, FeatureMapsLayer):
        return False
    if isinstance(layer, HeatmapLayer):
        maps = np.asarray(layer.maps)
        return maps.ndim == 2 and (layer.background is not None or layer.extent is not None
                                   or input_shape is None or maps.shape[:2] == tuple(input_shape))
    if isinstance(layer, ImageLayer):
        return layer.extent is not None or input_shape is None or tuple(layer.image.shape[:2]) == tuple(input_shape)
    background = getattr(layer, "background", None)  # points, arrows, grids drawn on a picture of their own
    if isinstance(background, np.ndarray) and input_shape is not None:
        return tuple(background.shape[:2]) == tuple(input_shape)
    return True


def show(panel: Panel, layer: Layer, input_pixels: Optional[np.ndarray] = None) -> None:
    """``input_pixels`` stands in for a layer background of ``INPUT``."""
    panel.last_shown = (layer, input_pixels)
    if getattr(layer, "background", None) is INPUT:
        layer = replace(layer, background=input_pixels)
    _view(layer)[2](panel, layer)
    if isinstance(panel.view, ImageCanvas):
        panel.view.finish_overlays()
    panel.set_caption(layer.caption)
    prepare_for_paint(panel.view)


def prepare_for_paint(view) -> None:
    """Applies what pyqtgraph defers to the start of a paint (auto ranges, view matrices, text
    transforms) now: applied during the paint, they dirty the scene again, and the view paints
    twice a frame (plots whose range follows their data did, every frame)."""
    scene = view.scene() if isinstance(view, pg.GraphicsView) else None
    if scene is not None:
        scene.prepareForPaint()


def _show_image(panel: Panel, layer: ImageLayer) -> None:
    canvas: ImageCanvas = panel.view
    canvas.clear_overlays()
    canvas.set_heat(None, (0, 1), "", 0)
    canvas.set_image(layer.image, layer.levels, layer.colormap, layer.extent)
    canvas.set_grid_labels(layer.row_labels, layer.column_labels, layer.axis_titles)
    for box in layer.boxes:
        canvas.add_box(box, (255, 220, 80), width=2.0)
    if panel.legend is not None:
        panel.legend.set_categories(layer.categories, layer.palette)
        return
    scalar = layer.image.ndim == 2
    panel.set_colormap(layer.colormap if scalar else None, _levels_of(canvas) if scalar else None)


def _tiled(panel: Panel, maps: np.ndarray, fill: float = np.nan) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The mosaic of ``maps``, reused while the worker hands back the very same array."""
    cached = panel.__dict__.get("_tile_cache")
    if cached is not None and cached[0] is maps and np.array_equal(cached[1], fill, equal_nan=True):
        return cached[2], cached[3]
    data = maps if maps.dtype == np.uint8 else np.asarray(maps, np.float32)
    mosaic, origins = tile(data, fill=fill)
    panel._tile_cache = (maps, fill, mosaic, origins)
    return mosaic, origins


def _show_feature_maps(panel: Panel, layer: FeatureMapsLayer) -> None:
    canvas: ImageCanvas = panel.view
    canvas.clear_overlays()
    mosaic, origins = _tiled(panel, layer.maps)
    canvas.set_image(mosaic, layer.levels, layer.colormap)
    canvas.set_labels(layer.labels, origins)
    panel.set_colormap(layer.colormap, _levels_of(canvas))


def _show_heatmap(panel: Panel, layer: HeatmapLayer) -> None:
    canvas: ImageCanvas = panel.view
    canvas.clear_overlays()
    maps = layer.maps if layer.maps.dtype == np.uint8 else np.asarray(layer.maps, np.float32)
    levels = layer.levels or auto_levels(maps)
    map_only = panel.overlay is not None and panel.overlay.map_only.isChecked()
    if maps.ndim == 2:
        if layer.background is not None and not map_only:
            opacity = panel.overlay.effective_opacity(layer.opacity) if panel.overlay is not None else layer.opacity
            canvas.set_image(layer.background, picture_levels(layer.background))
            canvas.set_heat(maps, levels, layer.colormap, opacity, layer.extent)
        else:
            canvas.set_heat(None, levels, layer.colormap, 0)
            canvas.set_image(maps, levels, layer.colormap, layer.extent)
        canvas.set_focus(layer.focus)
    else:
        heat, origins = _tiled(panel, layer.maps)
        if layer.background is not None:
            canvas.set_image(_tiled_background(panel, layer.background, len(maps)), (0.0, 255.0))
            canvas.set_heat(heat, levels, layer.colormap, layer.opacity)
        else:
            canvas.set_heat(None, levels, layer.colormap, 0)
            canvas.set_image(heat, levels, layer.colormap)
        canvas.set_labels(layer.labels, origins)
    if maps.ndim == 2:
        canvas.set_labels((), ())
        for box in layer.boxes:
            canvas.add_box(box, (255, 220, 80), width=1.5)
    panel.set_colormap(layer.colormap, levels)


def _tiled_background(panel: Panel, background: np.ndarray, count: int) -> np.ndarray:
    """``count`` copies of one background under a map grid, as uint8, made once per background."""
    cached = panel.__dict__.get("_background_cache")
    if cached is not None and cached[0] is background and cached[1] == count:
        return cached[2]
    rgb = background if background.dtype == np.uint8 else rgb_to_uint8(background)
    back, _ = tile(np.ascontiguousarray(np.broadcast_to(rgb, (count,) + rgb.shape)), fill=0)
    panel._background_cache = (background, count, back)
    return back


def _reach(points: Optional[np.ndarray], limit: int = 4096) -> tuple[int, int]:
    """(h, w) of a dark frame that holds the finite ``points`` (N, 2) of x, y, when a layer has no
    picture of its own; NaN and infinite points are left out, and the frame is capped."""
    if points is None or not len(points):
        return (1, 1)
    finite = points[np.isfinite(points).all(1)]
    if not len(finite):
        return (1, 1)
    w, h = np.clip(finite.max(0) + 1, 1, limit)
    return int(h), int(w)


def _show_background(canvas: ImageCanvas, background: Optional[np.ndarray], fallback_shape: tuple[int, int]) -> None:
    canvas.clear_overlays()
    canvas.set_heat(None, (0, 1), "", 0)
    if background is None:
        h, w = fallback_shape
        background = np.full((max(h, 1), max(w, 1), 3), 0.12, np.float32)
    canvas.set_image(background, picture_levels(background))


def picture_levels(picture: np.ndarray) -> tuple[float, float]:
    """The levels an RGB picture is drawn with: 0..255 in display form (uint8), 0..1 as floats."""
    return (0.0, 255.0) if picture.dtype == np.uint8 else (0.0, 1.0)


def _show_vector_field(panel: Panel, layer: VectorFieldLayer) -> None:
    canvas: ImageCanvas = panel.view
    origins = np.asarray(layer.origins, np.float64).reshape(-1, 2)
    vectors = np.asarray(layer.vectors, np.float64).reshape(-1, 2) * layer.scale
    finite = np.isfinite(origins).all(1) & np.isfinite(vectors).all(1)  # an arrow at or to infinity is not drawn
    origins, vectors = origins[finite], vectors[finite]
    _show_background(canvas, layer.background, _reach(origins))
    if not len(origins):
        return
    mag = np.hypot(vectors[:, 0], vectors[:, 1])
    hi = float(mag.max()) or 1.0
    bins = np.minimum((mag / hi * ARROW_BINS).astype(int), ARROW_BINS - 1)
    colors = lookup_table(layer.colormap)[((np.arange(ARROW_BINS) + 0.5) * 256 / ARROW_BINS).astype(int)]
    ends = origins + vectors
    # Arrow heads: two short strokes back from the tip, at +-25 degrees.
    unit = vectors / np.maximum(mag, 1e-9)[:, None]
    head = np.minimum(mag * 0.35, 6.0)[:, None]
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    left = ends - head * np.stack([unit[:, 0] * c - unit[:, 1] * s, unit[:, 0] * s + unit[:, 1] * c], 1)
    right = ends - head * np.stack([unit[:, 0] * c + unit[:, 1] * s, -unit[:, 0] * s + unit[:, 1] * c], 1)
    for b in range(ARROW_BINS):
        sel = bins == b
        if sel.any():
            starts = np.concatenate([origins[sel], ends[sel], ends[sel]])
            stops = np.concatenate([ends[sel], left[sel], right[sel]])
            canvas.add_segments(starts, stops, tuple(int(v) for v in colors[b]), width=1.5)
    panel.set_colormap(layer.colormap, (0.0, hi / (layer.scale or 1.0)))


def _show_sampling_grid(panel: Panel, layer: SamplingGridLayer) -> None:
    canvas: ImageCanvas = panel.view
    grid = np.asarray(layer.grid, np.float64)
    _show_background(canvas, layer.background, grid.shape[:2])
    canvas.add_mesh(grid, (90, 220, 255))
    if layer.outline is not None:
        canvas.add_polyline(np.asarray(layer.outline), (255, 200, 60), width=2.0)
    canvas.set_focus(layer.focus or _union_focus(canvas, grid, layer.outline))


def _union_focus(canvas: ImageCanvas, grid: np.ndarray, outline: Optional[np.ndarray]):
    """The image and everything drawn on it, when a grid reaches outside the image; else None."""
    pts = grid.reshape(-1, 2) if outline is None else np.concatenate([grid.reshape(-1, 2), np.asarray(outline).reshape(-1, 2)])
    pts = pts[np.isfinite(pts).all(1)]
    if not len(pts):
        return None
    h, w = canvas.image_shape or (1, 1)
    lo = np.minimum(pts.min(0) + 0.5, 0.0)
    hi = np.maximum(pts.max(0) + 0.5, (w, h))
    if (lo >= 0).all() and (hi <= (w, h)).all():
        return None
    return (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


def _show_points(panel: Panel, layer: PointsLayer) -> None:
    canvas: ImageCanvas = panel.view
    allp = np.concatenate([np.asarray(s.points, np.float64).reshape(-1, 2) for s in layer.sets]) if layer.sets else None
    _show_background(canvas, layer.background, _reach(allp))
    for box in layer.boxes:
        canvas.add_box(box, (255, 220, 80), width=1.5)
    for s in layer.sets:
        pts = np.asarray(s.points, np.float64).reshape(-1, 2)
        if s.join_to is not None and len(pts):
            anchor = np.broadcast_to(np.asarray(s.join_to, np.float64), pts.shape)
            canvas.add_segments(anchor, pts, s.color + (150,) if len(s.color) == 3 else s.color, width=1.0)
        canvas.add_points(pts, s.color, s.size, s.values)
    canvas.set_focus(layer.focus)


def _show_bars(panel: Panel, layer: BarsLayer) -> None:
    panel.view.set_bars(layer.labels, layer.series, layer.y_range, layer.value_label, layer.horizontal)


def _show_curve(panel: Panel, layer: CurveLayer) -> None:
    panel.view.set_curves(layer.series, layer.x_label, layer.y_label, layer.log_y, layer.right, layer.right_label,
                          layer.log_x)


def _show_metrics(panel: Panel, layer: MetricsLayer) -> None:
    panel.view.set_values(layer.values)


def _levels_of(canvas: ImageCanvas) -> tuple[float, float]:
    return canvas.levels


VIEWS: dict[type, tuple[type, bool, Callable[[Panel, Layer], None]]] = {
    ImageLayer: (ImageCanvas, True, _show_image),
    FeatureMapsLayer: (ImageCanvas, True, _show_feature_maps),
    HeatmapLayer: (ImageCanvas, True, _show_heatmap),
    VectorFieldLayer: (ImageCanvas, True, _show_vector_field),
    SamplingGridLayer: (ImageCanvas, False, _show_sampling_grid),
    PointsLayer: (ImageCanvas, False, _show_points),
    BarsLayer: (BarsView, False, _show_bars),
    CurveLayer: (CurveView, False, _show_curve),
    MetricsLayer: (MetricsView, False, _show_metrics),
}


def picture(layer: Layer) -> Optional[np.ndarray]:
    """A picture layer in display form as (H, W, 3) uint8 RGB at its data's resolution (what A/B
    compares), or None for a layer that is not a picture."""
    if isinstance(layer, ImageLayer):
        data, colormap = layer.image, layer.colormap
    elif isinstance(layer, (HeatmapLayer, FeatureMapsLayer)):
        data, colormap = layer.maps, layer.colormap
        if data.ndim == 3:
            data, _ = tile(data, fill=0)
    else:
        return None
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[-1] == 3:
        return data if data.dtype == np.uint8 else rgb_to_uint8(np.clip(data, 0, 1))
    if data.dtype == np.uint8:  # palette indices (display form)
        return indexed_table(colormap)[data][..., :3]
    return None
