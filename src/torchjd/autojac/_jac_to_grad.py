from __future__ import annotations

from collections.abc import Iterable
from typing import overload

from torch import Tensor

from torchjd.aggregation import Aggregator, WeightedAggregator

from ._accumulation import JAC_FIELD, get_jac
from ._aggregate import aggregate_concatenated, aggregate_via_gramian, exact_gramian_weighting
from ._inputs import check_bool, check_can_store, check_not_empty, iterable_to_list, unique
from ._jacobian import Jacobian


@overload
def jac_to_grad(
    tensors: Iterable[Tensor],
    aggregator: WeightedAggregator,
    *,
    retain_jac: bool = False,
    optimize_gramian_computation: bool = False,
) -> Tensor: ...


@overload
def jac_to_grad(
    tensors: Iterable[Tensor],
    aggregator: Aggregator,
    *,
    retain_jac: bool = False,
    optimize_gramian_computation: bool = False,
) -> Tensor | None: ...


def jac_to_grad(
    tensors: Iterable[Tensor],
    aggregator: Aggregator,
    *,
    retain_jac: bool = False,
    optimize_gramian_computation: bool = False,
) -> Tensor | None:
    r"""Aggregate the Jacobians stored in the ``.jac`` fields of ``tensors`` into their ``.grad``.

    The Jacobians (``[m, *tensor.shape]`` each, as left by :func:`backward` or
    :func:`mtl_backward` without aggregator) are flattened and concatenated into ``J`` ``[m,
    n]``, in the order of ``tensors``; ``aggregator(J)`` is split back and **accumulated** into
    the ``.grad`` of each tensor, in its dtype. Unless ``retain_jac``, the ``.jac`` fields are
    deleted first (even if the aggregation then fails). If ``J`` has a NaN or infinite entry,
    the update and the weights are NaN in every entry, as in :func:`backward`.

    Args:
        tensors: The tensors (for example ``model.parameters()``); repeated ones count once.
        aggregator: The aggregator.
        retain_jac: Keep the ``.jac`` fields.
        optimize_gramian_computation: Compute the aggregation from the Gramian ``J Jᵀ``, summed
            tensor by tensor, without ever concatenating ``J`` (about half the peak memory). Only
            for a :class:`~torchjd.aggregation.GramianWeightedAggregator` with no forward hook
            on itself or on its ``weighting``, for which the result is mathematically the same.

    Returns:
        The weights ``[m]`` of the aggregation if ``aggregator`` is a
        :class:`~torchjd.aggregation.WeightedAggregator`, else ``None``.

    Example:
        >>> import torch
        >>> from torchjd.aggregation import UPGrad
        >>> from torchjd.autojac import backward, jac_to_grad
        >>>
        >>> param = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> y1 = torch.tensor([-1.0, 1.0]) @ param
        >>> y2 = (param**2).sum()
        >>> backward([y1, y2])
        >>> jac_to_grad([param], UPGrad())
        tensor([0.5000, 0.5000])
        >>> param.grad
        tensor([0.5000, 2.5000])
    """
    items = unique(iterable_to_list(tensors, "tensors"))
    if not isinstance(aggregator, Aggregator):
        raise TypeError(
            "Parameter `aggregator` should be an Aggregator (from `torchjd.aggregation`). "
            f"Found type {type(aggregator).__name__}."
        )
    retain = check_bool(retain_jac, "retain_jac")
    optimize = check_bool(optimize_gramian_computation, "optimize_gramian_computation")
    check_not_empty(items, "tensors")
    jacobians: list[Tensor] = []
    for i, tensor in enumerate(items):
        value = get_jac(tensor)
        if value is None:
            raise ValueError(
                "Parameter `tensors` should only contain tensors with a populated `.jac` field. "
                f"Found `tensors[{i}]` (shape {tuple(tensor.shape)}) without `.jac`: call "
                "`torchjd.autojac.backward` or `mtl_backward` without aggregator first."
            )
        if value.ndim == 0 or value.shape[1:] != tensor.shape:
            raise ValueError(
                "Parameter `tensors` should only contain tensors whose `.jac` has shape "
                f"[m, *tensor.shape]. Found `tensors[{i}]` of shape {tuple(tensor.shape)} with "
                f"`.jac` of shape {tuple(value.shape)}."
            )
        jacobians.append(value)
    rows = [value.shape[0] for value in jacobians]
    if len(set(rows)) > 1:
        raise ValueError(
            "All Jacobians in `tensors.jac` should have the same number of rows. "
            f"Found numbers of rows {rows}."
        )
    check_can_store(items, "tensors", "grad")
    gramian_weighting = exact_gramian_weighting(aggregator) if optimize else None
    if optimize and gramian_weighting is None:
        raise ValueError(
            "Parameter `aggregator` should be a GramianWeightedAggregator (its weights computed "
            "from the Gramian only) with no forward hook or pre-hook on itself or on its "
            f"`weighting` when `optimize_gramian_computation=True`. Found {aggregator!r}."
        )
    if rows[0] == 0:
        raise ValueError(
            "Parameter `tensors` should have Jacobians with at least one row. Found `.jac` "
            "fields with 0 rows."
        )
    if not retain:
        for tensor in items:
            delattr(tensor, JAC_FIELD)
    jacobian = Jacobian.of_matrices(items, jacobians)
    del jacobians  # the blocks are released one by one as they are used
    if gramian_weighting is not None:
        return aggregate_via_gramian(jacobian, gramian_weighting)
    return aggregate_concatenated(jacobian, aggregator)
