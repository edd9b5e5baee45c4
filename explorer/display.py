"""The display form of every layer, made in one place for every path (frames, settled layers,
job updates), on the compute thread, so the UI thread only hands arrays to Qt.

Display form (the views rely on nothing else):
- every array is numpy (tensors converted by :func:`backends.layers.materialize`);
- an RGB picture (an image layer's image, any layer's background) is row-contiguous (H, W, 3)
  uint8, levels (0, 255);
- a scalar map (a 2-D image layer, heatmaps, feature maps) is uint8 palette indices for its
  levels (:func:`widgets.encoding.to_indexed`; 0 is NaN, drawn transparent), with the levels
  it was encoded for set on the layer.

The encoder keeps the last frame's conversions: an operator stage that returns the very same
array again gets the very same display array back, and the views skip redrawing it.
Qt-free: a remote worker imports it too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np

from backends.layers import FeatureMapsLayer, HeatmapLayer, ImageLayer, Layer, Result, materialize
from widgets.encoding import auto_levels, categorical_palette, categories_to_rgb, rgb_to_uint8, to_indexed

UNIT_LEVELS = (None, (0.0, 1.0), (0, 1))
SHOWN_FIELDS = ("image", "maps", "background")  # a layer's arrays drawn as pictures


class DisplayEncoder:
    """Turns results into display form, reusing conversions of arrays seen in the last call."""

    def __init__(self) -> None:
        self._tensors: dict = {}  # id(tensor) -> (tensor, array), last call only
        self._arrays: dict = {}  # (id(array), levels) -> (array, display array), last call only
        self._shown: dict = {}  # (layer name, field) -> display array, last call only

    def encode(self, result: Result) -> Result:
        """Pictures and maps first, read straight from their tensors (their display arrays are
        new, so a float copy of each would be a wasted pass: 0.5 ms per 512x512 RGB picture);
        then everything left (points, curves, pictures kept as floats) copied to numpy."""
        fresh: dict = {}
        shown = Result(tuple(self._layer(layer, fresh) for layer in result.layers), result.notes, pending=result.pending)
        self._arrays = fresh
        fresh_tensors: dict = {}
        out = materialize(shown, _ReusingCache(self._tensors, fresh_tensors))
        self._tensors = fresh_tensors
        return self._keep_unchanged(out)

    def forget(self) -> None:
        self._tensors, self._arrays, self._shown = {}, {}, {}

    def _keep_unchanged(self, result: Result) -> Result:
        """Each panel's picture equal to the one it showed last frame is handed back as that very
        array, so its view skips the redraw. Operators rebuild unchanged panels (a traversal a
        slider does not touch, a view of a cached tensor): conv family and the VAE repainted three
        to six such panels a frame. Display arrays are this encoder's own, never written after."""
        shown: dict = {}
        layers = []
        for layer in result.layers:
            kept = {}
            for field in SHOWN_FIELDS:
                array = getattr(layer, field, None)
                if not isinstance(array, np.ndarray):
                    continue
                last = self._shown.get((layer.name, field))
                if last is not None and last is not array and _equal(last, array):
                    kept[field] = array = last
                shown[(layer.name, field)] = array
            layers.append(replace(layer, **kept) if kept else layer)
        self._shown = shown
        return replace(result, layers=tuple(layers))

    # -- per layer -----------------------------------------------------------------------------
    def _layer(self, layer: Layer, fresh: dict) -> Layer:
        """``layer`` with its pictures and maps in display form; its other fields as they came."""
        background = getattr(layer, "background", None)
        if _is_array(background) and _is_float(background) and background.ndim == 3:
            layer = replace(layer, background=self._rgb(background, fresh))
        if isinstance(layer, ImageLayer):
            if layer.categories:
                return self._categorical(layer, fresh)
            if layer.image.ndim == 3:
                if not _is_float(layer.image) or layer.levels not in UNIT_LEVELS:
                    return layer  # kept as it is: materialize copies it
                return replace(layer, image=self._rgb(layer.image, fresh), levels=(0.0, 255.0))
            image, levels = self._indexed(layer.image, layer.levels, fresh)
            return replace(layer, image=image, levels=levels)
        if isinstance(layer, (HeatmapLayer, FeatureMapsLayer)):
            maps, levels = self._indexed(layer.maps, layer.levels, fresh)
            return replace(layer, maps=maps, levels=levels)
        return layer

    def _categorical(self, layer: ImageLayer, fresh: dict) -> ImageLayer:
        """Category indices to RGB through the layer's palette (a default one when it has none),
        which stays on the layer for the legend."""
        palette = layer.palette if layer.palette is not None else categorical_palette(len(layer.categories))
        palette = np.asarray(palette, np.float32)
        key = (id(layer.image), ("categories", palette.tobytes()))
        hit = self._arrays.get(key)
        arr = hit[1] if hit is not None and hit[0] is layer.image else categories_to_rgb(_view(layer.image), palette)
        fresh[key] = (layer.image, arr)
        return replace(layer, image=arr, palette=palette, levels=(0.0, 255.0))

    def _rgb(self, src, fresh: dict) -> np.ndarray:
        """[0, 1] floats (an array or a tensor) to uint8 (about 3 ms per 512x512 image the UI
        thread no longer spends)."""
        key = (id(src), None)
        hit = fresh.get(key) or self._arrays.get(key)  # a picture several panels share converts once
        arr = hit[1] if hit is not None and hit[0] is src else rgb_to_uint8(_view(src))
        fresh[key] = (src, arr)
        return arr

    def _indexed(self, src, levels: Optional[tuple], fresh: dict) -> tuple[Any, Any]:
        """Scalars to palette indices: painting is then Qt's palette lookup instead of
        pyqtgraph's rescale, colour table and NaN search (2-5 ms a panel on every frame)."""
        if not _is_array(src) or not _is_float(src):
            return src, levels
        view = _view(src)
        levels = tuple(float(v) for v in levels) if levels is not None else auto_levels(view)
        key = (id(src), levels)
        hit = fresh.get(key) or self._arrays.get(key)
        arr = hit[1] if hit is not None and hit[0] is src else to_indexed(view, levels)
        fresh[key] = (src, arr)
        return arr, levels


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, type and values (NaN equal to NaN); a few rows are compared first, so a
    changed picture costs a sixteenth of a full comparison."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    step = max(1, a.shape[0] // 16) if a.ndim else 1
    nan = a.dtype.kind in "fc"
    return bool(np.array_equal(a[::step], b[::step], equal_nan=nan) and np.array_equal(a, b, equal_nan=nan))


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "detach")


def _is_float(value: Any) -> bool:
    """Whether an array or a tensor holds floating-point values."""
    return value.is_floating_point() if hasattr(value, "detach") else np.asarray(value).dtype.kind == "f"


def _view(value: Any) -> np.ndarray:
    """A tensor's values as a numpy array without a copy where it can (a CPU float32 tensor), for
    a conversion that writes a new array; an array as it is (float64 as float32)."""
    if hasattr(value, "detach"):
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and str(tensor.dtype) != "torch.float32":
            tensor = tensor.float()
        return tensor.numpy()
    return value.astype(np.float32) if value.dtype == np.float64 else value


def encode(result: Result) -> Result:
    """One result in display form, with no reuse: for a single still frame."""
    return DisplayEncoder().encode(result)


class _ReusingCache(dict):
    """Looks up the last call's tensor conversions and records this call's, so memory is bounded."""

    def __init__(self, previous: dict, fresh: dict) -> None:
        super().__init__(previous)
        self._fresh = fresh

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self._fresh[key] = value
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._fresh[key] = value
