"""Sessions as JSON files (never pickle): the image (its path and sha256, or the pixels as an
embedded PNG when it came from a paste, a sketch or an edit), the operator, every operator's
edited parameters, the query point, the edit history (explorer/edit_history.py: thumbnails,
operators, parameters), the window layout and the app's version. An edited image is embedded at
its full resolution (8-bit PNG).

Opening a session restores what it can and lists what it could not (an unknown operator, a value
out of range, a missing image file): an older or partly damaged file never fails as a whole."""

from __future__ import annotations

import base64
import hashlib
import json
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from backends.imageio import ImageLoadError, decode_image, finish, load_image
from backends.models.weights import write_atomically
from backends.params import ParamError, validate
from backends.registry import UnknownOperator, spec_of

FORMAT = "opscope-session"


@dataclass
class Restored:
    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = "restored " + (", ".join(self.restored) or "nothing")
        return text + ("; not restored: " + "; ".join(self.skipped) if self.skipped else "")


def session_dict(session, layout: Optional[bytes] = None) -> dict[str, Any]:
    """The session as plain data."""
    from explorer import __version__

    data: dict[str, Any] = {"format": FORMAT, "version": __version__, "operator": session.operator,
                            "params": {op: dict(values) for op, values in session.state.params.items()},
                            "query": list(session.query) if session.query is not None else None}
    image = session.image
    if image is not None:
        source = Path(session.state.image_source)
        entry: dict[str, Any] = {"name": image.name, "source": session.state.image_source}
        if source.is_file() and image.full is None:
            entry.update(path=str(source.resolve()), sha256=hashlib.sha256(source.read_bytes()).hexdigest())
        else:  # pasted, sketched or edited: the pixels themselves
            entry["png_base64"] = base64.b64encode(embedded_png(image.full if image.full is not None else image.pixels)).decode()
        data["image"] = entry
    if session.edit_history is not None and session.edit_history.entries:
        data["edits"] = session.edit_history.to_list()
    if layout is not None:
        data["layout"] = base64.b64encode(layout).decode()
    return data


def save_session(path: Path, session, layout: Optional[bytes] = None) -> None:
    write_atomically(path, (json.dumps(session_dict(session, layout), indent=2) + "\n").encode())


def read_session(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{Path(path).name} is not a session file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{Path(path).name} is not an OpScope session")
    return data


def restore_session(window, data: dict[str, Any], max_side: int) -> Restored:
    """Applies ``data`` to the window's session, piece by piece."""
    session, report = window.session, Restored()
    image = _image(data.get("image"), max_side, report)
    if image is not None:
        window.set_image(*image)
        if session.edit_history is not None and "edits" in data:
            if session.edit_history.load(data["edits"], *image):
                report.restored.append(f"edit history ({len(session.edit_history.entries)} states)")
            else:
                report.skipped.append("edit history (damaged)")
    operator = data.get("operator")
    try:
        spec_of(str(operator))
        session.set_operator(str(operator))
        report.restored.append(f"operator {operator}")
    except UnknownOperator:
        report.skipped.append(f"operator {operator!r} (not in this version)")
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    for op in [op for op in session.state.params if op not in params]:  # the session's state, exactly
        session.load_params(op, {})
    for op, values in params.items():
        _params(session, op, values, report)
    q = data.get("query")
    if isinstance(q, list) and len(q) == 2 and all(isinstance(v, (int, float)) for v in q):
        session.set_query(*q)
        report.restored.append("query point")
    layout = data.get("layout")
    if isinstance(layout, str):
        try:
            window.restoreState(base64.b64decode(layout))
            report.restored.append("layout")
        except (ValueError, TypeError):
            report.skipped.append("layout (damaged)")
    return report


def _params(session, op: str, values: Any, report: Restored) -> None:
    try:
        specs = spec_of(op).params
    except UnknownOperator:
        report.skipped.append(f"parameters of {op!r}")
        return
    good = {}
    for name, value in (values.items() if isinstance(values, dict) else ()):
        try:
            good[name] = validate(specs, {name: value})[name]
        except ParamError as exc:
            report.skipped.append(str(exc))
    session.load_params(op, good)
    report.restored.append(f"{len(good)} parameters of {op}")


def _image(entry: Any, max_side: int, report: Restored) -> Optional[tuple]:
    if not isinstance(entry, dict):
        return None
    try:
        if "png_base64" in entry:
            data = np.frombuffer(base64.b64decode(entry["png_base64"]), np.uint8)
            full = decode_image(data, str(entry.get("name", "image")), 1 << 30)  # an edit's pixels, whole
            image = finish(full.pixels, full.name, max_side)
            if image.size != full.size:
                image = replace(image, notice=None, full=full.pixels)
            report.restored.append("image (embedded)")
            return image, str(entry.get("source", "session"))
        path = Path(str(entry.get("path", "")))
        if not path.is_file():
            report.skipped.append(f"image {path.name or '?'} (file missing)")
            return None
        if entry.get("sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            report.skipped.append(f"image {path.name} (the file has changed since)")
            return None
        image = load_image(path, max_side)
        report.restored.append(f"image {path.name}")
        return image, str(path)
    except (ImageLoadError, ValueError, TypeError) as exc:
        report.skipped.append(f"image ({exc})")
        return None


_encoded: dict[int, tuple[weakref.ref, bytes]] = {}  # id -> (the pixels, their PNG): autosave encodes once
ENCODED_KEEP = 4


def embedded_png(pixels: np.ndarray) -> bytes:
    """The pixels as PNG, encoded once per array (an applied edit primes it on the worker)."""
    hit = _encoded.get(id(pixels))
    if hit is not None and hit[0]() is pixels:
        return hit[1]
    data = _png(pixels)
    for key in list(_encoded)[:-ENCODED_KEEP + 1]:
        _encoded.pop(key, None)
    _encoded[id(pixels)] = (weakref.ref(pixels), data)
    return data


def _png(pixels: np.ndarray) -> bytes:
    import cv2

    rgb = np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError("could not encode the image")
    return buf.tobytes()
