"""Aggregation of a Jacobian, given as row blocks, into the ``.grad`` of its inputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchjd.aggregation import Aggregator, GramianWeightedAggregator, WeightedAggregator, Weighting
from torchjd.aggregation._aggregator_bases import AGGREGATOR_CALLS, _ThroughGramian
from torchjd.aggregation._utils.checks import all_finite, check_weights
from torchjd.aggregation._utils.hooks import has_forward_hooks
from torchjd.aggregation._utils.lean_call import defined_only_by
from torchjd.linalg import PSDMatrix
from torchjd.linalg._matrix import add_gram_

from ._accumulation import accumulate_grad
from ._jacobian import Jacobian
from ._non_finite import nan_where_not, nans


def exact_gramian_weighting(aggregator: Aggregator) -> Weighting[PSDMatrix] | None:
    """The Gramian weighting of ``aggregator`` if ``A(J) = gramian_weighting(J Jᵀ) @ J`` holds
    with nothing else observing ``J`` (no forward hook, no overridden forward), else ``None``.

    Only then may ``A(J)`` be computed from the Gramian, built tensor by tensor, without
    concatenating the Jacobian.
    """
    if not isinstance(aggregator, GramianWeightedAggregator):
        return None
    cls = type(aggregator)
    if not defined_only_by(cls, "forward", (WeightedAggregator, Aggregator, nn.Module)):
        return None
    if not defined_only_by(cls, "__call__", AGGREGATOR_CALLS):  # (those of the lean path too)
        return None
    weighting = aggregator.weighting
    if type(weighting) is not _ThroughGramian or weighting.weighting is not (
        aggregator.gramian_weighting
    ):
        return None
    if has_forward_hooks(aggregator) or has_forward_hooks(weighting):
        return None
    return aggregator.gramian_weighting


def _common_dtype(jacobian: Jacobian) -> torch.dtype:
    dtype = jacobian.inputs[0].dtype
    for input in jacobian.inputs[1:]:
        dtype = torch.promote_types(dtype, input.dtype)
    return dtype


def gramian_of(jacobian: Jacobian) -> Tensor:
    """``G = J Jᵀ``, summed input by input and block by block (``J`` is never concatenated)."""
    m = jacobian.rows
    # At least float32: a half-precision Gramian overflows float16 beyond 65504, and holds three
    # significant digits in bfloat16.
    dtype = torch.promote_types(_common_dtype(jacobian), torch.float32)
    device = jacobian.inputs[0].device
    gramian = torch.zeros((m, m), dtype=dtype, device=device)
    ranges = list(zip(jacobian.starts, jacobian.stops(), strict=True))
    for blocks in jacobian.blocks:
        flats = [
            None if b is None else b.reshape(b.shape[0], -1).to(dtype=dtype, device=device)
            for b in blocks
        ]
        for k, (fk, (ak, bk)) in enumerate(zip(flats, ranges, strict=True)):
            if fk is None:
                continue
            add_gram_(gramian[ak:bk, ak:bk], fk)
            for fl, (al, bl) in zip(flats[k + 1 :], ranges[k + 1 :], strict=True):
                if fl is not None:  # the block above the diagonal; mirrored once, at the end
                    gramian[ak:bk, al:bl].addmm_(fk, fl.T)
    for k, (ak, bk) in enumerate(ranges):
        for al, bl in ranges[k + 1 :]:
            gramian[al:bl, ak:bk] = gramian[ak:bk, al:bl].T
    return gramian


def weights_from_gramian(gramian: Tensor, gramian_weighting: Weighting[PSDMatrix]) -> Tensor:
    """Return ``gramian_weighting(gramian)``, or NaN weights if ``gramian`` is not finite (see
    :mod:`._non_finite`; a NaN or inf in the Jacobian always shows in its Gramian).
    """
    finite = all_finite(gramian)
    if finite is False:
        return nans(gramian.shape[0], gramian)
    if finite is True:
        weights = gramian_weighting(gramian)
        check_weights(weights, gramian_weighting)
        return weights
    # On an accelerator, without reading the flag: any valid Gramian (the identity) stands in.
    identity = torch.eye(gramian.shape[0], dtype=gramian.dtype, device=gramian.device)
    weights = gramian_weighting(torch.where(finite, gramian, identity))
    check_weights(weights, gramian_weighting)
    return nan_where_not(finite, weights)


def apply_weights(jacobian: Jacobian, weights: Tensor) -> None:
    """Accumulate ``weights @ J`` into the ``.grad`` of the inputs, input by input.

    Inputs that the outputs do not depend on keep their ``.grad`` (as with autograd).
    """
    ranges = list(zip(jacobian.starts, jacobian.stops(), strict=True))
    for i, input in enumerate(jacobian.inputs):
        update: Tensor | None = None
        for block, (start, stop) in zip(jacobian.blocks[i], ranges, strict=True):
            if block is None:
                continue
            flat = block.reshape(block.shape[0], -1)
            term = weights[start:stop].to(flat.dtype) @ flat
            update = term if update is None else update + term
        jacobian.blocks[i] = []
        if update is not None:
            accumulate_grad(input, update)


def aggregate_via_gramian(jacobian: Jacobian, gramian_weighting: Weighting[PSDMatrix]) -> Tensor:
    """Accumulate ``gramian_weighting(J Jᵀ) @ J`` into the ``.grad`` of the inputs and return
    the weights, holding nothing more than the blocks of the Jacobian.
    """
    weights = weights_from_gramian(gramian_of(jacobian), gramian_weighting)
    apply_weights(jacobian, weights)
    return weights


def aggregate_concatenated(jacobian: Jacobian, aggregator: Aggregator) -> Tensor | None:
    """Accumulate ``aggregator(J)`` into the ``.grad`` of the inputs, where ``J`` ``[m, n]`` is
    the concatenation of the inputs' Jacobians (flattened, in order).

    Each block is released once copied, so that the Jacobian is held about once. Return the
    weights if ``aggregator`` is a :class:`WeightedAggregator`, else ``None``.
    """
    m = jacobian.rows
    numels = [input.numel() for input in jacobian.inputs]
    used = [jacobian.is_used(i) for i in range(len(numels))]
    matrix = torch.zeros(
        (m, sum(numels)), dtype=_common_dtype(jacobian), device=jacobian.inputs[0].device
    )
    column = 0
    for i, numel in enumerate(numels):
        for block, start, stop in zip(
            jacobian.blocks[i], jacobian.starts, jacobian.stops(), strict=True
        ):
            if block is not None:
                matrix[start:stop, column : column + numel] = block.reshape(stop - start, -1)
        jacobian.blocks[i] = []
        column += numel
    finite = all_finite(matrix)
    if finite is False:
        update = nans(matrix.shape[1], matrix)
        weights = [nans(m, matrix)] if isinstance(aggregator, WeightedAggregator) else []
    else:
        if isinstance(finite, Tensor):  # on an accelerator: zeros stand in, NaN comes out
            matrix.masked_fill_(~finite, 0.0)
        update, weights = _aggregate_capturing_weights(matrix, aggregator)
        if isinstance(finite, Tensor):
            update = nan_where_not(finite, update)
            weights = [nan_where_not(finite, w) for w in weights]
    del matrix
    column = 0
    for i, (input, numel) in enumerate(zip(jacobian.inputs, numels, strict=True)):
        if used[i]:
            # The slice is a view of the aggregator's output, which its hooks may hold: copy it.
            accumulate_grad(input, update[column : column + numel].clone())
        column += numel
    return weights[-1] if weights else None


def _aggregate_capturing_weights(
    matrix: Tensor, aggregator: Aggregator
) -> tuple[Tensor, list[Tensor]]:
    """Return ``aggregator(matrix)`` and, for a weighted aggregator, the weights it used."""
    weights: list[Tensor] = []
    handle = None
    if isinstance(aggregator, WeightedAggregator):
        # Registered last, it sees the weights that the other hooks may have changed.
        def capture(_module: nn.Module, _args: object, output: Tensor) -> None:
            weights.append(output)

        handle = aggregator.weighting.register_forward_hook(capture)
    try:
        update = aggregator(matrix)
    finally:
        if handle is not None:
            handle.remove()
    return update, weights
