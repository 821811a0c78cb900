from __future__ import annotations

import torch
from torch import Tensor

from ._aggregator_bases import _ShapeWeightedAggregator
from ._weighting_bases import _MatrixWeighting


class SumWeighting(_MatrixWeighting):
    """Gives every row the weight ``1``.

    >>> import torch
    >>> SumWeighting()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([1., 1.])
    """

    reads_values = False

    def forward(self, stat: Tensor, /) -> Tensor:
        return torch.ones(stat.shape[0], dtype=stat.dtype, device=stat.device)


class Sum(_ShapeWeightedAggregator):
    """Sums the rows of the matrix: ``A(J) = Σ_i J_i``.

    >>> import torch
    >>> Sum()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([2., 2., 2.])
    """

    def __init__(self) -> None:
        super().__init__(SumWeighting())
