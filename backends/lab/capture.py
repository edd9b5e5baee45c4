"""One run of the user's model on an image, with what each layer made: every module's output
shape (the layer browser), any layer's feature maps, attention weights (also from fused
attention), deformable offsets, the class scores, Grad-CAM on a layer and the layers worth
looking at, proposed so that nobody picks target layers by hand.

The image is resized whole to the model's input (its declared size, else the caller's), so
every map of the model covers the whole picture and maps back by scaling alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from backends.functional.grad_cam import grad_cam
from backends.imaging import luminance, resize
from backends.lab import attention_capture as attn
from backends.lab import deform_capture as deform
from backends.lab.loading import LoadedModel, ModelLoadError
from backends.lab.script_capture import capture_function, type_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_PREFIX_TOKENS = 8  # class and register tokens before the patch grid of a token layer


def model_input(image: torch.Tensor, loaded: LoadedModel, size: int, normalize: str = "model default") -> torch.Tensor:
    """The (1, 3, H, W) image in [0, 1] as the model's input: resized whole to its declared size
    (else ``size`` x ``size``), luma for a one-channel model, ImageNet-normalised when chosen."""
    hw = loaded.input_size or (size, size)
    x = resize(image, hw, antialias=True)
    if loaded.channels == 1:
        x = luminance(x)
    mode = loaded.normalize if normalize == "model default" else normalize
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype)
        if loaded.channels == 1:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x.contiguous()


def first_tensor(value: Any) -> Optional[torch.Tensor]:
    """The first tensor in a module's output (a tuple, a list, a dict), or None."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return next((t for t in (first_tensor(v) for v in items) if t is not None), None)


def class_scores(output: Any) -> torch.Tensor:
    """(1, K) scores from a model's output: logits as they are, a map (1, K, h, w) averaged."""
    t = first_tensor(output)
    if t is None:
        raise ValueError("the model returned no tensor")
    t = t[:1]
    if t.dim() == 4:
        t = t.mean(dim=(2, 3))
    return t.reshape(1, -1)


def as_spatial(t: torch.Tensor) -> torch.Tensor:
    """A layer output as (B, C, h, w): maps as they are; tokens (B, N, C) whose last s^2 are a
    patch grid (after up to MAX_PREFIX_TOKENS class/register tokens) as that grid."""
    if t.dim() == 4:
        return t
    if t.dim() == 3 and (grid := token_grid(t.shape[1])) is not None:
        prefix, side = grid
        return t[:, prefix:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)
    raise ValueError(f"an output of shape {tuple(t.shape)} is not a map or a token grid; choose a convolution "
                     f"or a transformer block")


def token_grid(n: int) -> Optional[tuple[int, int]]:
    """(prefix tokens, grid side) when n tokens are a square patch grid after a few prefix tokens."""
    s = math.isqrt(n)
    return (n - s * s, s) if s > 0 and n - s * s <= MAX_PREFIX_TOKENS else None


@dataclass(frozen=True)
class LayerInfo:
    path: str
    type_name: str
    shape: Optional[tuple[int, ...]]


@dataclass
class Capture:
    """What one forward made; layers in the order they finished."""

    scores: torch.Tensor  # (1, K)
    layers: list[LayerInfo]
    outputs: dict[str, torch.Tensor]
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # path -> (B, H, L, S)
    attention_how: dict[str, str] = field(default_factory=dict)
    deform: dict[str, deform.DeformSample] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def proposals(self) -> dict[str, Any]:
        """The layers worth looking at: Grad-CAM's target, the attention blocks, the deformable layers."""
        return {"grad_cam": propose_cam_layer(self), "attention": list(self.attention), "deformable": list(self.deform)}

    def layer(self, index: int) -> LayerInfo:
        """Layer ``index`` (1-based, the browser's numbering) of those with an output; 0: the proposal."""
        if index <= 0:
            path = propose_cam_layer(self)
            return next(li for li in self.layers if li.path == path)
        listed = [li for li in self.layers if li.shape is not None]
        if index > len(listed):
            raise ValueError(f"layer {index}: the model has {len(listed)} layers with an output")
        return listed[index - 1]


def _is_map(shape: Optional[tuple[int, ...]]) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def _is_tokens(shape: Optional[tuple[int, ...]]) -> bool:
    return shape is not None and len(shape) == 3 and token_grid(shape[1]) is not None and shape[1] > 1


def propose_cam_layer(cap: Capture) -> str:
    """The last convolution with a spatial output; in a transformer, the input of the last
    attention block (its last token output to finish before that block, outside it), where the
    patch tokens still reach the class token; else the last map or token layer."""
    convs = [li.path for li in cap.layers if _is_map(li.shape) and "conv" in li.type_name.lower()]
    if convs:
        return convs[-1]
    if cap.attention:
        last = list(cap.attention)[-1]
        paths = [li.path for li in cap.layers]
        before = paths[: paths.index(last)] if last in paths else paths
        for li in reversed([li for li in cap.layers if li.path in before]):
            if _is_tokens(li.shape) and not li.path.startswith(last + ".") and li.path:
                return li.path
    spatial = [li.path for li in cap.layers if li.path and (_is_map(li.shape) or _is_tokens(li.shape))]
    if not spatial:
        raise ValueError("no layer of this model has a spatial output (a map or a token grid)")
    return spatial[-1]


