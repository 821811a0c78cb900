from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor

from ._inputs import (
    check_bool,
    check_chunk_size,
    checked_seeds,
    requested_inputs,
    unique,
)
from ._jacobian import compute_jacobian


def jac(
    outputs: Sequence[Tensor] | Tensor,
    inputs: Iterable[Tensor] | Tensor | None = None,
    *,
    jac_outputs: Sequence[Tensor] | Tensor | None = None,
    retain_graph: bool = False,
    parallel_chunk_size: int | None = None,
) -> tuple[Tensor, ...]:
    r"""Return the Jacobian of ``outputs`` with respect to each of ``inputs``.

    The Jacobian with respect to an input has shape ``[m, *input.shape]``, with one row per
    element of ``outputs`` (each flattened row-major, in order). No ``.grad`` or ``.jac`` field
    is touched. An input that the outputs do not depend on gets zeros.

    Args:
        outputs: The tensors to differentiate, of any shapes.
        inputs: The tensors to differentiate with respect to: a tensor, or any iterable of
            tensors (a generator such as ``model.parameters()`` too). A repeated input gets its
            Jacobian repeated. Defaults to the leaves of the graph of ``outputs`` that require
            grad, in the order of :func:`backward`.
        jac_outputs: The Jacobians to pull back instead of the identity, one per output, of
            shape ``[k, *output.shape]`` with the same ``k``: the results then have ``k`` rows
            (the chain rule ``jac_outputs · ∂outputs/∂inputs``).
        retain_graph: Keep the graph after the call, so that it can be differentiated again.
        parallel_chunk_size: The number of rows computed in one batched (``torch.vmap``) call;
            see :func:`backward`.

    Example:
        >>> import torch
        >>> from torchjd.autojac import jac
        >>>
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> h = x**2
        >>> y = torch.stack([h.sum(), torch.tensor([1.0, -1.0]) @ h])
        >>> jac(y, x)
        (tensor([[ 2.,  4.],
                [ 2., -4.]]),)

        The chain rule, from a Jacobian with respect to ``h``:

        >>> h = x**2
        >>> jac(h, x, jac_outputs=torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        (tensor([[ 2.,  4.],
                [ 2., -4.]]),)
    """
    chunk_size = check_chunk_size(parallel_chunk_size)
    retain = check_bool(retain_graph, "retain_graph")
    output_list, seeds = checked_seeds(outputs, jac_outputs, "outputs", "jac_outputs")
    requested = requested_inputs(inputs, output_list, "outputs")
    distinct = unique(requested)
    if not distinct:
        return ()
    jacobian = compute_jacobian(seeds, distinct, retain, chunk_size)
    by_id = {id(input): jacobian.full(i) for i, input in enumerate(distinct)}
    return tuple(by_id[id(input)] for input in requested)
