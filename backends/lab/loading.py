"""Loading the user's own model: a TorchScript file, a torch.export archive, a Python file with
``build_model()`` plus a state dict, or a timm model by name from the local cache only.

Every failure becomes a :class:`ModelLoadError` that names the file and the reason, so the
window says it in a banner and keeps working. State dicts are read as safetensors or with
``torch.load(weights_only=True)`` and nothing weaker: a pickle that holds Python objects is
refused. Nothing is downloaded: timm runs with ``HF_HUB_OFFLINE=1`` while creating the model.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

KINDS = ("torchscript", "export", "python", "timm")
EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "examples" / "tiny_cnn.py"
EXAMPLE_WEIGHTS = EXAMPLE.parents[1] / "weights" / "tiny_cnn_example.safetensors"


class ModelLoadError(ValueError):
    """A model that could not be loaded or run; the message names the file and the reason."""


@dataclass(frozen=True)
class ModelSource:
    """What the user chose: a file of one kind (plus weights for a Python file), or a timm name."""

    kind: str
    path: str = ""
    weights: str = ""
    name: str = ""  # a timm model name

    @property
    def label(self) -> str:
        return self.name if self.kind == "timm" else Path(self.path).name

    @staticmethod
    def for_file(path: str, weights: str = "") -> ModelSource:
        """The kind a file's suffix says: .py builds, .pt2 is an export archive, else TorchScript."""
        suffix = Path(path).suffix.lower()
        kind = "python" if suffix == ".py" else "export" if suffix == ".pt2" else "torchscript"
        return ModelSource(kind, str(path), str(weights))


@dataclass
class LoadedModel:
    """A model ready to run, with what it declares about its input and classes."""

    module: nn.Module
    source: ModelSource
    input_size: Optional[tuple[int, int]] = None  # (H, W) the model expects, when it says
    channels: int = 3
    normalize: str = "imagenet"  # "imagenet" or "none": what the model was trained with, as far as known
    classes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    type_names: dict[str, str] = field(default_factory=dict)  # module path -> class, where the module lost it
    cache: dict = field(default_factory=dict)  # compiled capture functions, per model

    @property
    def scripted(self) -> bool:
        return isinstance(self.module, torch.jit.ScriptModule)

    def parameter_count(self) -> int:
        return int(sum(p.numel() for p in self.module.parameters()))


