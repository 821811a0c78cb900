"""When a weighting may compute on Python floats instead of tensors.

With a handful of objectives, a weighting of the ``[m, m]`` Gramian costs a few hundred
floating-point operations, while every tensor operation costs microseconds of dispatch: on the
CPU, reading ``G`` once with ``tolist()`` and computing in plain Python (float64) is several
times faster. This is only possible when no autograd graph has to be kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

from torchjd.linalg._small import MAX_SMALL_M  # the same threshold as the projector's own


def use_python_floats(gramian: Tensor, max_m: int = MAX_SMALL_M) -> bool:
    """Whether the weights of ``gramian`` (at most ``max_m`` objectives) may be computed on
    Python floats.
    """
    return (
        gramian.device.type == "cpu"
        and gramian.shape[0] <= max_m
        and not (torch.is_grad_enabled() and gramian.requires_grad)
    )
