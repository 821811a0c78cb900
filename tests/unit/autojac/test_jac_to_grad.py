"""``jac_to_grad``: aggregation of the ``.jac`` fields into ``.grad``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from torchjd.aggregation import MGDA, Aggregator, Mean, TrimmedMean, UPGrad
from torchjd.autojac import backward, jac_to_grad
from utils.tensors import randn_, tensor_

from ._zoo import CASES, grad_of, jac_of, reference_jacobians, set_jac


def _example() -> Tensor:
    param = tensor_([1.0, 2.0], requires_grad=True)
    y1 = tensor_([-1.0, 1.0]) @ param
    y2 = (param**2).sum()
    backward([y1, y2])
    return param


def test_api_example() -> None:
    param = _example()
    weights = jac_to_grad([param], UPGrad())
    assert_close(param.grad, tensor_([0.5, 2.5]))
    assert_close(weights, tensor_([0.5, 0.5]))
    assert not hasattr(param, "jac")


def test_mean_weights_and_non_weighted_aggregator() -> None:
    assert_close(jac_to_grad([_example()], Mean()), tensor_([0.5, 0.5]))
    param = _example()
    assert jac_to_grad([param], TrimmedMean(0)) is None
    assert_close(param.grad, tensor_([0.5, 2.5]))


def test_retain_jac() -> None:
    param = _example()
    jac_to_grad([param], UPGrad(), retain_jac=True)
    assert_close(jac_of(param), tensor_([[-1.0, 1.0], [2.0, 4.0]]))


def test_jac_is_deleted_even_if_the_aggregation_fails() -> None:
    param = _example()
    with pytest.raises(ValueError, match="pref_vector"):
        jac_to_grad([param], UPGrad(pref_vector=tensor_([1.0, 1.0, 1.0])))  # 3 weights, 2 rows
    assert not hasattr(param, "jac")


def test_accumulates_into_existing_grad() -> None:
    param = _example()
    param.grad = tensor_([1.0, 1.0])
    jac_to_grad([param], UPGrad())
    assert_close(param.grad, tensor_([1.5, 3.5]))


@pytest.mark.parametrize("A", [UPGrad(), MGDA()], ids=str)
def test_optimized_gramian_path_equals_default_path(A: Aggregator) -> None:
    case = CASES[2]()  # shared trunk and heads
    jacobians = reference_jacobians(case.objectives(), case.params)
    for param, jacobian in zip(case.params, jacobians, strict=True):
        set_jac(param, jacobian.clone())
    default = jac_to_grad(case.params, A, retain_jac=True)
    expected = [grad_of(p).clone() for p in case.params if p.grad is not None]
    for param in case.params:
        param.grad = None
    optimized = jac_to_grad(case.params, A, optimize_gramian_computation=True)
    assert_close(optimized, default, rtol=1e-4, atol=1e-6)
    for param, grad in zip(case.params, expected, strict=True):
        assert_close(param.grad, grad, rtol=1e-4, atol=1e-6)


def test_grad_takes_the_dtype_of_each_tensor() -> None:
    low = torch.tensor([1.0, 2.0], dtype=torch.bfloat16, requires_grad=True)
    high = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    set_jac(low, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.bfloat16))
    set_jac(high, torch.tensor([[1.0], [1.0]], dtype=torch.float64))
    jac_to_grad([low, high], Mean())
    assert low.grad is not None
    assert low.grad.dtype == torch.bfloat16
    assert high.grad is not None
    assert high.grad.dtype == torch.float64
    assert_close(high.grad, torch.tensor([1.0], dtype=torch.float64))


def test_errors() -> None:
    param = _example()
    bare = randn_(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"populated `.jac` field. Found `tensors\[1\]`"):
        jac_to_grad([param, bare], UPGrad())
    with pytest.raises(ValueError, match=r"Parameter `tensors` should not be empty"):
        jac_to_grad([], UPGrad())
    other = randn_(3, requires_grad=True)
    set_jac(other, randn_(3, 3))
    with pytest.raises(ValueError, match=r"same number of rows. Found numbers of rows \[2, 3\]"):
        jac_to_grad([param, other], UPGrad())
    with pytest.raises(TypeError, match=r"Parameter `aggregator` should be an Aggregator"):
        jac_to_grad([param], "UPGrad")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"`optimize_gramian_computation=True`. Found Mean\(\)"):
        jac_to_grad([param], Mean(), optimize_gramian_computation=True)
    hooked = UPGrad()
    hooked.register_forward_hook(lambda *_: None)
    with pytest.raises(ValueError, match=r"no forward hook"):
        jac_to_grad([param], hooked, optimize_gramian_computation=True)
    non_leaf = param * 1
    set_jac(non_leaf, randn_(2, 2))
    with pytest.raises(ValueError, match=r"`.grad` can be populated"):
        jac_to_grad([non_leaf], UPGrad())
