"""The Gramian equals ``J Jᵀ`` from plain autograd on an architecture zoo."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from settings import DEVICE, DTYPE
from torchjd.autogram import Engine
from unit.autogram._reference import assert_gramians_close, autograd_gramian, trainable
from unit.autogram._zoo import CASES, Case

PARAMETRIZATION = [
    pytest.param(case, batch_dim, batch_size, id=f"{case}-bd{batch_dim}-B{batch_size}")
    for case in CASES
    for batch_dim in case.batch_dims
    for batch_size in (1, 3, 4)
]


@pytest.mark.parametrize(("case", "batch_dim", "batch_size"), PARAMETRIZATION)
def test_gramian_equals_autograd(case: Case, batch_dim: int | None, batch_size: int) -> None:
    model = case.model().to(device=DEVICE, dtype=DTYPE)
    input = case.input(batch_size)
    engine = Engine(model.modules(), batch_dim=batch_dim)
    output = case.forward(model, input)
    gramian = engine.compute_gramian(output)
    # The same forward pass for the reference: dropout masks are those the engine saw.
    assert_gramians_close(gramian, autograd_gramian(output, trainable(model)))


def test_batchnorm_without_batch_dim() -> None:
    """Without ``batch_dim`` nothing is assumed: BatchNorm (mixing samples) is exact too."""
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.BatchNorm1d(12), nn.Linear(12, 2)
    ).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model, batch_dim=None)
    output = model(torch.randn(4, 2, 4, 4, device=DEVICE, dtype=DTYPE))
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(model))
    )


def test_only_given_modules_are_differentiated() -> None:
    """The partial Gramian: parameters outside the given modules do not contribute."""
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).to(
        device=DEVICE, dtype=DTYPE
    )
    engine = Engine(model[0], batch_dim=0)
    output = model(torch.randn(3, 5, device=DEVICE, dtype=DTYPE))
    expected = autograd_gramian(output, trainable(model[0]))
    assert_gramians_close(engine.compute_gramian(output), expected)


def test_module_called_from_outside_its_parent() -> None:
    """A child called by the model before its parent's call: its uses are counted once."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
            self.scale = nn.Parameter(torch.randn(4))

        def forward(self, x: Tensor) -> Tensor:
            first: Tensor = self.block[0](x)
            out: Tensor = self.block(first * self.scale)
            return out

    model = Net().to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model, batch_dim=0)
    output = model(torch.randn(3, 4, device=DEVICE, dtype=DTYPE))
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(model))
    )


@pytest.mark.parametrize("training", [True, False])
def test_instance_norm_with_running_stats(training: bool) -> None:
    """InstanceNorm keeps the samples apart (its running statistics are not in the graph)."""
    model = nn.Sequential(
        nn.Conv1d(2, 3, 2), nn.InstanceNorm1d(3, affine=True, track_running_stats=True)
    ).to(device=DEVICE, dtype=DTYPE)
    model.train(training)
    engine = Engine(model.modules(), batch_dim=0)
    output = model(torch.randn(3, 2, 5, device=DEVICE, dtype=DTYPE)).sum(dim=2)
    expected = autograd_gramian(output, trainable(model))
    assert_gramians_close(engine.compute_gramian(output), expected)


def test_sequence_first_without_layout_attribute() -> None:
    """Sequence-first tensors with as many positions as samples, pooled: the graph decides."""
    model = nn.Sequential(nn.Embedding(11, 4), nn.Tanh(), nn.Linear(4, 3), nn.RMSNorm(3))
    model = model.to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model.modules(), batch_dim=0)
    tokens = torch.randint(0, 11, (3, 3), device=DEVICE)  # [sequence, batch]
    output = model(tokens).sum(dim=(0, 2))  # [batch]
    assert isinstance(output, Tensor)
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(model))
    )
