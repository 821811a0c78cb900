from __future__ import annotations

import torch
from torch import Tensor

from ._aggregator_bases import _ShapeWeightedAggregator
from ._weighting_bases import _MatrixWeighting


class MeanWeighting(_MatrixWeighting):
    """Gives every one of the ``m`` rows the weight ``1/m``.

    It only looks at the number of rows, so it also applies to a Gramian.

    >>> import torch
    >>> MeanWeighting()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.5000, 0.5000])
    """

    reads_values = False

    def forward(self, stat: Tensor, /) -> Tensor:
        m = stat.shape[0]
        return torch.full((m,), 1.0 / m, dtype=stat.dtype, device=stat.device)


class Mean(_ShapeWeightedAggregator):
    """Averages the rows of the matrix: ``A(J) = (1/m) Σ_i J_i``.

    >>> import torch
    >>> Mean()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([1., 1., 1.])
    """

    def __init__(self) -> None:
        super().__init__(MeanWeighting())
