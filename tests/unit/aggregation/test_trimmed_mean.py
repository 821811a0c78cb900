from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from torchjd.aggregation import Mean, TrimmedMean
from utils.tensors import randn_, tensor_

J_TM = [[1e11, 3.0], [1.0, -1e11], [-1e10, 1e10], [2.0, 2.0]]


def _loop_trimmed_mean(J: list[list[float]], trim_number: int) -> list[float]:
    """Straightforward column-by-column trimmed mean with Python lists, for cross-checking."""
    m, n = len(J), len(J[0])
    result = []
    for k in range(n):
        column = sorted(J[i][k] for i in range(m))
        kept = column[trim_number : m - trim_number]
        result.append(sum(kept) / len(kept))
    return result


def test_reference_value() -> None:
    assert_close(TrimmedMean(1)(tensor_(J_TM)), tensor_([1.5, 2.5]))


@pytest.mark.parametrize(("m", "trim_number"), [(1, 0), (3, 1), (5, 2), (6, 1), (9, 3), (10, 0)])
def test_matches_a_straightforward_loop(m: int, trim_number: int) -> None:
    J = randn_(m, 7)
    expected = _loop_trimmed_mean(J.tolist(), trim_number)
    assert_close(TrimmedMean(trim_number)(J), tensor_(expected))


def test_trim_zero_is_the_mean() -> None:
    J = randn_(5, 4)
    assert_close(TrimmedMean(0)(J), Mean()(J))


def test_robust_to_trim_number_outliers_per_column() -> None:
    honest = randn_(6, 5)
    # Two rows replaced by huge values with mixed signs, per column.
    J = honest.clone()
    J[0] = tensor_([1e12, -1e12, 1e12, -1e12, 1e12])
    J[3] = tensor_([-1e12, -1e12, 1e12, 1e12, 1e12])
    result = TrimmedMean(2)(J)
    low, high = honest.min(dim=0).values, honest.max(dim=0).values
    assert bool(((result >= low) & (result <= high)).all())


def test_is_differentiable() -> None:
    J = tensor_([[1.0, 10.0], [2.0, -3.0], [3.0, 0.5], [4.0, 7.0], [5.0, 1.0]]).requires_grad_()
    torch.autograd.backward(TrimmedMean(1)(J).sum())
    # Column 0 keeps 2, 3, 4 (rows 1, 2, 3); column 1 keeps 0.5, 1, 7 (rows 2, 4, 3).
    expected = tensor_([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]) / 3.0
    assert J.grad is not None
    assert_close(J.grad, expected)


def test_output_is_permutation_invariant() -> None:
    J = randn_(7, 3)
    permutation = torch.randperm(7)
    assert_close(TrimmedMean(2)(J[permutation]), TrimmedMean(2)(J))


@pytest.mark.parametrize("trim_number", [-1, -4])
def test_invalid_trim_number(trim_number: int) -> None:
    with pytest.raises(ValueError, match="trim_number"):
        TrimmedMean(trim_number)


@pytest.mark.parametrize("trim_number", [1.0, True, "2"])
def test_invalid_trim_number_type(trim_number: object) -> None:
    with pytest.raises(TypeError, match="trim_number"):
        TrimmedMean(trim_number)  # type: ignore[arg-type]


@pytest.mark.parametrize(("m", "trim_number"), [(1, 1), (2, 1), (4, 2), (6, 3)])
def test_too_few_rows(m: int, trim_number: int) -> None:
    with pytest.raises(ValueError, match=r"trim_number.*2 \* trim_number \+ 1"):
        TrimmedMean(trim_number)(randn_(m, 3))
    TrimmedMean(trim_number)(randn_(2 * trim_number + 1, 3))  # the smallest valid m


def test_repr_and_str() -> None:
    assert repr(TrimmedMean(trim_number=2)) == "TrimmedMean(trim_number=2)"
    assert str(TrimmedMean(2)) == "TM2"
    assert str(TrimmedMean(0)) == "TM0"
