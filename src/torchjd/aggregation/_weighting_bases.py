"""Base classes of the weightings: a statistic of the Jacobian (itself or its Gramian) → ``[m]``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

import torch
from torch import Tensor, nn

from torchjd.linalg import Matrix, PSDMatrix

from ._utils.checks import check_gramian, check_matrix, values_checked_later

_T_contra = TypeVar("_T_contra", bound=Tensor, contravariant=True)
_U = TypeVar("_U", bound=Tensor)

#: The dtypes that Gramian weightings and aggregators compute in float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if it is in half precision, else ``tensor`` itself: the Gramian of a
    half-precision matrix overflows float16 beyond 65504 and keeps three significant digits in
    bfloat16, so it is computed from a float32 copy (held only while the Gramian is computed).
    """
    return tensor.float() if tensor.dtype in HALF_DTYPES else tensor


class Weighting(nn.Module, ABC, Generic[_T_contra]):
    """Maps a statistic of a Jacobian (the matrix ``J`` itself, or its Gramian ``J Jᵀ``) to a
    vector of ``m`` weights, one per objective.

    Weightings are :class:`torch.nn.Module`: calling one runs its forward hooks, and ``.to()``
    moves its buffers. ``Weighting[Matrix]`` takes the ``[m, n]`` matrix; ``Weighting[PSDMatrix]``
    takes the ``[m, m]`` Gramian. A matrix weighting that only looks at the number of rows (such
    as :class:`~torchjd.aggregation.MeanWeighting`) also works on a Gramian.
    """

    differentiable = True
    # Whether the weights depend on the values of the input, not only on its shape.
    reads_values = True
    # Whether everything `forward` passes to nested weightings has had its values checked (the
    # input, by `_check_input`, or data derived from it and checked in `forward`).
    _checks_what_it_passes_on = False

    def __init__(self) -> None:
        super().__init__()

    @abstractmethod
    def forward(self, stat: _T_contra, /) -> Tensor:
        """Compute the weights ``[m]`` from the statistic."""

    def __call__(self, stat: Tensor, /) -> Tensor:
        """Validate ``stat`` and compute the weights (running the module's hooks)."""
        self._check_input(stat)
        if not self._checks_what_it_passes_on:
            result: Tensor = super().__call__(stat)
        else:
            with values_checked_later():  # nested weightings need not check the data again
                result = super().__call__(stat)
        return result

    def _check_input(self, stat: Tensor) -> None:
        """Subclasses that know their input kind validate it here; the generic base does not."""

    def __lshift__(self, fn: Callable[[_U], _T_contra]) -> Weighting[_U]:
        """Return the weighting ``x ↦ self(fn(x))``."""
        return _Composition(self, fn)


class _MatrixWeighting(Weighting[Matrix], ABC):
    """A weighting whose input is a Jacobian matrix ``[m, n]`` (or any matrix with ``m`` rows)."""

    _checks_what_it_passes_on = True

    def _check_input(self, stat: Tensor) -> None:
        check_matrix(stat)


class _GramianWeighting(Weighting[PSDMatrix], ABC):
    """A weighting whose input is the Gramian ``J Jᵀ`` of a Jacobian, of shape ``[m, m]``.

    A half-precision Gramian (float16 or bfloat16, as from a model trained in reduced
    precision) is weighted in float32, and the weights are returned in its dtype: the
    factorisations that the weightings use have no half-precision kernels on the CPU, and a
    bfloat16 Gramian holds three significant digits.
    """

    _checks_what_it_passes_on = True

    def __call__(self, stat: Tensor, /) -> Tensor:
        if isinstance(stat, Tensor) and stat.dtype in HALF_DTYPES:
            return super().__call__(stat.float()).to(stat.dtype)
        return super().__call__(stat)

    def _check_input(self, stat: Tensor) -> None:
        check_gramian(stat)


class _Composition(Weighting[_U]):
    """The weighting ``x ↦ weighting(fn(x))``; used to build Gramian-based aggregators."""

    def __init__(self, weighting: Weighting[_T_contra], fn: Callable[[_U], _T_contra]) -> None:
        super().__init__()
        self.weighting = weighting
        self.fn = fn

    def forward(self, stat: _U, /) -> Tensor:
        return self.weighting(self.fn(stat))
