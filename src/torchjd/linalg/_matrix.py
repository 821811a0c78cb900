"""Phantom matrix types and the small Gramian helpers shared by the weightings."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor


class Matrix(Tensor):
    """Static-typing marker for a 2-D tensor ``[m, n]``; never instantiated."""


class PSDMatrix(Matrix):
    """Static-typing marker for a symmetric positive semi-definite ``[m, m]`` tensor."""


def compute_gramian(matrix: Tensor) -> PSDMatrix:
    """Return ``matrix @ matrix.T``, the Gramian of the rows of ``matrix``."""
    return cast(PSDMatrix, matrix @ matrix.T)


def normalize(gramian: Tensor, eps: float) -> Tensor:
    """Divide ``gramian`` by its trace, or return zeros when the trace is below ``eps``.

    ``torch.where`` (rather than a Python ``if`` on the trace) keeps this free of host
    synchronisation on accelerators.
    """
    trace = gramian.diagonal().sum()
    return gramian * torch.where(trace >= eps, 1.0 / trace, 0.0)


def regularize(gramian: Tensor, eps: float) -> Tensor:
    """Return ``gramian + eps * I``."""
    result = gramian.clone()
    result.diagonal().add_(eps)
    return result
