"""The aggregation of a Jacobian with a NaN or infinite entry: NaN, as autograd would give.

Such a Jacobian is not always a bug: under ``torch.amp.GradScaler``, a float16 overflow makes it
infinite on purpose, and the scaler, finding a non-finite ``.grad`` in ``step``, skips the step and
lowers the scale. Raising would break that recipe, and on an accelerator even looking at the values
would synchronise the host with the device. No aggregator is defined on such a matrix, so the
update (and the weights) are NaN in every entry: never a finite value that could pass unnoticed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nan_where_not(finite: Tensor, result: Tensor) -> Tensor:
    """``result`` where ``finite`` (a 0-d boolean tensor) holds, NaN everywhere otherwise."""
    return torch.where(finite, result, torch.full_like(result, float("nan")))


def nans(size: int, like: Tensor) -> Tensor:
    """A vector of ``size`` NaNs with the dtype and device of ``like``."""
    return torch.full((size,), float("nan"), dtype=like.dtype, device=like.device)
