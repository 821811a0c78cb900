"""``jac``: Jacobians returned, no field touched."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from settings import DEVICE, DTYPE
from torchjd.autojac import jac
from utils.tensors import randn_, tensor_, zeros_

from ._zoo import CASES, Case, reference_jacobians


def test_api_example() -> None:
    x = tensor_([1.0, 2.0], requires_grad=True)
    h = x**2
    y = torch.stack([h.sum(), tensor_([1.0, -1.0]) @ h])
    (result,) = jac(y, x)
    assert_close(result, tensor_([[2.0, 4.0], [2.0, -4.0]]))


def test_api_example_chain_rule() -> None:
    x = tensor_([1.0, 2.0], requires_grad=True)
    h = x**2
    y = torch.stack([h.sum(), tensor_([1.0, -1.0]) @ h])
    (jac_h,) = jac(y, h, retain_graph=True)
    assert_close(jac_h, tensor_([[1.0, 1.0], [1.0, -1.0]]))
    (result,) = jac(h, x, jac_outputs=jac_h)
    assert_close(result, tensor_([[2.0, 4.0], [2.0, -4.0]]))


def test_gramian_of_a_linear_map() -> None:
    matrix = tensor_([[1.0, 1.0, 1.0, 0.0], [-1.0, 0.0, 1.0, -1.0], [4.0, -9.0, 4.0, 3.0]])
    param = randn_(4, requires_grad=True)
    (jacobian,) = jac(matrix @ param, [param])
    assert_close(jacobian @ jacobian.T, tensor_([[3.0, 0, -1], [0, 3, -3], [-1, -3, 122]]))


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_matches_autograd_rows(make: Callable[[], Case], chunk: int | None) -> None:
    case = make()
    expected = reference_jacobians(case.objectives(), case.params)
    result = jac(case.objectives(), case.params, parallel_chunk_size=chunk)
    assert len(result) == len(case.params)
    for jacobian, reference in zip(result, expected, strict=True):
        assert_close(jacobian, reference)
    for param in case.params:
        assert param.grad is None
        assert not hasattr(param, "jac")


def test_generator_inputs() -> None:
    """Unlike TorchJD 0.18.0, a generator (``model.parameters()``) works."""
    model = nn.Linear(3, 2).to(DEVICE, DTYPE)
    outputs = model(randn_(4, 3)).sum(dim=1)
    expected = reference_jacobians([outputs], list(model.parameters()))
    result = jac(outputs, model.parameters())
    assert len(result) == 2
    for jacobian, reference in zip(result, expected, strict=True):
        assert_close(jacobian, reference)


def test_repeated_inputs_are_repeated_in_the_output() -> None:
    x = tensor_([1.0, 2.0], requires_grad=True)
    y = tensor_([3.0], requires_grad=True)
    result = jac((x * y).sum(), [x, y, x])
    assert len(result) == 3
    assert_close(result[0], tensor_([[3.0, 3.0]]))
    assert_close(result[1], tensor_([[3.0]]))
    assert result[2] is result[0]


def test_default_inputs_and_unused_inputs() -> None:
    x = tensor_([1.0, 2.0], requires_grad=True)
    unused = tensor_([1.0], requires_grad=True)
    (result,) = jac((x**2).sum())
    assert_close(result, tensor_([[2.0, 4.0]]))
    (_, zero) = jac((x**2).sum(), [x, unused])
    assert_close(zero, zeros_(1, 1))


def test_empty_inputs() -> None:
    x = tensor_([1.0], requires_grad=True)
    assert jac(x * 2, []) == ()


def test_errors() -> None:
    x = tensor_([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(ValueError, match=r"Parameter `outputs` should not be empty"):
        jac([], [x])
    with pytest.raises(ValueError, match=r"`outputs\[1\]` is `outputs\[0\]`"):
        jac([y, y], [x])
    with pytest.raises(ValueError, match=r"`inputs\[0\]` with requires_grad=False"):
        jac(y, [tensor_([1.0])])
    with pytest.raises(ValueError, match=r"parallel_chunk_size=0"):
        jac(y, [x], parallel_chunk_size=0)
    with pytest.raises(ValueError, match=r"`jac_outputs` should have the same length as `outputs`"):
        jac([y, y * 2], [x], jac_outputs=[randn_(1, 2)])
    with pytest.raises(ValueError, match=r"same number of rows"):
        jac([y, y * 2], [x], jac_outputs=[randn_(1, 2), randn_(2, 2)])


@pytest.mark.parametrize("n_rows", [2, 3, 6])
@pytest.mark.parametrize("chunk_size", [1, None])
def test_rows_reaching_only_some_inputs(n_rows: int, chunk_size: int | None) -> None:
    """Rows that do not reach an input give zero rows there, whether the rows are computed one by
    one or batched."""
    a = tensor_([1.0, 2.0], requires_grad=True)
    b = tensor_([3.0], requires_grad=True)
    # Row i: a·a when i is even, 3·b when i is odd.
    y = torch.stack([(a**2).sum() if i % 2 == 0 else (3 * b).sum() for i in range(n_rows)])
    jac_a, jac_b = jac(y, [a, b], parallel_chunk_size=chunk_size)
    expected_a = torch.stack([tensor_([2.0, 4.0]) * (1 - i % 2) for i in range(n_rows)])
    expected_b = torch.stack([tensor_([3.0]) * (i % 2) for i in range(n_rows)])
    assert_close(jac_a, expected_a)
    assert_close(jac_b, expected_b)
