from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import cast

from torch import Tensor, nn

from torchjd.linalg import PSDMatrix

from ._utils.checks import check_tensor
from ._weighting_bases import Weighting


def _check_generalized_gramian(value: object, name: str = "generalized_gramian") -> Tensor:
    """Check that ``value`` is a tensor of shape ``[m1, ..., mk, mk, ..., m1]`` (``k ≥ 0``)."""
    tensor = check_tensor(value, name)
    shape = tuple(tensor.shape)
    if tensor.ndim % 2 != 0 or shape != shape[::-1]:
        raise ValueError(
            f"Parameter `{name}` should have an even number of dimensions and a palindromic "
            f"shape [m1, ..., mk, mk, ..., m1]. Found `{name}.shape = {shape}`."
        )
    return tensor


def _flatten(generalized_gramian: Tensor) -> Tensor:
    """Reshape a ``[m1, ..., mk, mk, ..., m1]`` generalized Gramian into its ``[M, M]`` Gramian.

    The entry ``[i1, ..., ik, jk, ..., j1]`` is the inner product of the gradients of the
    outputs ``o[i1, ..., ik]`` and ``o[j1, ..., jk]``. Reversing the last ``k`` dimensions gives
    ``[m1, ..., mk, m1, ..., mk]``; each half is then flattened in row-major order, like
    ``o.reshape(-1)``, so ``M = m1 · ... · mk`` (1 for ``k = 0``).
    """
    k = generalized_gramian.ndim // 2
    M = math.prod(generalized_gramian.shape[:k])
    dims = [*range(k), *reversed(range(k, 2 * k))]
    return generalized_gramian.permute(dims).reshape(M, M)


class GeneralizedWeighting(nn.Module, ABC):
    """Maps a generalized Gramian ``[m1, ..., mk, mk, ..., m1]`` to weights ``[m1, ..., mk]``.

    The generalized Gramian of an output ``o`` of shape ``[m1, ..., mk]`` holds, at
    ``[i1, ..., ik, jk, ..., j1]``, the inner product of the gradients of ``o[i1, ..., ik]`` and
    ``o[j1, ..., jk]``; it generalises ``J Jᵀ`` (``k = 1``) to outputs with several dimensions.
    Calling a generalized weighting validates the shape of its input once, here, for every
    subclass; subclasses implement :meth:`forward` only.
    """

    def __init__(self) -> None:
        super().__init__()

    @abstractmethod
    def forward(self, generalized_gramian: Tensor, /) -> Tensor:
        """Compute the weights ``[m1, ..., mk]`` from the validated generalized Gramian."""

    def __call__(self, generalized_gramian: Tensor, /) -> Tensor:
        """Validate ``generalized_gramian`` and compute the weights (running the hooks)."""
        _check_generalized_gramian(generalized_gramian)
        result: Tensor = super().__call__(generalized_gramian)
        return result


class Flattening(GeneralizedWeighting):
    """Applies a Gramian weighting to the flattened generalized Gramian and reshapes the weights.

    The ``[m1, ..., mk, mk, ..., m1]`` generalized Gramian is reshaped into the ``[M, M]``
    Gramian ``J Jᵀ`` of the flattened output (``M = m1 · ... · mk``, row-major order, as
    ``o.reshape(-1)``); ``weighting`` computes ``M`` weights from it, which are returned with the
    shape ``[m1, ..., mk]`` of the output. A 0-dimensional generalized Gramian (the Gramian of a
    scalar output) is treated as ``[1, 1]`` and gives a 0-dimensional weight.

    Args:
        weighting: The weighting applied to the flattened ``[M, M]`` Gramian.

    >>> import torch
    >>> from torchjd.aggregation import MeanWeighting
    >>> Flattening(MeanWeighting())(torch.ones(2, 3, 3, 2))
    tensor([[0.1667, 0.1667, 0.1667],
            [0.1667, 0.1667, 0.1667]])
    """

    def __init__(self, weighting: Weighting[PSDMatrix]) -> None:
        super().__init__()
        self.weighting = weighting

    def forward(self, generalized_gramian: Tensor, /) -> Tensor:
        shape = generalized_gramian.shape[: generalized_gramian.ndim // 2]
        weights = self.weighting(cast(PSDMatrix, _flatten(generalized_gramian)))
        return weights.reshape(shape)
