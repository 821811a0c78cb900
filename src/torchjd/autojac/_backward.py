from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor

from torchjd.aggregation import Aggregator
from torchjd.aggregation._utils.hooks import has_global_forward_hooks

from ._accumulation import accumulate_grad, store_jacobians
from ._aggregate import (
    aggregate_concatenated,
    aggregate_via_gramian,
    exact_gramian_weighting,
    gramian_of,
    weights_from_gramian,
)
from ._inputs import (
    check_bool,
    check_can_store,
    check_chunk_size,
    checked_seeds,
    requested_inputs,
    resolve_aggregator,
    unique,
)
from ._jacobian import Seeds, compute_jacobian, weighted_vjp


def backward(
    tensors: Sequence[Tensor] | Tensor,
    A: Aggregator | None = None,
    inputs: Iterable[Tensor] | None = None,
    retain_graph: bool = False,
    parallel_chunk_size: int | None = None,
    *,
    aggregator: Aggregator | None = None,
    jac_tensors: Sequence[Tensor] | Tensor | None = None,
) -> None:
    r"""Compute the Jacobian of ``tensors`` with respect to ``inputs``; with an aggregator,
    aggregate it into their ``.grad``, else accumulate it into their ``.jac``.

    The Jacobian has one row per element of ``tensors`` (each flattened row-major, in order) and
    one column per element of ``inputs``. This is the Jacobian-descent counterpart of
    ``torch.autograd.backward``:

    - ``backward(tensors, A)`` (the form of TorchJD 0.8) aggregates the Jacobian with ``A`` and
      **accumulates** the result into ``.grad``, like autograd: call ``optimizer.zero_grad()``
      first.
    - ``backward(tensors)`` (the form of TorchJD 0.9+) accumulates the Jacobian of each input,
      of shape ``[m, *input.shape]``, into its ``.jac`` field; :func:`jac_to_grad` then
      aggregates it into ``.grad``.

    With a :class:`~torchjd.aggregation.GramianWeightedAggregator` (UPGrad, MGDA, DualProj...)
    that no hook observes, the aggregation is computed from the Gramian ``J Jᵀ``, summed input by
    input, so the Jacobian is never concatenated. Inputs that ``tensors`` do not depend on keep
    their ``.grad`` (as with autograd) but get a zero ``.jac``.

    A Jacobian with a NaN or infinite entry has no aggregation: the update is then NaN in every
    entry (as is the result of autograd, where non-finite values propagate), without an error and,
    on accelerators, without synchronising. This is what ``torch.amp.GradScaler`` needs: when the
    scaled float16 backward overflows, ``scaler.step`` finds the NaN ``.grad`` and skips the step.

    Args:
        tensors: The tensors to differentiate (for instance, the losses), of any shapes.
        A: The aggregator. ``None`` to store the Jacobians in ``.jac`` instead.
        inputs: The tensors to differentiate with respect to; repeated tensors count once.
            Defaults to the leaves of the graph of ``tensors`` that require grad, in the order
            of a breadth-first walk of the graph from the ``grad_fn`` of each tensor, in order.
        retain_graph: Keep the graph after the call, so that it can be differentiated again.
        parallel_chunk_size: The number of rows computed in one batched (``torch.vmap``) call.
            ``None`` lets the library choose: on accelerators, all rows at once; on the CPU,
            chunks of 16 rows when every tensor of the graph is small (at most 100,000 entries),
            else one row at a time. Batching pays on the CPU only while the operations of a row
            are small: for larger tensors the batched ones no longer fit in cache, and some
            batching rules (convolutions, group norm, max pooling, attention) copy or loop, so
            that one row at a time was measured 1.3 to 5 times faster for a CNN and a transformer,
            and 1.2 to 1.8 times slower for a small CNN and a small MLP. ``1`` uses no vmap at all
            (and the least memory). If vmap fails (an operation of the model without batching
            rule, for example), the rows are computed one by one, with a warning.
        aggregator: Another name for ``A``.
        jac_tensors: The Jacobians to pull back instead of the identity, one per tensor, of shape
            ``[k, *tensor.shape]`` with the same ``k``: the result is ``jac_tensors ·
            ∂tensors/∂inputs``, with ``k`` rows.

    Example:
        >>> import torch
        >>> from torchjd import backward
        >>> from torchjd.aggregation import UPGrad
        >>>
        >>> param = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> y1 = torch.tensor([-1.0, 1.0]) @ param
        >>> y2 = (param**2).sum()
        >>> backward([y1, y2], UPGrad())
        >>> param.grad
        tensor([0.5000, 2.5000])

        Without an aggregator, the Jacobian is stored instead:

        >>> param = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> y1 = torch.tensor([-1.0, 1.0]) @ param
        >>> y2 = (param**2).sum()
        >>> backward([y1, y2])
        >>> param.jac
        tensor([[-1.,  1.],
                [ 2.,  4.]])
    """
    resolved = resolve_aggregator(
        A, aggregator, "To pass `inputs`, use the keyword: `backward(tensors, inputs=...)`."
    )
    chunk_size = check_chunk_size(parallel_chunk_size)
    retain = check_bool(retain_graph, "retain_graph")
    outputs, seeds = checked_seeds(tensors, jac_tensors, "tensors", "jac_tensors")
    input_list = unique(requested_inputs(inputs, outputs, "tensors"))
    check_can_store(input_list, "inputs", "grad" if resolved is not None else "jac")
    if resolved is not None:
        check_aggregable(seeds.rows, input_list, "tensors", "inputs")
    if resolved is None:
        jacobian = compute_jacobian(seeds, input_list, retain, chunk_size)
        store_jacobians(jacobian, "inputs")
    else:
        aggregate(
            seeds,
            input_list,
            resolved,
            retain,
            chunk_size,
        )