def _run_error(loaded: LoadedModel, x: torch.Tensor, exc: BaseException) -> ModelLoadError:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return ModelLoadError(f"{loaded.source.label} failed to run on a {tuple(x.shape)} input: "
                          f"{type(exc).__name__}{': ' + text if text else ''}")


def capture(loaded: LoadedModel, x: torch.Tensor) -> Capture:
    """Runs the model once on ``x`` and records every layer's output (detached)."""
    try:
        return _capture_script(loaded, x) if loaded.scripted else _capture_module(loaded, x)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise _run_error(loaded, x, exc) from exc


def _script_function(loaded: LoadedModel, paths: tuple[str, ...]):
    key = ("script", paths)
    if key not in loaded.cache:
        loaded.cache[key] = capture_function(loaded.module, list(paths))
    return loaded.cache[key]


def _capture_script(loaded: LoadedModel, x: torch.Tensor) -> Capture:
    modules = dict(loaded.module.named_modules())
    fn, kept = _script_function(loaded, tuple(p for p in modules if p))
    out, *values = fn(x)
    outputs = {p: v.detach() for p, v in zip(kept, values)}
    layers = [LayerInfo(p, type_name(m), tuple(outputs[p].shape) if p in outputs else None) for p, m in modules.items() if p]
    cap = Capture(class_scores(out).detach(), layers, outputs)
    hidden = [p for p, m in modules.items() if attn.looks_like_attention(m) or type_name(m) == "DeformConv2d"]
    if hidden:
        cap.warnings.append(f"TorchScript hides the inputs of {', '.join(hidden[:3])}: their attention or offsets "
                            "cannot be captured (open the Python file or a torch.export archive instead)")
    return cap


def _capture_module(loaded: LoadedModel, x: torch.Tensor) -> Capture:
    model = loaded.module
    stack: list[str] = []
    finished: list[str] = []
    outputs: dict[str, torch.Tensor] = {}
    samples: dict[str, deform.DeformSample] = {}
    qkv: dict[str, torch.Tensor] = {}
    handles = []
    modules = dict(model.named_modules())

    def pre(path: str, module: nn.Module):
        def hook(mod, args, kwargs):
            stack.append(path)
            if deform.is_deformable(mod) and (s := deform.sample_of(mod, args, kwargs)) is not None:
                samples[path] = s
        return hook

    def post(path: str):
        def hook(mod, args, output):
            if stack and stack[-1] == path:
                stack.pop()
            finished.append(path)
            t = first_tensor(output)
            if t is not None:
                outputs[path] = t.detach()
        return hook

    for path, module in modules.items():
        handles.append(module.register_forward_pre_hook(pre(path, module), with_kwargs=True))
        handles.append(module.register_forward_hook(post(path)))
        if attn.has_qkv(module):
            handles.append(module.qkv.register_forward_hook(
                lambda mod, args, out, p=path: qkv.__setitem__(p, out.detach())))
    recorder = attn.AttentionRecorder(lambda: stack[-1] if stack else "")
    try:
        with torch.enable_grad(), recorder:  # with autograd on, fused encoder kernels give way to the op
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    order = list(dict.fromkeys(finished))
    layers = [LayerInfo(p, loaded.type_names.get(p, type(modules[p]).__name__),
                        tuple(outputs[p].shape) if p in outputs else None) for p in order]
    cap = Capture(class_scores(out).detach(), layers, outputs, deform=samples)
    for path in order:
        module = modules[path]
        if path in recorder.weights:
            cap.attention[path], cap.attention_how[path] = recorder.weights[path], recorder.how[path]
        elif path in qkv:
            cap.attention[path] = attn.weights_from_qkv(module, qkv[path])
            cap.attention_how[path] = "qkv projection (weights from its q and k)"
        elif attn.looks_like_attention(module) and not any(p.startswith(path + ".") for p in recorder.weights):
            cap.warnings.append(attn.impossible(path, module))
    return cap


@dataclass(frozen=True)
class CamResult:
    cam: torch.Tensor  # (h, w), not normalised
    class_index: int
    layer: str


def grad_cam_at(loaded: LoadedModel, x: torch.Tensor, path: str, class_index: Optional[int] = None) -> CamResult:
    """Grad-CAM of class ``class_index`` (None: the top class) on the output of layer ``path``."""
    x = x.detach().clone().requires_grad_(True)  # so every layer's output takes part in autograd
    try:
        with torch.enable_grad():
            if loaded.scripted:
                fn, kept = _script_function(loaded, (path,))
                if not kept:
                    raise ValueError(f"layer {path} has no single output in this TorchScript model")
                out, act = fn(x)
            else:
                held: dict[str, torch.Tensor] = {}
                module = dict(loaded.module.named_modules())[path]
                handle = module.register_forward_hook(lambda m, a, o: held.__setitem__("act", first_tensor(o)))
                try:
                    out = loaded.module(x)
                finally:
                    handle.remove()
                act = held["act"]
            scores = class_scores(out)
            k = int(scores.argmax()) if class_index is None else int(class_index)
            if not 0 <= k < scores.shape[1]:
                raise ValueError(f"class {k} is outside the model's {scores.shape[1]} classes")
            (grad,) = torch.autograd.grad(scores[0, k], act)
    except (ValueError, ModelLoadError):
        raise
    except Exception as exc:
        raise _run_error(loaded, x, exc) from exc
    cam = grad_cam(as_spatial(act.detach())[:1], as_spatial(grad)[:1])[0]
    return CamResult(cam, k, path)
