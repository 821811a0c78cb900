from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from settings import DEVICE


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    """Seed every test; make CPU algorithms deterministic."""
    random.seed(0)
    torch.manual_seed(0)
    deterministic = DEVICE.type == "cpu"
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    yield
    torch.use_deterministic_algorithms(previous)


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Readable ids: ``str`` of modules, ``T[shape]`` of tensors."""
    if isinstance(val, nn.Module):
        return str(val)[:40]
    if isinstance(val, Tensor):
        return f"T{list(val.shape)}"
    return None
