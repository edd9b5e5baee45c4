"""The current operator and parameters applied to a folder of images: each result written as a
PNG beside a JSON manifest; an unreadable file or a failing image is reported by name and the
rest are processed. No window and no thread: the same call serves the command line, the window's
File > Batch… (explorer/batch_dialog.py, which runs it on a thread of its own), and a task on
another machine later: ``process_one`` is one image, plain data in and out.

    python main.py --op dilated --set dilation=4 --batch photos/ --out results/
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from backends.imageio import READABLE_SUFFIXES, ImageLoadError, load_image
from backends.layers import FeatureMapsLayer, HeatmapLayer, ImageLayer, Layer, Result, complete, materialize
from backends.models.weights import write_atomically
from backends.params import ParamError
from backends.registry import Operator, operator_class, spec_of, validated_params

MANIFEST = "manifest.json"


@dataclass
class Item:
    file: str
    status: str  # "done" or "failed"
    output: str = ""
    layer: str = ""
    sha256: str = ""  # of the input file
    error: str = ""


@dataclass
class BatchReport:
    operator: str
    params: dict[str, Any]
    device: str
    version: str
    items: list[Item] = field(default_factory=list)
    total: int = 0  # images found in the folder
    cancelled: bool = False  # stopped before every image was processed

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.items if i.status == "failed"]


def images_in(folder: Path) -> list[Path]:
    """The folder's files with an image's suffix, sorted by name (not its subfolders)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES)


def run_batch(folder: Path, out: Path, operator: str, params: Mapping[str, Any], max_side: int,
              device: torch.device, progress: Optional[Callable[[int, int, str], bool]] = None,
              executor=None) -> BatchReport:
    """Every image of ``folder`` through ``operator``. ``progress(done, total, name)`` is called
    before each image (and once at the end, with name "") and may return False to cancel: the
    images done so far stay written, and the manifest says ``"cancelled": true``. ``params`` may
    name only the values that differ from the defaults. ``executor`` (explorer/cluster.py
    RayExecutor) computes the images elsewhere, as plain data: this process reads each file and
    writes each result, the same files as a local run."""
    from explorer import __version__

    params = validated_params(operator, params)  # the defaults filled in; a bad value raises ParamError here
    out.mkdir(parents=True, exist_ok=True)
    report = BatchReport(operator, dict(params), executor.device if executor else str(device), __version__)
    files = images_in(folder)
    report.total = len(files)
    op = operator_class(operator)()
    remote = None
    if executor is not None:
        from explorer.cluster import batch_task, read_task, write_result

        remote = executor.map(batch_task, (read_task(p, operator, params, max_side) for p in files))
    for n, path in enumerate(files):
        if progress is not None and progress(n, len(files), path.name) is False:
            report.cancelled = True
            break
        item = (process_one(operator, path, out, params, max_side, device, op) if remote is None
                else write_result(next(remote), out))
        report.items.append(item)
        _write_manifest(out, report)  # after every image: a killed run keeps what it finished
    if executor is not None:
        executor.cancel()
    _write_manifest(out, report)
    if progress is not None and not report.cancelled:
        progress(len(files), len(files), "")
    return report


def process_one(operator: str, path: Path, out: Path, params: Mapping[str, Any], max_side: int,
                device: torch.device | str = "cpu", op: Optional[Operator] = None) -> Item:
    """One image through ``operator`` (``params`` validated), its primary picture written to ``out`` as PNG; every
    failure is caught and said in the returned item. ``op`` reuses an operator instance (its
    caches and models) across images; without it one is made."""
    item = Item(file=path.name, status="failed")
    try:
        op = op if op is not None else operator_class(operator)()
        item.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        png, layer = compute_png(op, operator, load_image(path, max_side), path.name, params, device)
        target = out / f"{path.stem}.png"
        write_atomically(target, png)
        item.status, item.output, item.layer = "done", target.name, layer
    except BATCH_ERRORS as exc:
        item.error = error_line(exc)
    return item


BATCH_ERRORS = (ImageLoadError, ParamError, OSError, ValueError, RuntimeError)  # one image's, reported by name


def error_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def compute_png(op, operator: str, image, name: str, params: Mapping[str, Any],
                device: torch.device) -> tuple[bytes, str]:
    """One loaded image through ``op``: its primary picture as PNG bytes, and that layer's name."""
    tensor = torch.from_numpy(image.pixels).permute(2, 0, 1)[None].to(device)
    with torch.no_grad():
        result = materialize(complete(op.compute(tensor, params, None, ("batch", name))))
    layer = primary_layer(operator, result)
    return png_bytes(picture_of(layer)), layer.name


def primary_layer(operator: str, result: Result) -> Layer:
    """The layer the window shows in its centre: the spec's primary, else "Output", else the
    first picture."""
    names = result.names
    for name in (spec_of(operator).primary, "Output"):
        if name and name in names:
            return result.layer(name)
    for layer in result.layers:
        if isinstance(layer, (ImageLayer, HeatmapLayer, FeatureMapsLayer)):
            return layer
    raise ParamError(f"{operator} draws no picture to write")


def picture_of(layer: Layer) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a picture layer, as the window colours it."""
    from widgets.colormaps import apply
    from widgets.encoding import auto_levels, categorical_palette, categories_to_rgb, rgb_to_uint8
    from widgets.mosaic import tile

    if isinstance(layer, ImageLayer) and layer.categories:
        palette = layer.palette if layer.palette is not None else categorical_palette(len(layer.categories))
        return categories_to_rgb(layer.image, np.asarray(palette, np.float32))
    data = layer.image if isinstance(layer, ImageLayer) else layer.maps
    data = np.asarray(data, np.float32)
    if data.ndim == 3 and data.shape[-1] == 3 and isinstance(layer, ImageLayer):
        return rgb_to_uint8(np.clip(np.nan_to_num(data), 0.0, 1.0))
    if data.ndim == 3:  # several maps: the window's mosaic
        data, _ = tile(data, fill=np.nan)
    levels = tuple(layer.levels) if layer.levels is not None else auto_levels(data)
    return apply(np.nan_to_num(data, nan=levels[0]), levels, layer.colormap)


def png_bytes(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError("could not encode a PNG")
    return buf.tobytes()


def _write_manifest(out: Path, report: BatchReport) -> None:
    data = asdict(report)
    data["failed"] = [i.file for i in report.failed]
    write_atomically(out / MANIFEST, (json.dumps(data, indent=2, default=str) + "\n").encode())
