"""Mixed precision: the AMP recipe (autocast around forward and losses, GradScaler)."""

from __future__ import annotations

import warnings
from typing import cast

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from settings import DEVICE
from torchjd import backward, mtl_backward
from torchjd.aggregation import IMTLG, Aggregator, AlignedMTL, UPGrad


def _model() -> tuple[nn.Module, list[nn.Module]]:
    trunk = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 5))
    heads = [nn.Linear(5, 1) for _ in range(2)]
    return trunk.to(DEVICE), [head.to(DEVICE) for head in heads]


def _step(amp: bool) -> list[torch.Tensor]:
    """One MTL step of SGD; returns the parameters after it (the model is rebuilt each time)."""
    torch.manual_seed(0)
    trunk, heads = _model()
    params = [*trunk.parameters(), *(p for head in heads for p in head.parameters())]
    x = torch.randn(16, 4, device=DEVICE)
    targets = torch.randn(2, 16, 1, device=DEVICE)
    optimizer = torch.optim.SGD(params, lr=0.1)
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=amp)
    with torch.autocast(device_type=DEVICE.type, dtype=torch.bfloat16, enabled=amp):
        features = trunk(x)
        losses = [
            nn.functional.mse_loss(head(features), target)
            for head, target in zip(heads, targets, strict=True)
        ]
    optimizer.zero_grad()
    with warnings.catch_warnings():
        # With some versions of torch, vmap loses the autocast state in the backward of norm
        # layers (users.md §1.3): the rows are then computed one by one, with this warning.
        warnings.filterwarnings("ignore", message="The Jacobian could not be computed with")
        mtl_backward(scaler.scale(losses), features, UPGrad())
    for param in params:
        assert param.grad is not None
        assert param.grad.dtype == torch.float32
    scaler.step(optimizer)
    scaler.update()
    return [p.detach().clone() for p in params]


def test_amp_step_matches_float32_step() -> None:
    reference = _step(amp=False)
    mixed = _step(amp=True)
    for param, expected in zip(mixed, reference, strict=True):
        assert_close(param, expected, rtol=0.0, atol=2e-2)


def test_grad_dtype_of_bfloat16_parameters_under_autocast() -> None:
    layer = nn.Linear(3, 2).to(DEVICE, torch.bfloat16)
    with torch.autocast(device_type=DEVICE.type, dtype=torch.bfloat16):
        losses = layer(torch.randn(4, 3, device=DEVICE, dtype=torch.bfloat16)).float().sum(dim=1)
    backward(losses, UPGrad())
    assert layer.weight.grad is not None
    assert layer.weight.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("aggregator", [UPGrad(), AlignedMTL(), IMTLG()], ids=str)
def test_half_precision_model(dtype: torch.dtype, aggregator: Aggregator) -> None:
    """A model held in float16 or bfloat16: the Gramian of its Jacobian is built in float32
    (in half precision it would overflow or keep three digits, and AlignedMTL's eigh and IMTLG's
    pinv have no half-precision kernels), and `.grad` keeps the parameters' dtype. The update is
    the float32 aggregation of the same (half-precision) Jacobian, rounded once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(DEVICE, dtype)
    x = torch.randn(4, 5, device=DEVICE).to(dtype)
    losses = model(x).pow(2).sum(dim=0)
    params = list(model.parameters())
    rows = [torch.autograd.grad(loss, params, retain_graph=True) for loss in losses]
    J = torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in rows])
    expected = aggregator(J.float())
    backward(losses, aggregator)
    grads = [p.grad for p in params]
    assert all(g is not None and g.dtype == dtype for g in grads)
    result = torch.cat([cast(torch.Tensor, g).reshape(-1) for g in grads]).float()
    assert float((result - expected).norm() / expected.norm()) <= 2 * torch.finfo(dtype).eps
