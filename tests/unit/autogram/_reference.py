"""The reference Gramian: ``J Jᵀ`` with ``J`` built row by row with plain autograd."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from settings import DTYPE


def autograd_jacobian(output: Tensor, params: list[nn.Parameter]) -> Tensor:
    """The ``[M, n]`` Jacobian of ``output.reshape(-1)``, one ``torch.autograd.grad`` per row."""
    rows = []
    for value in output.reshape(-1):
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def autograd_gramian(output: Tensor, params: list[nn.Parameter]) -> Tensor:
    """The generalized Gramian ``[m1..mk, mk..m1]`` of ``output`` from its autograd Jacobian."""
    jacobian = autograd_jacobian(output, params)
    gramian = jacobian @ jacobian.T
    k = output.ndim
    shape = list(output.shape)
    return gramian.reshape(shape + shape).permute([*range(k), *reversed(range(k, 2 * k))])


def trainable(*modules: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of ``modules`` and their submodules, each once."""
    found: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                found.setdefault(id(p), p)
    return list(found.values())


def assert_gramians_close(actual: Tensor, expected: Tensor) -> None:
    """Agreement to 1e-5 (float32) or 1e-10 (float64), relative to the largest entry."""
    assert actual.shape == expected.shape
    assert actual.grad_fn is None
    tolerance = 1e-10 if torch.float64 == DTYPE else 1e-5
    scale = expected.abs().max().clamp(min=torch.finfo(expected.dtype).tiny)
    error = ((actual - expected).abs().max() / scale).item()
    assert error <= tolerance, f"relative error {error:.3e} > {tolerance:.0e}"
    assert expected.abs().max().item() > 0  # A zero reference would prove nothing.
