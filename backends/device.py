"""Choosing the compute device once: cuda, then mps, then cpu, unless the user names one."""

from __future__ import annotations

from typing import Optional

import torch


class DeviceError(ValueError):
    pass


def pick_device(preference: Optional[str] = None) -> torch.device:
    if preference in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(preference)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        shown = preference if len(preference) <= 30 else preference[:29] + "…"
        raise DeviceError(f"unknown device {shown!r}; use auto, cpu, cuda or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but this torch build sees no CUDA GPU")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps was asked for but MPS is not available here")
    return dev


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return device.type


def is_device_failure(exc: BaseException) -> bool:
    """Errors that mean the accelerator itself failed, so the CPU should take over."""
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(key in text for key in ("cuda", "cudnn", "cublas", "mps", "out of memory", "device-side"))
