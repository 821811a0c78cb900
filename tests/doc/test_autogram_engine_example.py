"""The example of the ``autogram.Engine`` reference page runs as written."""

from __future__ import annotations

import torch

EXAMPLE = """\
import torch
from torch.nn import Linear, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import UPGradWeighting
from torchjd.autogram import Engine

# Generate data (8 batches of 16 examples of dim 5) for the sake of the example
inputs = torch.randn(8, 16, 5)
targets = torch.randn(8, 16)

model = Sequential(Linear(5, 4), ReLU(), Linear(4, 1))
optimizer = SGD(model.parameters())

criterion = MSELoss(reduction="none")  # Important to use reduction="none"
weighting = UPGradWeighting()

# Create the engine before the backward pass, and only once.
engine = Engine(model.modules(), batch_dim=0)

for input, target in zip(inputs, targets):
    output = model(input).squeeze(dim=1)  # shape: [16]
    losses = criterion(output, target)  # shape: [16]

    optimizer.zero_grad()
    gramian = engine.compute_gramian(losses)  # shape: [16, 16]
    weights = weighting(gramian)  # shape: [16]
    losses.backward(weights)
    optimizer.step()
"""


def test_engine_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(EXAMPLE, "autogram.Engine example", "exec"), namespace)
    gramian = namespace["gramian"]
    assert isinstance(gramian, torch.Tensor)
    assert gramian.shape == (16, 16)
    # A Gramian: symmetric positive semi-definite.
    assert torch.allclose(gramian, gramian.T)
    assert torch.linalg.eigvalsh(gramian).min() >= -1e-6 * gramian.diagonal().max()
