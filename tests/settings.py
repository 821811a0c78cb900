"""Device and dtype of the test tensors, from the environment.

``PYTEST_TORCH_DEVICE``: ``cpu`` (default) or ``cuda`` / ``cuda:N``.
``PYTEST_TORCH_DTYPE``: ``float32`` (default) or ``float64``.
"""

from __future__ import annotations

import os

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _device() -> torch.device:
    name = os.environ.get("PYTEST_TORCH_DEVICE", "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"PYTEST_TORCH_DEVICE should be 'cpu' or 'cuda[:N]'. Found {name!r}.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"PYTEST_TORCH_DEVICE={name!r} but CUDA is not available.")
    device = torch.device(name)
    if device.type == "cuda" and ":" not in name:
        # Tensors report their device with an index: compare like with like.
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _dtype() -> torch.dtype:
    name = os.environ.get("PYTEST_TORCH_DTYPE", "float32")
    if name not in _DTYPES:
        raise ValueError(f"PYTEST_TORCH_DTYPE should be one of {list(_DTYPES)}. Found {name!r}.")
    return _DTYPES[name]


DEVICE = _device()
DTYPE = _dtype()
