from __future__ import annotations

import torch
from torch import Tensor

from torchjd.linalg import Matrix

from ._aggregator_bases import Aggregator
from ._utils.checks import check_non_negative_int


class TrimmedMean(Aggregator):
    """Averages each column after discarding its ``trim_number`` smallest and largest values.

    For each coordinate ``k``, the values ``J_1k, …, J_mk`` are sorted, the ``trim_number``
    smallest and the ``trim_number`` largest are dropped and the ``m − 2·trim_number`` others
    are averaged. This coordinate-wise rule is robust to up to ``trim_number`` arbitrary rows. It
    is not a weighted aggregator: each column may keep different rows. It requires
    ``m ≥ 2·trim_number + 1``, which is checked at call time (``ValueError``). Differentiable.

    Reference: Yin et al., *Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates*, ICML 2018 (coordinate-wise trimmed mean).

    Args:
        trim_number: The number ``≥ 0`` of values dropped at each end of every column.

    >>> import torch
    >>> J = torch.tensor([[1e11, 3.0], [1.0, -1e11], [-1e10, 1e10], [2.0, 2.0]])
    >>> TrimmedMean(trim_number=1)(J)
    tensor([1.5000, 2.5000])
    """

    def __init__(self, trim_number: int) -> None:
        super().__init__()
        self.trim_number = check_non_negative_int(trim_number, "trim_number")

    def forward(self, matrix: Matrix, /) -> Tensor:
        m = matrix.shape[0]
        trim = self.trim_number
        if m < 2 * trim + 1:
            raise ValueError(
                "Parameter `trim_number` should satisfy m >= 2 * trim_number + 1, where m is the "
                f"number of rows of the input. Found m={m} and trim_number={trim}."
            )
        sorted_matrix = torch.sort(matrix, dim=0).values
        return sorted_matrix[trim : m - trim].mean(dim=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(trim_number={self.trim_number})"

    def __str__(self) -> str:
        return f"TM{self.trim_number}"
