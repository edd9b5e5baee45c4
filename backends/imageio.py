"""Image files to one normal form: float32 RGB (H, W, 3) in [0, 1].

Grey, RGBA (composited on white), 16-bit, float, palette and EXIF-rotated images are all
normalized; anything unreadable raises ImageLoadError with a sentence a person can act on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

MAX_PIXELS = 100_000_000  # 100 MP: 1.2 GB as float RGB; a larger file is refused before decoding
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))  # the decoder's own guard, read on first use

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from backends.image_header import declared_size, exif_orientation  # noqa: E402

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a bad file is one line of ours, not OpenCV's warnings

DEFAULT_MAX_SIDE = 2048
READABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_FILE_BYTES = 512 * 1024 * 1024


class ImageLoadError(ValueError):
    """A file that is not a readable image; the message names the file and the reason."""


@dataclass(frozen=True)
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) float32 in [0, 1]
    name: str
    original_size: tuple[int, int]  # (width, height) before any downscale
    notice: Optional[str] = None  # e.g. "downscaled from 6000x4000 to 2048x1365"
    # The pixels at original_size where no file holds them (an applied edit: explorer/edits.py).
    full: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return (self.pixels.shape[1], self.pixels.shape[0])


def load_image(path: Union[str, Path], max_side: int = DEFAULT_MAX_SIDE) -> LoadedImage:
    path = Path(path)
    name = path.name if len(path.name) <= 80 else path.name[:60] + "…" + path.name[-12:]
    try:
        if not path.exists():
            raise ImageLoadError(f"{name}: no such file")
        if path.is_dir():
            raise ImageLoadError(f"{name}: is a folder, not an image")
        size = os.path.getsize(path)
    except OSError as exc:  # a name too long for the file system, a loop of links, no permission
        raise ImageLoadError(f"{name}: cannot be opened ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageLoadError(f"{name}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise ImageLoadError(f"{name}: {size / 2**20:.0f} MiB is larger than the {MAX_FILE_BYTES >> 20} MiB limit")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    return decode_image(data, name, max_side)


def decode_image(data: np.ndarray, name: str, max_side: int = DEFAULT_MAX_SIDE) -> LoadedImage:
    """Bytes of an encoded image to a LoadedImage. The declared size is checked first; an image
    more than twice the live view's size is decoded reduced (1/2, 1/4 or 1/8), which JPEG does
    natively, so it never exists at full size as floats."""
    size = declared_size(data[:65536].tobytes())
    if size is not None:
        w, h = size
        if w * h > MAX_PIXELS:
            raise ImageLoadError(f"{name}: declares {w}x{h} pixels ({w * h / 1e6:.0f} MP); the limit is "
                                 f"{MAX_PIXELS / 1e6:.0f} MP, so it was not decoded")
        factor = _reduction(max(w, h), max_side)
        if factor > 1:
            reduced = _imdecode(data, REDUCED[factor])
            if reduced is not None and reduced.size:
                return finish(_to_rgb_float(reduced), name, max_side, original=(w, h))
    raw = _imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise ImageLoadError(f"{name}: not an image this app can read (PNG, JPEG, BMP, TIFF, WebP), or the file is damaged")
    if raw.ndim == 3 and raw.shape[2] == 4:
        # IMREAD_UNCHANGED keeps alpha but ignores the EXIF orientation: apply it here.
        pixels = _composite_on_white(_apply_orientation(raw, exif_orientation(data[:65536].tobytes())))
    else:
        # ANYCOLOR|ANYDEPTH keeps 16-bit and grey and applies the EXIF orientation.
        oriented = _imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
        pixels = _to_rgb_float(oriented if oriented is not None else raw)
    return finish(pixels, name, max_side)


def normalize_array(array: np.ndarray, name: str = "image", max_side: int = DEFAULT_MAX_SIDE) -> LoadedImage:
    """An in-memory RGB/RGBA/grey array (uint8, uint16 or float) to a LoadedImage."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 4:
        bgra = arr[..., [2, 1, 0, 3]]
        return finish(_composite_on_white(bgra), name, max_side)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    return finish(_to_rgb_float(arr), name, max_side)


REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _reduction(long_side: int, max_side: int) -> int:
    """The largest of 1, 2, 4, 8 that still leaves at least ``max_side`` pixels on the long side."""
    factor = 1
    while factor < 8 and long_side // (factor * 2) >= max_side:
        factor *= 2
    return factor


def finish(pixels: np.ndarray, name: str, max_side: int, original: Optional[tuple[int, int]] = None) -> LoadedImage:
    h, w = pixels.shape[:2]
    if h == 0 or w == 0:
        raise ImageLoadError(f"{name}: the image has no pixels ({w}x{h})")
    ow, oh = original or (w, h)
    if not np.isfinite(pixels).all():
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    notice = None
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        pixels = cv2.resize(pixels, (nw, nh), interpolation=cv2.INTER_AREA)
        h, w = nh, nw
    if (w, h) != (ow, oh):
        notice = f"{name} is {ow}x{oh}: shown downscaled to {w}x{h} (limit {max_side} px)"
    pixels = np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)
    return LoadedImage(pixels=pixels, name=name, original_size=(ow, oh), notice=notice)


def _imdecode(data: np.ndarray, flags: int) -> Optional[np.ndarray]:
    try:
        return cv2.imdecode(data, flags)
    except cv2.error:
        return None


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """An image (H, W, C) as EXIF ``orientation`` (1 to 8) says to show it."""
    turned = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return image if turned is None else np.ascontiguousarray(turned(image))


def _scale_to_unit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        return (arr.astype(np.float64) - info.min) / (info.max - info.min)
    out = arr.astype(np.float32)
    finite = out[np.isfinite(out)]
    if finite.size and (finite.max() > 1.0 or finite.min() < 0.0):
        lo, hi = float(finite.min()), float(finite.max())
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    return out


def _to_rgb_float(arr: np.ndarray) -> np.ndarray:
    """BGR / grey of any depth to RGB float in [0, 1]."""
    unit = _scale_to_unit(arr)
    if unit.ndim == 2:
        return np.repeat(unit[..., None], 3, axis=2)
    if unit.ndim == 3 and unit.shape[2] == 1:
        return np.repeat(unit, 3, axis=2)
    if unit.ndim == 3 and unit.shape[2] >= 3:
        return unit[..., 2::-1] if unit.shape[2] == 3 else unit[..., [2, 1, 0]]
    raise ImageLoadError(f"unsupported image layout {arr.shape}")


def _composite_on_white(bgra: np.ndarray) -> np.ndarray:
    unit = _scale_to_unit(bgra)
    rgb, alpha = unit[..., [2, 1, 0]], unit[..., 3:4]
    return rgb * alpha + (1.0 - alpha)


def save_png(path: Union[str, Path], rgb: np.ndarray) -> None:
    """Writes float [0, 1] or uint8 RGB as PNG (used by exports and sample generation)."""
    arr = rgb if rgb.dtype == np.uint8 else (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    bgr = arr[..., ::-1] if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise OSError(f"could not encode {path}")
    Path(path).write_bytes(buf.tobytes())
