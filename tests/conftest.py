from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from settings import DEVICE

# TF32 (on by default for cuDNN convolutions and RNNs) keeps 10 mantissa bits: the tests compare
# float32 computations with float32 tolerances, so they run in full float32 precision.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``device_assert`` tests on accelerators.

    There, a failed check of tensor values is a device-side assertion, after which the CUDA
    context of the process is unusable: every later test would fail. These checks are tested
    in subprocesses instead (``tests/unit/test_device_asserts.py``).
    """
    if DEVICE.type == "cpu":
        return
    skip = pytest.mark.skip(reason="a failed device-side assertion ends the CUDA context")
    for item in items:
        if item.get_closest_marker("device_assert") is not None:
            item.add_marker(skip)
