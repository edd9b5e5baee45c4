"""Adam written out, for the in-app fits that start on a button press.

Why not ``torch.optim.Adam``: the first optimizer constructed in a process imports
``torch._dynamo`` (``Optimizer``'s methods are wrapped by ``torch._disable_dynamo``, which
imports it on first call), and that stalls the press that starts the job. Measured with torch
2.13.0+cpu on the 2-core development machine, each in a fresh process:

- ``torch.optim.Adam([torch.zeros(3, requires_grad=True)])`` right after ``import torch``:
  0.85, 1.07, 1.04, 1.08, 0.77 s; after importing every operator module (which leaves
  ``torch._dynamo`` unloaded): 1.06, 0.86, 1.00 s; a second construction: 0.1 ms.
- ``import torch._dynamo`` alone: 0.84, 0.83, 0.83 s, after which Adam costs 0.3 ms.

The arithmetic is ``torch.optim.Adam``'s single-tensor step (no weight decay, no amsgrad), op for
op, so a test finds the two equal bit for bit over many steps.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch


class Adam:
    """Adam (Kingma & Ba, 2015) over a list of leaf tensors, with ``torch.optim.Adam``'s calls:
    ``zero_grad()`` then ``step()`` reading each ``.grad``; or ``step(grads)`` with gradients
    from ``torch.autograd.grad``, in the order of ``params``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, grads: Optional[Sequence[Optional[torch.Tensor]]] = None) -> None:
        if grads is not None and len(grads) != len(self.params):
            raise ValueError(f"step got {len(grads)} gradients for {len(self.params)} parameters")
        self.t += 1
        b1, b2 = self.betas
        correction1, correction2 = 1 - b1**self.t, 1 - b2**self.t
        for i, (p, m, v) in enumerate(zip(self.params, self.m, self.v)):
            g = p.grad if grads is None else grads[i]
            if g is None:
                continue
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / correction2**0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / correction1)
