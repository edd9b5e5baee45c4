"""Layer outputs of a TorchScript model, which takes no Python hooks.

The forward graph is copied and inlined; every node remembers the module it came from, so a
module's output is the tensor its last node hands to code outside it. Those tensors become
extra outputs of a new function over the same module, which returns them with the model's
own output in one run (differentiable, so Grad-CAM works on it too).
"""

from __future__ import annotations

from typing import Callable

import torch


def _path(node) -> str:
    """'layer1(Sequential).0(BasicBlock).conv1(Conv2d).SELF(Conv2d)' -> 'layer1.0.conv1'."""
    parts = [p.split("(")[0] for p in node.getModuleHierarchy().split(".") if p]
    return ".".join(p for p in parts if p not in ("SELF", "UNKNOWN_INSTANCE"))


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def capture_function(module: torch.jit.ScriptModule, paths: list[str]) -> tuple[Callable, list[str]]:
    """A function ``f(x) -> (model output, *outputs of the found paths)`` and the paths found
    (a module called inside a loop or never called has no single output and is left out)."""
    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    nodes = [(n, _path(n)) for n in graph.nodes()]
    found: dict[str, object] = {}
    for prefix in paths:
        for node, p in nodes:
            if not _inside(p, prefix):
                continue
            for value in node.outputs():
                if value.type().kind() == "TensorType" and any(
                        not _inside(_path(use.user), prefix) for use in value.uses()):
                    found[prefix] = value
    kept = [p for p in paths if p in found]
    ret = graph.return_node()
    original = next(iter(ret.inputs()))
    values = [original] + [found[p] for p in kept]
    tup = graph.create("prim::TupleConstruct", values)
    tup.insertBefore(ret)
    tup.output().setType(torch._C.TupleType([v.type() for v in values]))
    ret.replaceInput(0, tup.output())
    graph.lint()
    fn = torch._C._create_function_from_graph(f"opscope_capture_{id(module)}", graph)
    return (lambda x: fn(module._c, x)), kept


def type_name(module: torch.nn.Module) -> str:
    """A scripted module's original class name (RecursiveScriptModule otherwise)."""
    return getattr(module, "original_name", None) or type(module).__name__