def _fail(source: ModelSource, reason: str, exc: Optional[BaseException] = None) -> ModelLoadError:
    detail = f" ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})" if exc and str(exc).strip() else ""
    where = source.name if source.kind == "timm" else source.path
    return ModelLoadError(f"could not load {where}: {reason}{detail}")


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a torch file read with ``weights_only=True``: a
    pickle holding anything but tensors and plain containers is refused, never executed."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"could not load weights {path}: no such file")
    if p.resolve() == EXAMPLE_WEIGHTS.resolve():  # the bundled example's: checked against the manifest's sha256
        from backends.models.weights import load_weights
        return load_weights(p)
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:
            raise ModelLoadError(f"could not load weights {path}: not a readable safetensors file ({exc})") from exc
    try:
        data = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(f"could not load weights {path}: refused, it holds Python objects other than tensors "
                             f"(read with weights_only=True; save a plain state dict or safetensors)") from exc
    except Exception as exc:
        raise ModelLoadError(f"could not load weights {path}: not a torch weights file "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from exc
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelLoadError(f"could not load weights {path}: expected a dict of tensors, got {type(data).__name__}")
    return data


def _run_builder(source: ModelSource) -> tuple[nn.Module, Any]:
    """Executes the user's Python file (they chose to) and calls its ``build_model()``."""
    path = Path(source.path)
    if not path.is_file():
        raise _fail(source, "no such file")
    name = f"opscope_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _fail(source, "not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _fail(source, "running the file raised", exc) from exc
    if not callable(getattr(module, "build_model", None)):
        raise _fail(source, "the file defines no build_model() function")
    try:
        model = module.build_model()
    except Exception as exc:
        raise _fail(source, "build_model() raised", exc) from exc
    if not isinstance(model, nn.Module):
        raise _fail(source, f"build_model() returned a {type(model).__name__}, not a torch.nn.Module")
    return model, module


def _load_python(source: ModelSource) -> LoadedModel:
    model, module = _run_builder(source)
    loaded = LoadedModel(model, source, input_size=_pair_or_none(getattr(module, "INPUT_SIZE", None)),
                         channels=int(getattr(module, "CHANNELS", 3)),
                         normalize=str(getattr(module, "NORMALIZE", "imagenet")),
                         classes=tuple(str(c) for c in getattr(module, "CLASSES", ())))
    if source.weights:
        state = load_state_dict(source.weights)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a size mismatch
            raise ModelLoadError(f"could not load weights {source.weights} into {path_name(source)}: "
                                 f"{str(exc).splitlines()[-1].strip()[:200]}") from exc
        if missing:
            raise ModelLoadError(f"could not load weights {source.weights} into {path_name(source)}: "
                                 f"{len(missing)} tensors missing, e.g. {missing[0]}")
        if unexpected:
            loaded.notes.append(f"{len(unexpected)} tensors of the weights file were not used (e.g. {unexpected[0]})")
    else:
        loaded.notes.append("no weights file: the model has build_model()'s initial (untrained) weights")
    return loaded


def path_name(source: ModelSource) -> str:
    return Path(source.path).name


def _pair_or_none(value: Any) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    h, w = (int(v) for v in tuple(value)[-2:])
    return (h, w)


def _load_torchscript(source: ModelSource) -> LoadedModel:
    if not Path(source.path).is_file():
        raise _fail(source, "no such file")
    try:
        module = torch.jit.load(source.path, map_location="cpu")
    except Exception as exc:
        raise _fail(source, "not a TorchScript archive (torch.jit.save)", exc) from exc
    return LoadedModel(module, source)


def _load_export(source: ModelSource) -> LoadedModel:
    if not Path(source.path).is_file():
        raise _fail(source, "no such file")
    try:
        program = torch.export.load(source.path)
    except Exception as exc:
        raise _fail(source, "not a torch.export archive (torch.export.save)", exc) from exc
    try:  # the module tree back, so that hooks on its layers fire
        module = torch.export.unflatten(program)
    except Exception as exc:
        raise _fail(source, "its module tree could not be rebuilt (torch.export.unflatten)", exc) from exc
    size = None
    example = getattr(program, "example_inputs", None)
    if example and example[0] and isinstance(example[0][0], torch.Tensor) and example[0][0].dim() == 4:
        size = tuple(int(s) for s in example[0][0].shape[-2:])
    types = {}
    for node in program.graph.nodes:  # an unflattened module is an InterpreterModule: its class is in the trace
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            types.setdefault(path, str(getattr(kind, "__name__", kind)).rsplit(".", 1)[-1])
    return LoadedModel(module, source, input_size=size, type_names=types)


@contextmanager
def _offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def _load_timm(source: ModelSource) -> LoadedModel:
    if not timm_available():
        raise _fail(source, "timm is not installed")
    import timm
    loaded_note = "pretrained weights from the local cache"
    with _offline():
        try:
            module = timm.create_model(source.name, pretrained=True)
        except Exception as first:  # not cached (offline) or no pretrained weights: random init, said
            try:
                module = timm.create_model(source.name, pretrained=False)
            except Exception as exc:
                raise _fail(source, "timm does not know this model", exc) from exc
            loaded_note = f"random weights: no pretrained weights in the local cache ({type(first).__name__})"
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    loaded = LoadedModel(module, source, input_size=(int(size[0]), int(size[1])),
                         normalize="imagenet" if abs(mean[0] - 0.485) < 1e-3 else "none")
    loaded.notes.append(loaded_note)
    return loaded


_LOADERS = {"torchscript": _load_torchscript, "export": _load_export, "python": _load_python, "timm": _load_timm}


def load_model(source: ModelSource) -> LoadedModel:
    """The model ``source`` names, in eval mode on the CPU; a ModelLoadError saying why not."""
    if source.kind not in _LOADERS:
        raise ModelLoadError(f"unknown model kind {source.kind!r}; one of {', '.join(KINDS)}")
    loaded = _LOADERS[source.kind](source)
    loaded.module.eval()
    return loaded


def example_source() -> ModelSource:
    """The bundled example (a tiny network, our own code) shown before the user opens a model."""
    return ModelSource("python", str(EXAMPLE), str(EXAMPLE_WEIGHTS) if EXAMPLE_WEIGHTS.is_file() else "")

