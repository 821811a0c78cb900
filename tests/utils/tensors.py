"""Tensor factories on the test device and dtype (see ``settings.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from settings import DEVICE, DTYPE


def tensor_(data: Any, **kwargs: Any) -> Tensor:
    return torch.tensor(data, device=DEVICE, dtype=kwargs.pop("dtype", DTYPE), **kwargs)


def randn_(*shape: int, **kwargs: Any) -> Tensor:
    return torch.randn(*shape, device=DEVICE, dtype=kwargs.pop("dtype", DTYPE), **kwargs)


def rand_(*shape: int, **kwargs: Any) -> Tensor:
    return torch.rand(*shape, device=DEVICE, dtype=kwargs.pop("dtype", DTYPE), **kwargs)


def zeros_(*shape: int, **kwargs: Any) -> Tensor:
    return torch.zeros(*shape, device=DEVICE, dtype=kwargs.pop("dtype", DTYPE), **kwargs)


def ones_(*shape: int, **kwargs: Any) -> Tensor:
    return torch.ones(*shape, device=DEVICE, dtype=kwargs.pop("dtype", DTYPE), **kwargs)


def eye_(n: int, **kwargs: Any) -> Tensor:
    return torch.eye(n, device=DEVICE, dtype=kwargs.pop("dtype", DTYPE), **kwargs)
