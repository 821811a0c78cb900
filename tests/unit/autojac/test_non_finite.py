"""A Jacobian with a NaN or inf entry: the update and the weights are NaN, nothing raises.

This is what ``torch.amp.GradScaler`` needs: a float16 overflow makes the Jacobian infinite, the
scaler finds the non-finite ``.grad`` and skips the step. On accelerators, no device-side assertion
may fire either (it would end the process): these tests run on every device.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from settings import DEVICE, DTYPE
from torchjd import backward, mtl_backward
from torchjd.aggregation import MGDA, Aggregator, Mean, UPGrad
from torchjd.autojac import jac_to_grad
from utils.tensors import tensor_

# UPGrad goes through the Gramian, Mean and MGDA through the concatenated Jacobian.
_AGGREGATORS = [UPGrad(), Mean(), MGDA()]


def _losses(param: Tensor, bad: float, rows: int = 2) -> Tensor:
    """``rows`` objectives; the Jacobian of the first one is ``bad`` in every entry."""
    first = (param * bad).sum()
    others = [(param * (k + 1.0)).sum() for k in range(rows - 1)]
    return torch.stack([first, *others])


def _assert_all_nan(tensor: Tensor | None) -> None:
    assert tensor is not None
    assert bool(torch.isnan(tensor).all())


@pytest.mark.parametrize("A", _AGGREGATORS, ids=str)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_backward_gives_nan_grad(A: Aggregator, bad: float) -> None:
    param = tensor_([1.0, 2.0, 3.0], requires_grad=True)
    unused = tensor_([5.0], requires_grad=True)
    unused.grad = tensor_([1.0])
    backward(_losses(param, bad), A, inputs=[param, unused])
    _assert_all_nan(param.grad)
    assert_close(unused.grad, tensor_([1.0]))  # the outputs do not depend on it


def test_backward_with_many_rows_gives_nan_grad() -> None:
    """From 32 rows on, the update is one more vector-Jacobian product with the weights."""
    param = tensor_([1.0, 2.0], requires_grad=True)
    backward(_losses(param, float("inf"), rows=40), UPGrad())
    _assert_all_nan(param.grad)


def test_mtl_backward_gives_nan_grad_to_shared_params() -> None:
    shared = tensor_([1.0, 2.0], requires_grad=True)
    head = tensor_([3.0], requires_grad=True)
    features = shared * 2.0
    losses = [(features * float("inf")).sum(), (features * head).sum()]
    mtl_backward(losses, features, UPGrad())
    _assert_all_nan(shared.grad)
    assert_close(head.grad, tensor_([6.0]))  # a task parameter has an ordinary gradient


@pytest.mark.parametrize("A", [UPGrad(), Mean()], ids=str)
def test_jac_to_grad_gives_nan_weights(A: Aggregator) -> None:
    param = tensor_([1.0, 2.0], requires_grad=True)
    backward(_losses(param, float("nan")))
    weights = jac_to_grad([param], A)
    _assert_all_nan(param.grad)
    _assert_all_nan(weights)
    assert weights is not None
    assert weights.shape == (2,)


def test_finite_jacobian_after_a_non_finite_one() -> None:
    """Nothing of the non-finite step is left over (on accelerators: no failed assertion)."""
    param = tensor_([1.0, 2.0], requires_grad=True)
    backward(_losses(param, float("inf")), UPGrad())
    param.grad = None
    backward(torch.stack([tensor_([-1.0, 1.0]) @ param, (param**2).sum()]), UPGrad())
    assert_close(param.grad, tensor_([0.5, 2.5]))


def test_grad_scaler_skips_the_overflowing_step() -> None:
    """The GradScaler recipe: an overflowing scaled Jacobian skips the step, lowers the scale."""
    if DTYPE is not torch.float32:
        pytest.skip("GradScaler works with float32 parameters")
    param = tensor_([1.0, 2.0], requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler(DEVICE.type, init_scale=2.0**16)
    losses = torch.stack([(param * 1e38).sum(), param.sum()])  # x 2^16: beyond float32's range
    backward(scaler.scale(losses), UPGrad())
    scaler.step(optimizer)
    scaler.update()
    assert_close(param.detach(), tensor_([1.0, 2.0]))  # the step was skipped
    assert scaler.get_scale() < 2.0**16
