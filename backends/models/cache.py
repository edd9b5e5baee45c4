"""One cache for loaded models: keyed by the file's path and modification time and the device,
so a retrained file reloads and two operators showing one model share it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, TypeVar, Union

import torch

M = TypeVar("M")

CAPACITY = 8  # models are small (a few MB); eight cover every operator with room for a trained twin

_models: OrderedDict[tuple, object] = OrderedDict()
_lock = threading.Lock()


def cached_model(path: Union[Path, str], loader: Callable[[Path], M],
                 device: Union[torch.device, str, None] = None) -> M:
    """``loader(path)`` once per (path, modification time, loader, device), moved to ``device``.

    A missing file raises FileNotFoundError naming it. The least recently used model goes
    when more than ``CAPACITY`` are held."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise FileNotFoundError(f"no weights file at {path}") from None
    dev = str(torch.device(device)) if device is not None else None
    key = (str(path.resolve()), mtime, getattr(loader, "__qualname__", repr(loader)), dev)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]  # type: ignore[return-value]
    model = loader(path)
    if dev is not None and hasattr(model, "to"):
        model = model.to(dev)
    with _lock:
        _models[key] = model
        while len(_models) > CAPACITY:
            _models.popitem(last=False)
    return model


def clear() -> None:
    """Forget every cached model (tests that rewrite a weights file in place within one tick)."""
    with _lock:
        _models.clear()
