"""Weights as data: safetensors files plus a JSON manifest beside them.

``save_weights(path, state_dict, manifest_entry)`` writes float tensors as float16 (halving the
size; ``load_weights`` returns float32), records the file's sha256 and size in the entry, and
merges the entry into ``manifest.json`` in the same folder under the file name, with a
read-modify-write under a file lock so two writers never drop each other's entries.
Shipped weights live in ``assets/weights/``; weights a user trains live in ``data_dir()``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "weights"
MANIFEST_NAME = "manifest.json"


def data_dir() -> Path:
    """The user's data folder for trained weights: ``$OPSCOPE_DATA_DIR`` or ~/.local/share/OpScope.

    (The Qt side has ``explorer.settings.user_data_dir``; backends never import Qt.)"""
    folder = os.environ.get("OPSCOPE_DATA_DIR")
    path = Path(folder) if folder else Path.home() / ".local" / "share" / "OpScope"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(
    path: Path | str,
    state_dict: Mapping[str, torch.Tensor],
    manifest_entry: Optional[Mapping[str, Any]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    half: bool = True,
) -> dict[str, Any]:
    """Writes ``state_dict`` to ``path`` (float tensors as float16 when ``half``), with
    ``metadata`` (e.g. the model's config) stored JSON-encoded in the file's header, and merges
    ``manifest_entry`` plus sha256 and size into the folder's manifest. Returns the entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in state_dict.items():
        t = t.detach().cpu()
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[name] = t.contiguous()
    header = {"opscope": json.dumps(dict(metadata or {}), sort_keys=True)}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)
    entry = dict(manifest_entry or {})
    entry.update(file=path.name, sha256=sha256_of(path), bytes=path.stat().st_size,
                 parameters=int(sum(t.numel() for t in tensors.values() if t.is_floating_point())))
    update_manifest(path.parent / MANIFEST_NAME, path.name, entry)
    return entry


def load_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor in a safetensors file, floats as float32, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            out[name] = t.float() if t.is_floating_point() else t
    return out


def load_metadata(path: Path | str) -> dict[str, Any]:
    """The ``metadata`` given to ``save_weights`` (an empty dict for other files)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("opscope", "{}"))


def read_manifest(folder: Path | str = WEIGHTS_DIR) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return {}
    text = path.read_text()
    return json.loads(text) if text.strip() else {}


def update_manifest(manifest_path: Path | str, name: str, entry: Mapping[str, Any]) -> None:
    """Sets ``manifest[name] = entry``, keeping every other entry (read-modify-write under a lock)."""
    manifest_path = Path(manifest_path)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest_path, "a+") as f:
        _lock(f)
        try:
            f.seek(0)
            text = f.read()
            manifest = json.loads(text) if text.strip() else {}
            manifest[name] = dict(entry)
            f.seek(0)
            f.truncate()
            f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            f.flush()
        finally:
            _unlock(f)


def _lock(f) -> None:
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    except ImportError:  # Windows: no advisory lock; writers are rare there
        pass


def _unlock(f) -> None:
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except ImportError:
        pass
