"""Accumulation of gradients into ``.grad`` and of Jacobians into ``.jac``."""

from __future__ import annotations

from torch import Tensor

from ._jacobian import Jacobian

JAC_FIELD = "jac"


def get_jac(tensor: Tensor) -> Tensor | None:
    """The ``.jac`` field of ``tensor``, or ``None`` if it is not populated."""
    value = getattr(tensor, JAC_FIELD, None)
    return value if isinstance(value, Tensor) else None


def accumulate_grad(tensor: Tensor, value: Tensor) -> None:
    """Add ``value`` (any shape with ``tensor.numel()`` elements) to ``tensor.grad``, like autograd.

    The gradient keeps the dtype of ``tensor``. ``value`` must be a tensor that nobody else holds,
    as it becomes the ``.grad`` when there was none.
    """
    value = value.reshape(tensor.shape)
    if value.dtype != tensor.dtype:
        value = value.to(tensor.dtype)
    grad = tensor.grad
    if grad is None:
        tensor.grad = value
    else:
        grad.add_(value)


def store_jacobians(jacobian: Jacobian, name: str) -> None:
    """Accumulate the Jacobian of each input into its ``.jac`` (created if absent).

    Inputs that the outputs do not depend on get zeros, so that every input has a ``.jac`` with
    the same number of rows. An existing ``.jac`` is added to in place, block by block.
    """
    stops = jacobian.stops()
    for i, input in enumerate(jacobian.inputs):
        existing = get_jac(input)
        if existing is None:
            setattr(input, JAC_FIELD, jacobian.full(i))
            continue
        expected = (jacobian.rows, *input.shape)
        if tuple(existing.shape) != expected:
            raise ValueError(
                f"The `.jac` field of `{name}[{i}]` should have shape {expected} to accumulate "
                f"the new Jacobian into it. Found shape {tuple(existing.shape)}. Delete the "
                "`.jac` fields (or call `jac_to_grad`) between two calls with different numbers "
                "of rows."
            )
        for block, start, stop in zip(jacobian.blocks[i], jacobian.starts, stops, strict=True):
            if block is not None:
                existing[start:stop].add_(block)
        jacobian.blocks[i] = []
