from __future__ import annotations

import torch
from torch import Tensor

from ._aggregator_bases import GramianWeightedAggregator
from ._utils.checks import check_non_negative_int, check_positive_int
from ._weighting_bases import _GramianWeighting


def _pairwise_distances(gramian: Tensor) -> Tensor:
    """Return the Euclidean distances ``‖g_i − g_j‖`` (not squared) between the rows, from ``G``.

    ``‖g_i − g_j‖² = G_ii + G_jj − 2G_ij`` can come out slightly negative through rounding: it is
    clamped at 0 before the square root.
    """
    diagonal = gramian.diagonal()
    squared = diagonal.unsqueeze(0) + diagonal.unsqueeze(1) - 2.0 * gramian
    return squared.clamp(min=0.0).sqrt()


def _krum_scores(distances: Tensor, n_byzantine: int) -> Tensor:
    """Return, for each row, the sum of its distances to its ``m − n_byzantine − 2`` nearest
    other rows.

    The ``m − n_byzantine − 1`` smallest distances of a row include its distance 0 to itself,
    which is the smallest one and is left out of the sum.
    """
    k = distances.shape[0] - n_byzantine - 1
    smallest = torch.topk(distances, k, dim=1, largest=False).values
    return smallest[:, 1:].sum(dim=1)


class KrumWeighting(_GramianWeighting):
    """Gives the weight ``1/n_selected`` to the ``n_selected`` rows with the smallest Krum scores,
    and ``0`` to the others.

    The score of row ``i`` is the sum of its Euclidean distances (not squared) to its
    ``m − n_byzantine − 2`` nearest other rows. This Byzantine-robust rule requires
    ``m ≥ n_byzantine + 3`` and ``m ≥ n_selected``, which is checked at call time (``ValueError``).
    The weights do not depend on the values of ``G`` beyond the selection, so they carry no
    gradient, while the aggregation ``Jᵀw`` stays differentiable with respect to ``J``.

    Reference: Blanchard et al., *Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent*, NeurIPS 2017 (Krum and Multi-Krum).

    Args:
        n_byzantine: The number ``f ≥ 0`` of rows that may be Byzantine (arbitrary).
        n_selected: The number ``≥ 1`` of rows to select and average (Multi-Krum). Default: ``1``.

    >>> import torch
    >>> J = torch.tensor([[1.0, 1.0], [1.0, 0.0], [30.0, -4.0], [0.0, 2.0]])
    >>> KrumWeighting(n_byzantine=1, n_selected=2)(J @ J.T)
    tensor([0.5000, 0.5000, 0.0000, 0.0000])
    """

    def __init__(self, n_byzantine: int, n_selected: int = 1) -> None:
        super().__init__()
        self.n_byzantine = check_non_negative_int(n_byzantine, "n_byzantine")
        self.n_selected = check_positive_int(n_selected, "n_selected")

    def forward(self, stat: Tensor, /) -> Tensor:
        self._check_number_of_rows(stat.shape[0])
        scores = _krum_scores(_pairwise_distances(stat), self.n_byzantine)
        selected = torch.topk(scores, self.n_selected, largest=False).indices
        weights = torch.zeros_like(scores)
        return weights.index_fill(0, selected, 1.0 / self.n_selected)

    def _check_number_of_rows(self, m: int) -> None:
        if m < self.n_byzantine + 3:
            raise ValueError(
                "Parameter `n_byzantine` should satisfy m >= n_byzantine + 3, where m is the "
                f"number of rows of the input. Found m={m} and n_byzantine={self.n_byzantine}."
            )
        if m < self.n_selected:
            raise ValueError(
                "Parameter `n_selected` should be at most m, the number of rows of the input. "
                f"Found m={m} and n_selected={self.n_selected}."
            )


class Krum(GramianWeightedAggregator):
    """Averages the ``n_selected`` rows with the smallest Krum scores (Multi-Krum).

    The score of a row is the sum of its Euclidean distances to its ``m − n_byzantine − 2``
    nearest other rows (see :class:`KrumWeighting`). Requires ``m ≥ n_byzantine + 3`` and
    ``m ≥ n_selected``.

    Reference: Blanchard et al., *Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent*, NeurIPS 2017.

    Args:
        n_byzantine: The number ``f ≥ 0`` of rows that may be Byzantine (arbitrary).
        n_selected: The number ``≥ 1`` of rows to select and average. Default: ``1``.

    >>> import torch
    >>> J = torch.tensor([[1.0, 1.0], [1.0, 0.0], [30.0, -4.0], [0.0, 2.0]])
    >>> Krum(n_byzantine=1, n_selected=2)(J)
    tensor([1.0000, 0.5000])
    """

    gramian_weighting: KrumWeighting

    def __init__(self, n_byzantine: int, n_selected: int = 1) -> None:
        super().__init__(KrumWeighting(n_byzantine=n_byzantine, n_selected=n_selected))

    def __repr__(self) -> str:
        weighting = self.gramian_weighting
        return (
            f"{type(self).__name__}(n_byzantine={weighting.n_byzantine}, "
            f"n_selected={weighting.n_selected})"
        )

    def __str__(self) -> str:
        weighting = self.gramian_weighting
        return f"{type(self).__name__}{weighting.n_byzantine}-{weighting.n_selected}"
