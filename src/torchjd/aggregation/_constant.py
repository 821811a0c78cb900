from __future__ import annotations

from torch import Tensor

from ._aggregator_bases import WeightedAggregator
from ._utils.checks import check_length, check_vector
from ._utils.str import vector_to_str
from ._weighting_bases import _MatrixWeighting


class ConstantWeighting(_MatrixWeighting):
    """Returns fixed weights, whatever the input (which must have one row per weight).

    Args:
        weights: The ``[m]`` weights to return.

    >>> import torch
    >>> ConstantWeighting(torch.tensor([1.0, 2.0]))(torch.eye(2))
    tensor([1., 2.])
    """

    reads_values = False

    # The name used in error messages; a preference vector reuses this class under its own name.
    _param_name = "weights"

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.weights = check_vector(weights, self._param_name)

    def forward(self, stat: Tensor, /) -> Tensor:
        check_length(self.weights, stat.shape[0], self._param_name)
        return self.weights.to(dtype=stat.dtype, device=stat.device)


class Constant(WeightedAggregator):
    """Combines the rows of the matrix with fixed weights: ``A(J) = Σ_i w_i J_i``.

    Args:
        weights: The ``[m]`` weights, one per row of the matrices to aggregate.

    >>> import torch
    >>> Constant(torch.tensor([1.0, 2.0]))(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([8., 3., 3.])
    """

    weighting: ConstantWeighting

    def __init__(self, weights: Tensor) -> None:
        super().__init__(ConstantWeighting(weights))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.weighting.weights!r})"

    def __str__(self) -> str:
        return f"{type(self).__name__}([{vector_to_str(self.weighting.weights)}])"