def check_aggregable(rows: int, inputs: list[Tensor], outputs_name: str, inputs_name: str) -> None:
    """An aggregator needs a Jacobian with at least one row and one column."""
    if rows == 0:
        raise ValueError(
            f"Parameter `{outputs_name}` should have at least one element to aggregate a "
            f"Jacobian. Found only empty tensors."
        )
    if sum(input.numel() for input in inputs) == 0:
        raise ValueError(
            f"Parameter `{inputs_name}` should contain at least one element to aggregate a "
            f"Jacobian. Found {len(inputs)} tensors with no element in all (with the default "
            "inputs: no leaf of the graph requires grad)."
        )


# From this many rows on, the Gramian path frees the Jacobian before the weighting (whose own
# memory grows with the cube of the number of rows): the update is then one more vector-Jacobian
# product, which costs at most 1/32 more than the rows.
_ROWS_TO_FREE_BEFORE_WEIGHTING = 32


def aggregate(
    seeds: Seeds,
    inputs: list[Tensor],
    aggregator: Aggregator,
    retain_graph: bool,
    parallel_chunk_size: int | None,
) -> None:
    """Compute the Jacobian of the seeded outputs with respect to ``inputs`` and accumulate its
    aggregation into their ``.grad``.

    With a Gramian-based aggregator that nothing else observes, the Gramian is summed input by
    input and block by block: the Jacobian is never concatenated. The update ``weights @ J`` is
    computed input by input or, with many rows, as one more vector-Jacobian product, so that the
    Jacobian is freed before the weighting. Otherwise, the Jacobian is concatenated and given to
    ``aggregator``.
    """
    gramian_weighting = exact_gramian_weighting(aggregator)
    if gramian_weighting is None or has_global_forward_hooks():
        jacobian = compute_jacobian(seeds, inputs, retain_graph, parallel_chunk_size)
        aggregate_concatenated(jacobian, aggregator)
    elif seeds.rows < _ROWS_TO_FREE_BEFORE_WEIGHTING:
        jacobian = compute_jacobian(seeds, inputs, retain_graph, parallel_chunk_size)
        aggregate_via_gramian(jacobian, gramian_weighting)
    else:
        jacobian = compute_jacobian(seeds, inputs, True, parallel_chunk_size)  # graph kept
        gramian = gramian_of(jacobian)
        del jacobian
        weights = weights_from_gramian(gramian, gramian_weighting)
        updates = weighted_vjp(seeds, weights, inputs, retain_graph)  # frees the graph
        for input, update in zip(inputs, updates, strict=True):
            if update is not None:
                accumulate_grad(input, update)
