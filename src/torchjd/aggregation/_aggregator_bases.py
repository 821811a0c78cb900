"""Base classes of the aggregators: a Jacobian matrix ``[m, n]`` → an update vector ``[n]``."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from torchjd.linalg import Matrix, PSDMatrix
from torchjd.linalg._matrix import compute_gramian

from ._utils.checks import check_matrix
from ._weighting_bases import Weighting


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
        check_matrix(matrix)
        result: Tensor = super().__call__(matrix)
        return result

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
        super().__init__(gramian_weighting << compute_gramian)
        self.gramian_weighting = gramian_weighting
