"""Small models and their objectives, to compare autojac with plain autograd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from settings import DEVICE, DTYPE
from utils.tensors import randn_


@dataclass
class Case:
    """A model: its parameters that require grad, and a function computing fresh objectives."""

    name: str
    params: list[Tensor]
    objectives: Callable[[], list[Tensor]]

    def __str__(self) -> str:
        return self.name


def _module(module: nn.Module) -> nn.Module:
    return module.to(device=DEVICE, dtype=DTYPE)


def mlp() -> Case:
    model = _module(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)))
    x = randn_(6, 5)
    params: list[Tensor] = list(model.parameters())
    return Case("mlp", params, lambda: [model(x).square().sum(dim=1)])


def cnn() -> Case:
    model = _module(
        nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2), nn.Tanh()
        )
    )
    x = randn_(3, 1, 6, 6)
    params: list[Tensor] = list(model.parameters())
    return Case("cnn", params, lambda: [model(x).sum(dim=1)])


def shared_trunk_heads() -> Case:
    trunk = _module(nn.Sequential(nn.Linear(4, 3), nn.Tanh()))
    heads = [_module(nn.Linear(3, 1)) for _ in range(3)]
    x = randn_(5, 4)

    def objectives() -> list[Tensor]:
        features = trunk(x)
        return [head(features).square().mean() for head in heads]

    params: list[Tensor] = [*trunk.parameters(), *(p for h in heads for p in h.parameters())]
    return Case("trunk+heads", params, objectives)


def param_used_twice() -> Case:
    layer = _module(nn.Linear(3, 3))
    x = randn_(4, 3)

    def objectives() -> list[Tensor]:
        y = layer(torch.sin(layer(x)))
        return [y[:, 0].sum(), y[:, 1:].square().sum(), (y * x).sum()]

    params: list[Tensor] = list(layer.parameters())
    return Case("param used twice", params, objectives)


def unused_param() -> Case:
    layer = _module(nn.Linear(3, 2))
    unused = nn.Parameter(randn_(4))
    x = randn_(5, 3)
    return Case("unused param", [*layer.parameters(), unused], lambda: [layer(x).exp().sum(dim=0)])


def frozen_param() -> Case:
    first = nn.Linear(3, 3)
    first.weight.requires_grad_(False)
    model = _module(nn.Sequential(first, nn.ReLU(), nn.Linear(3, 2)))
    x = randn_(4, 3)
    params: list[Tensor] = [p for p in model.parameters() if p.requires_grad]
    return Case("frozen param", params, lambda: [model(x).square().mean(dim=0)])


def non_scalar_losses() -> Case:
    w = randn_(3, 2, requires_grad=True)
    b = randn_(2, requires_grad=True)
    x = randn_(2, 4, 3)
    return Case("non-scalar losses", [w, b], lambda: [(x @ w + b).square(), (w.sum() * b).sin()])


CASES = [
    mlp,
    cnn,
    shared_trunk_heads,
    param_used_twice,
    unused_param,
    frozen_param,
    non_scalar_losses,
]


def reference_jacobians(objectives: list[Tensor], params: list[Tensor]) -> list[Tensor]:
    """The Jacobian with respect to each param, row by row with ``torch.autograd.grad``."""
    rows: list[list[Tensor]] = [[] for _ in params]
    for objective in objectives:
        for element in objective.flatten():
            grads = torch.autograd.grad(element, params, retain_graph=True, allow_unused=True)
            for i, (grad, param) in enumerate(zip(grads, params, strict=True)):
                rows[i].append(torch.zeros_like(param) if grad is None else grad)
    return [torch.stack(r) for r in rows]


def jac_of(tensor: Tensor) -> Tensor:
    """The ``.jac`` field of ``tensor``, which must be populated."""
    value = getattr(tensor, "jac", None)
    assert isinstance(value, Tensor)
    return value


def set_jac(tensor: Tensor, value: Tensor) -> None:
    tensor.__dict__["jac"] = value


def grad_of(tensor: Tensor) -> Tensor:
    """The ``.grad`` of ``tensor``, which must be populated."""
    assert tensor.grad is not None
    return tensor.grad
