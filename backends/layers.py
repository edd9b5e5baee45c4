"""Result layers: what an operator returns, as plain numpy arrays and small dataclasses.

The app maps each layer kind to a view and each named layer to a dock panel, so an operator
never writes GUI code. Arrays are numpy (the worker converts any torch tensors it finds).
Coordinates are image pixels of the *input* frame, x to the right and y down. Points, vectors,
grids and outlines use pixel-index coordinates (pixel i's centre is at i); extents, boxes and
focus regions use edge coordinates (pixel i spans [i, i + 1]). ``extent`` places an array of
another size (a strided output) on that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Union, get_args

import numpy as np

if TYPE_CHECKING:
    import torch

Extent = tuple[float, float, float, float]  # x, y, width, height in input pixels

# What an operator may put in an array field: a tensor on any device, or numpy. The worker
# turns every tensor into numpy (:func:`materialize`) before a layer leaves the compute thread.
Array = Union[np.ndarray, "torch.Tensor"]


class InputImage:
    """A background that is the operator's input image: the view uses the pixels it already has,
    so the image is neither copied back from the worker nor re-uploaded on every frame."""

    _instance: ClassVar[Optional[InputImage]] = None

    def __new__(cls) -> InputImage:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INPUT"

    def __reduce__(self) -> tuple:
        return (InputImage, ())


INPUT = InputImage()
Background = Union[np.ndarray, "torch.Tensor", InputImage, None]


@dataclass(frozen=True)
class ImageLayer:
    """An RGB image (H, W, 3) in [0, 1], a scalar map (H, W) drawn through ``colormap``, or, with
    ``categories``, a map of integer indices (H, W) drawn in ``palette`` (K, 3) with a legend.

    A picture that is a uniform grid of tiles (a traversal, a sample grid) names its rows and
    columns with ``row_labels`` / ``column_labels`` and the two axes with ``axis_titles`` (x, y);
    they are drawn outside the picture. ``boxes`` (x, y, w, h) mark regions (a clicked token)."""

    name: str
    image: Array
    levels: Optional[tuple[float, float]] = None
    colormap: str = "viridis"
    extent: Optional[Extent] = None
    caption: str = ""
    categories: tuple[str, ...] = ()
    palette: Optional[Array] = None
    row_labels: tuple[str, ...] = ()
    column_labels: tuple[str, ...] = ()
    axis_titles: tuple[str, str] = ("", "")
    boxes: tuple[Extent, ...] = ()
    kind: ClassVar[str] = "image"


@dataclass(frozen=True)
class FeatureMapsLayer:
    """Channels (C, H, W) laid out as a mosaic, one shared colour scale."""

    name: str
    maps: Array
    labels: tuple[str, ...] = ()
    levels: Optional[tuple[float, float]] = None
    colormap: str = "viridis"
    caption: str = ""
    kind: ClassVar[str] = "feature_maps"


@dataclass(frozen=True)
class VectorFieldLayer:
    """Arrows from ``origins`` (N, 2) by ``vectors`` (N, 2), over an optional background."""

    name: str
    origins: Array
    vectors: Array
    background: Background = None
    scale: float = 1.0
    caption: str = ""
    colormap: str = "viridis"  # arrows coloured by length, with a colour bar from 0 to the longest
    kind: ClassVar[str] = "vector_field"


@dataclass(frozen=True)
class SamplingGridLayer:
    """Where each output pixel samples the input: ``grid`` (Gh, Gw, 2) of x, y, drawn as a mesh."""

    name: str
    grid: Array
    background: Background = None
    outline: Optional[Array] = None  # (K, 2) closed polygon, e.g. the source quadrilateral
    focus: Optional[Extent] = None
    caption: str = ""
    kind: ClassVar[str] = "sampling_grid"


@dataclass(frozen=True)
class PointSet:
    """Points (N, 2) with a colour; ``join_to`` draws a segment from each point to one anchor."""

    points: Array
    color: tuple[int, int, int] = (255, 80, 80)
    size: float = 7.0
    label: str = ""
    join_to: Optional[tuple[float, float]] = None
    values: Optional[Array] = None  # per-point weights, shown as brightness


@dataclass(frozen=True)
class PointsLayer:
    """Sets of points over a background, with optional boxes (x, y, w, h)."""

    name: str
    sets: tuple[PointSet, ...]
    background: Background = None
    boxes: tuple[Extent, ...] = ()
    focus: Optional[Extent] = None  # the region the view zooms to, e.g. the receptive field
    caption: str = ""
    kind: ClassVar[str] = "points"


@dataclass(frozen=True)
class HeatmapLayer:
    """One map (H, W) or several (N, H, W), blended over ``background`` when given."""

    name: str
    maps: Array
    labels: tuple[str, ...] = ()
    background: Background = None
    levels: Optional[tuple[float, float]] = None
    colormap: str = "inferno"
    opacity: float = 0.6
    extent: Optional[Extent] = None
    focus: Optional[Extent] = None
    boxes: tuple[Extent, ...] = ()  # e.g. a marked region, drawn over a single map
    caption: str = ""
    kind: ClassVar[str] = "heatmap"


@dataclass(frozen=True)
class BarsLayer:
    """One bar per label; ``series`` maps a series name to its values, drawn side by side."""

    name: str
    labels: tuple[str, ...]
    series: dict[str, Array]
    y_range: Optional[tuple[float, float]] = None
    caption: str = ""
    value_label: str = ""  # what the bars measure, on the value axis
    horizontal: Optional[bool] = None  # None: horizontal when the labels are long or many
    kind: ClassVar[str] = "bars"


@dataclass(frozen=True)
class CurveLayer:
    """Named curves ``series[name] = (x, y)``, e.g. a loss over steps."""

    name: str
    series: dict[str, tuple[Array, Array]]
    x_label: str = ""
    y_label: str = ""
    log_y: bool = False
    caption: str = ""
    right: tuple[str, ...] = ()  # series drawn against a second axis on the right (another unit)
    right_label: str = ""
    log_x: bool = False
    kind: ClassVar[str] = "curve"


@dataclass(frozen=True)
class MetricsLayer:
    """Name to value rows: parameter counts, multiply-adds, timings."""

    name: str
    values: dict[str, Union[str, int, float]]
    caption: str = ""
    kind: ClassVar[str] = "metrics"


Layer = Union[
    ImageLayer,
    FeatureMapsLayer,
    VectorFieldLayer,
    SamplingGridLayer,
    PointsLayer,
    HeatmapLayer,
    BarsLayer,
    CurveLayer,
    MetricsLayer,
]

LAYER_TYPES: tuple[type, ...] = get_args(Layer)
LAYER_KINDS = tuple(t.kind for t in LAYER_TYPES)  # the names, for exports and documentation


@dataclass(frozen=True)
class Result:
    """What one operator run returns: its layers in display order, plus free-form notes.

    An operator whose full-matrix panels cost more than a frame returns the layers a drag must
    update with ``settle``: a call, made on the worker once no newer request has come for a
    moment, that returns the complete result. ``pending`` names the layers it will bring, so
    their panels stay (marked as updating) instead of closing. :func:`complete` runs it at once.
    """

    layers: tuple[Layer, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    settle: Optional[Callable[[], Result]] = field(default=None, compare=False, repr=False)
    pending: tuple[str, ...] = ()

    def layer(self, name: str) -> Layer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lay.name for lay in self.layers)


def to_numpy(value: Any, cache: Optional[dict] = None) -> Any:
    """Torch tensors (and containers of them) to float32/int numpy; other values unchanged.

    ``cache`` maps id(tensor) to (tensor, array): a tensor an operator kept from the last run
    (a memoized stage) converts to the very same array, which the views then skip redrawing.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        if cache is not None and id(value) in cache and cache[id(value)][0] is value:
            return cache[id(value)][1]
        arr = value.detach().cpu().numpy()
        arr = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
        if cache is not None:
            cache[id(value)] = (value, arr)
        return arr
    if isinstance(value, np.ndarray) and value.dtype == np.float64:
        return value.astype(np.float32)
    if isinstance(value, dict):
        return {k: to_numpy(v, cache) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_numpy(v, cache) for v in value)
    if isinstance(value, PointSet):
        return _materialize(value, cache)
    return value


def _materialize(obj: Any, cache: Optional[dict]) -> Any:
    changes = {f.name: to_numpy(getattr(obj, f.name), cache) for f in fields(obj)}
    return replace(obj, **changes)


def materialize(result: Result, cache: Optional[dict] = None) -> Result:
    """Every tensor in the result as numpy, so the UI thread never touches torch. The settle
    call stays with the worker; ``pending`` goes along."""
    return Result(layers=tuple(_materialize(lay, cache) for lay in result.layers), notes=result.notes,
                  pending=result.pending)


def complete(result: Result) -> Result:
    """The result with every settling layer computed: what a still frame, an export or a test sees."""
    while result.settle is not None:
        result = result.settle()
    return result
