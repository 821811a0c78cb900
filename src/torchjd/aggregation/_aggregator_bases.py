"""Base classes of the aggregators: a Jacobian matrix ``[m, n]`` → an update vector ``[n]``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from torchjd.linalg import Matrix, PSDMatrix
from torchjd.linalg._matrix import compute_gramian

from ._utils.checks import (
    _all_finite_on_host,
    check_derived_from_matrix,
    check_gramian_of,
    check_matrix,
    check_weights,
    values_checked_later,
)
from ._utils.hooks import calls_forward_directly, is_observed
from ._utils.lean_call import defined_only_by
from ._utils.non_differentiable import NonDifferentiable
from ._weighting_bases import Weighting, _GramianWeighting, at_least_float32


class Aggregator(nn.Module, ABC):
    """Turns a Jacobian matrix ``J`` of shape ``[m, n]`` (one row per objective) into one update
    vector of shape ``[n]``.

    Calling an aggregator validates the input once, here, for every subclass: it must be a
    finite floating-point matrix with at least one row and one column. Subclasses implement
    :meth:`forward` only.
    """

    differentiable = True

    def __init__(self) -> None:
        super().__init__()

    @abstractmethod
    def forward(self, matrix: Matrix, /) -> Tensor:
        """Aggregate the validated ``matrix`` ``[m, n]`` into a vector ``[n]``."""

    def __call__(self, matrix: Tensor, /) -> Tensor:
        """Validate ``matrix`` and aggregate it (running the module's hooks)."""
        if not self._result_proves_finite_input():
            check_matrix(matrix)
            with values_checked_later():  # its weighting need not check the matrix again
                result: Tensor = super().__call__(matrix)
            return result
        # Reading a large matrix only to check its values costs as much as a cheap aggregation:
        # the result is checked instead (see `check_derived_from_matrix`).
        tensor = check_matrix(matrix, check_values=False)
        with values_checked_later():
            result = super().__call__(tensor)
        self._check_result(result, tensor)
        return result

    def _check_result(self, result: Tensor, matrix: Tensor) -> None:
        check_derived_from_matrix(result, matrix, "The aggregation")

    def _result_proves_finite_input(self) -> bool:
        """Whether a NaN or inf in the input always shows in the output (or in a checked
        Gramian). Only then may the full check of the input be skipped.
        """
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __str__(self) -> str:
        return type(self).__name__


class WeightedAggregator(Aggregator):
    """An aggregator that combines the rows of ``J`` with weights: ``A(J) = weighting(J) @ J``.

    Args:
        weighting: The weighting computing the ``[m]`` weights from ``J``.
    """

    def __init__(self, weighting: Weighting[Matrix]) -> None:
        super().__init__()
        self.weighting = weighting

    def forward(self, matrix: Matrix, /) -> Tensor:
        weights = self.weighting(matrix)
        if weights.dtype != matrix.dtype:  # weights of a half-precision matrix, in float32
            weights = weights.to(matrix.dtype)
        return weights @ matrix

    def _result_proves_finite_input(self) -> bool:
        # Finite weights times a non-finite entry give a non-finite result; weightings that read
        # the values of the matrix must check them themselves.
        return not self.weighting.reads_values


class _ShapeWeightedAggregator(WeightedAggregator):
    """A weighted aggregator whose weights depend only on the number of rows (Mean, Sum).

    When no hook observes the weighting, its call is skipped and the weights of the last shape
    are reused: a cold call of each tensor operation or module costs tens of microseconds, as
    much as the whole aggregation of a small matrix. The result is the same.
    """

    def __init__(self, weighting: Weighting[Matrix]) -> None:
        super().__init__(weighting)
        self._weights: Tensor | None = None

    def __call__(self, matrix: Tensor, /) -> Tensor:
        # The common call (a CPU matrix of the last shape and dtype, no hook) touches as
        # little code as possible: right after a garbage collection (as in a training loop), the
        # generic path's checks and module machinery cost ~110 µs on top of a ~110 µs product of
        # a [2, 1000] matrix. Anything else, an error included, goes through the generic path.
        weights = self._weights
        if (
            weights is not None
            and isinstance(matrix, Tensor)
            and matrix.ndim == 2
            and matrix.shape[0] == weights.shape[0]
            and matrix.shape[1] != 0
            and matrix.dtype == weights.dtype  # floating point, as the cached weights
            and matrix.is_cpu
            and weights.is_cpu
            and calls_forward_directly(self)
            and calls_forward_directly(self._modules["weighting"])  # type: ignore[arg-type]
        ):
            result = weights @ matrix
            if _all_finite_on_host(result):  # proves `matrix` finite, as in the generic path
                return result
        return super().__call__(matrix)

    def forward(self, matrix: Matrix, /) -> Tensor:
        if is_observed(self.weighting):
            return super().forward(matrix)
        weights = self._weights
        if (
            weights is None
            or weights.shape[0] != matrix.shape[0]
            or weights.dtype != matrix.dtype
            or weights.device != matrix.device
        ):
            # Computed without autograd: the weights depend on no tensor.
            weights = self.weighting.forward(matrix).detach()
            self._weights = weights
        return weights @ matrix


class GramianWeightedAggregator(WeightedAggregator):
    """An aggregator whose weights depend on ``J`` only through its Gramian ``G = J Jᵀ``:
    ``A(J) = gramian_weighting(J Jᵀ) @ J``.

    Such aggregators can be used with the Gramian alone, which is what makes Gramian-based
    Jacobian descent possible.

    Args:
        gramian_weighting: The weighting computing the ``[m]`` weights from ``G`` ``[m, m]``.
    """

    def __init__(self, gramian_weighting: Weighting[PSDMatrix]) -> None:
        super().__init__(_ThroughGramian(gramian_weighting))
        self.gramian_weighting = gramian_weighting

    def __call__(self, matrix: Tensor, /) -> Tensor:
        through = self._modules["weighting"]
        weighting = through._modules["weighting"] if type(through) is _ThroughGramian else None
        if (
            isinstance(weighting, _GramianWeighting)
            and isinstance(matrix, Tensor)
            and matrix.ndim == 2
            and matrix.shape[0] != 0
            and matrix.shape[1] != 0
            and matrix.dtype in _LEAN_DTYPES
            and matrix.is_cpu
            and _has_the_generic_steps(type(self), type(weighting))
            and calls_forward_directly(self)
            and calls_forward_directly(through)  # type: ignore[arg-type]
            and calls_forward_directly(weighting)
        ):
            # What the generic path computes, without its frames (see `_utils/lean_call.py`).
            gramian = compute_gramian(matrix)
            check_gramian_of(matrix, gramian)
            with values_checked_later():  # (as the generic path: nested weightings skip it)
                if isinstance(weighting, NonDifferentiable):
                    with torch.no_grad():
                        weights = weighting.forward(gramian)
                else:
                    weights = weighting.forward(gramian)
            check_weights(weights, weighting)
            if weights.dtype != matrix.dtype:  # (as `WeightedAggregator.forward`)
                weights = weights.to(matrix.dtype)
            return weights @ matrix
        return super().__call__(matrix)

    def _result_proves_finite_input(self) -> bool:
        # The Gramian of a matrix with a NaN or inf entry is not finite, and it is checked.
        return True

    def _check_result(self, result: Tensor, matrix: Tensor) -> None:
        # Nothing left to check: the Gramian proved the matrix finite, and the weights were
        # checked (both are small), so only an overflow of the combination could remain.
        pass


# Half-precision matrices take the generic path (their Gramian is computed in float32).
_LEAN_DTYPES = (torch.float32, torch.float64)


def _has_the_generic_steps(
    aggregator: type[GramianWeightedAggregator], weighting: type[_GramianWeighting]
) -> bool:
    """Whether the aggregator and weighting classes run the base classes' steps only (no subclass
    redefines the call, the forward, the checks), which the lean path inlines.
    """
    known = _GENERIC_STEPS.get((aggregator, weighting))
    if known is None:
        known = (
            defined_only_by(aggregator, "__call__", AGGREGATOR_CALLS)
            and defined_only_by(weighting, "__call__", _WEIGHTING_CALLS)
            and aggregator.forward is WeightedAggregator.forward
            and aggregator._check_result is GramianWeightedAggregator._check_result
            # (The check of the Gramian's shape, which the Gramian of a checked matrix passes.)
            and weighting._check_input is _GramianWeighting._check_input
        )
        _GENERIC_STEPS[aggregator, weighting] = known
    return known


# Every `__call__` along the MRO runs `super().__call__`: all of them must be known (also to
# autojac, which computes `A(J)` from the Gramian only for such aggregators).
AGGREGATOR_CALLS = (NonDifferentiable, GramianWeightedAggregator, Aggregator, nn.Module)
_WEIGHTING_CALLS = (NonDifferentiable, _GramianWeighting, Weighting, nn.Module)
_GENERIC_STEPS: dict[tuple[type, type], bool] = {}


class _ThroughGramian(Weighting[Matrix]):
    """The weighting ``J ↦ gramian_weighting(J Jᵀ)`` of a :class:`GramianWeightedAggregator`."""

    _checks_what_it_passes_on = True  # the Gramian, in `forward`

    def __init__(self, gramian_weighting: Weighting[PSDMatrix]) -> None:
        super().__init__()
        self.weighting = gramian_weighting

    def forward(self, stat: Matrix, /) -> Tensor:
        gramian = compute_gramian(at_least_float32(stat))  # (weighted in float32 too)
        check_gramian_of(stat, gramian)  # names the matrix, if it is the cause
        weights = self.weighting(gramian)
        check_weights(weights, self.weighting)
        return weights
