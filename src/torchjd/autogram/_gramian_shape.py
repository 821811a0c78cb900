"""The layout of the Gramian: from objective rows to the generalized ``[m1..mk, mk..m1]``."""

from __future__ import annotations

from torch import Tensor


def generalize(gramian: Tensor, shape: tuple[int, ...], batch_dim: int | None) -> Tensor:
    """Reshape the ``[M, M]`` Gramian of the objective rows into ``[m1..mk, mk..m1]``.

    Rows are ordered like ``output.reshape(-1)`` without ``batch_dim``, and with the batch index
    last (after the other dimensions, row-major) with it.
    """
    k = len(shape)
    if batch_dim is None:
        order = list(range(k))
    else:
        dim = batch_dim % k
        order = [d for d in range(k) if d != dim] + [dim]
    ordered = [shape[d] for d in order]
    full = gramian.reshape([*ordered, *ordered])
    position = [order.index(d) for d in range(k)]
    permutation = position + [k + position[d] for d in reversed(range(k))]
    return full.permute(permutation)


def rows_to_output(values: Tensor, shape: tuple[int, ...], batch_dim: int | None) -> Tensor:
    """Place one value per objective row (in the order of the Gramian's rows) like ``output``."""
    if batch_dim is None:
        return values.reshape(shape)
    dim = batch_dim % len(shape)
    rest = shape[:dim] + shape[dim + 1 :]
    return values.reshape(*rest, shape[dim]).movedim(-1, dim)
