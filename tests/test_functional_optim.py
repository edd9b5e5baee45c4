"""The written-out Adam against torch.optim.Adam: the same arithmetic, so equal bit for bit."""

from __future__ import annotations

import pytest
import torch

from backends.functional.optim import Adam


def loss_of(params: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    a, b = params
    return ((a @ b - target) ** 2).sum() + (a**4).sum() * 0.1


def leaves(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_(True),
            torch.randn(4, 2, generator=g, dtype=torch.float64).requires_grad_(True)]


@pytest.mark.parametrize("lr, betas", [(0.05, (0.9, 0.999)), (0.3, (0.5, 0.9))])
def test_equals_torch_optim_adam_over_many_steps(lr, betas):
    target = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, theirs = leaves(0), leaves(0)
    opt, ref = Adam(ours, lr=lr, betas=betas), torch.optim.Adam(theirs, lr=lr, betas=betas)
    for _ in range(60):
        for params, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            loss_of(params, target).backward()
            o.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b), float((a - b).abs().max())


def test_explicit_gradients_equal_grad_fields_and_none_is_skipped():
    target = torch.zeros(3, 2, dtype=torch.float64)
    by_field, by_list = leaves(2), leaves(2)
    a, b = Adam(by_field, lr=0.1), Adam(by_list, lr=0.1)
    for _ in range(5):
        a.zero_grad()
        loss_of(by_field, target).backward()
        a.step()
        b.step(torch.autograd.grad(loss_of(by_list, target), by_list))
    for x, y in zip(by_field, by_list):
        assert torch.equal(x, y)
    frozen = by_list[1].detach().clone()
    b.step([torch.ones_like(by_list[0]), None])
    assert torch.equal(by_list[1], frozen)
    with pytest.raises(ValueError, match="1 gradients for 2 parameters"):
        b.step([None])
