"""Weights as data: safetensors files plus a JSON manifest beside them.

``save_weights(path, state_dict, manifest_entry)`` writes float tensors as float16 (halving the
size; ``load_weights`` returns float32), records the file's sha256 and size in the entry, and
merges the entry into ``manifest.json`` in the same folder under the file name, with a
read-modify-write under a file lock so two writers never drop each other's entries.
Shipped weights live in ``assets/weights/``; weights a user trains live in ``data_dir()``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save

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
    write_atomically(path, save(tensors, metadata=header))
    entry = dict(manifest_entry or {})
    entry.update(file=path.name, sha256=sha256_of(path), bytes=path.stat().st_size,
                 parameters=int(sum(t.numel() for t in tensors.values() if t.is_floating_point())))
    update_manifest(path.parent / MANIFEST_NAME, path.name, entry)
    return entry


class WeightsError(ValueError):
    """A weights file that is damaged, unlisted or unreadable; the message names the file."""


def verify(path: Path | str) -> Path:
    """``path`` if its sha256 matches its entry in the manifest beside it. Flipped bytes, a torn
    write or a file the manifest does not list are refused before any tensor is read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    entry = read_manifest(path.parent).get(path.name)
    if not isinstance(entry, dict) or not entry.get("sha256"):
        raise WeightsError(f"{path.name} is not listed with a sha256 in {path.parent / MANIFEST_NAME}; "
                           "weights are used only as they were written")
    found = sha256_of(path)
    if found != entry["sha256"]:
        raise WeightsError(f"{path.name} is damaged: its sha256 {found[:12]}… does not match the manifest's "
                           f"{str(entry['sha256'])[:12]}… (retrain it, or restore the file)")
    return path


def read_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a verified safetensors file as it is stored, on the CPU."""
    path = verify(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # the library's own error for a malformed header
        raise WeightsError(f"{path.name} cannot be read as safetensors ({type(exc).__name__})") from None


def load_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor in a verified safetensors file, floats as float32, on the CPU."""
    return {name: t.float() if t.is_floating_point() else t for name, t in read_tensors(path).items()}


def load_metadata(path: Path | str) -> dict[str, Any]:
    """The ``metadata`` given to ``save_weights`` (an empty dict for other files)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("opscope", "{}"))


def read_entry(name: str, folder: Path | str = WEIGHTS_DIR) -> dict[str, Any]:
    """``name``'s manifest entry ({} when absent), a copy of its own. The manifest is parsed once
    per version of the file (a read and a parse cost 0.1 ms, and operators state an entry's
    figures on every frame); every write renames a new file over it, so its inode tells."""
    path = Path(folder) / MANIFEST_NAME
    try:
        stat = path.stat()
    except OSError:
        return {}
    entry = _parsed_manifest(str(path), (stat.st_ino, stat.st_mtime_ns, stat.st_size)).get(name, {})
    return copy.deepcopy(entry) if isinstance(entry, dict) else {}


@functools.lru_cache(maxsize=8)
def _parsed_manifest(path: str, version: tuple) -> dict[str, Any]:
    return read_manifest(Path(path).parent)


def read_manifest(folder: Path | str = WEIGHTS_DIR) -> dict[str, Any]:
    """The manifest of ``folder``; a garbage one (a torn write, an edit gone wrong) is set aside as
    ``manifest.json.damaged`` and read as empty, so its files must be written again to be used."""
    path = Path(folder) / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path} cannot be read ({exc})") from None
    try:
        manifest = json.loads(text) if text.strip() else {}
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
        return manifest
    except ValueError:
        _set_aside(path)
        return {}


def _set_aside(path: Path) -> None:
    try:
        os.replace(path, path.with_name(path.name + ".damaged"))
    except OSError:
        pass  # a read-only folder (the shipped assets): it stays, and is read as empty


def update_manifest(manifest_path: Path | str, name: str, entry: Mapping[str, Any]) -> None:
    """Sets ``manifest[name] = entry``, keeping every other entry (read-modify-write under a lock)."""
    manifest_path = Path(manifest_path)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest_path.with_name(manifest_path.name + ".lock"), "a+") as lock:
        _lock(lock)
        try:
            manifest = read_manifest(manifest_path.parent)
            manifest[name] = dict(entry)
            write_atomically(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        finally:
            _unlock(lock)


def write_atomically(path: Path | str, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file in the same folder, flushed to disk and
    renamed over it: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
