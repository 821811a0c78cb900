"""A mixin for the aggregators and weightings whose outputs carry no autograd graph."""

from __future__ import annotations

import torch
from torch import Tensor


class NonDifferentiable:
    """Run ``__call__`` under ``torch.no_grad()``, so that outputs have ``requires_grad=False``.

    Used by methods whose result is the solution of an optimisation problem (a projection, a
    QP, an iterative scheme), which is not differentiated through. It must come first in the
    bases so that its ``__call__`` wraps the whole call, hooks included.
    """

    differentiable = False

    def __call__(self, stat: Tensor, /) -> Tensor:
        with torch.no_grad():
            result: Tensor = super().__call__(stat)  # type: ignore[misc]
            return result
