from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from settings import DEVICE, DTYPE
from torchjd.aggregation import ConFIG
from torchjd.aggregation._config import _config_weights, _few_objectives, _two_objectives
from utils.tensors import randn_, tensor_, zeros_

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]


def _reference_config(
    matrix: Tensor, pref_vector: Tensor | None = None, rcond: float = 1e-15
) -> Tensor:
    """ConFIG with numpy in float64: SVD-based pseudo-inverse of the ``[m, n]`` unit rows."""
    J = matrix.double().cpu().numpy()
    w = np.ones(J.shape[0]) if pref_vector is None else pref_vector.double().cpu().numpy()
    norms = np.linalg.norm(J, axis=1, keepdims=True)
    U = np.divide(J, norms, out=np.zeros_like(J), where=norms > 0)
    b = np.linalg.pinv(U, rcond=rcond) @ w
    u = b / np.linalg.norm(b) if np.linalg.norm(b) > 0 else b
    return torch.from_numpy(J.sum(axis=0) @ u * u).to(device=DEVICE, dtype=DTYPE)


def test_reference_values() -> None:
    torch.testing.assert_close(
        ConFIG()(tensor_(J_BASE)), tensor_([0.1588, 2.0706, 2.0706]), rtol=0, atol=1e-4
    )
    result = ConFIG(pref_vector=tensor_([1.0, 2.0]))(tensor_(J_BASE))
    torch.testing.assert_close(result, tensor_([0.4684, 2.1656, 2.1656]), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("m", "n"), [(1, 3), (2, 5), (4, 10), (5, 30), (6, 3), (10, 4)])
@pytest.mark.parametrize("with_pref", [False, True])
def test_matches_svd_pseudo_inverse(m: int, n: int, with_pref: bool) -> None:
    matrix = randn_(m, n)
    pref_vector = randn_(m).abs() + 0.5 if with_pref else None
    result = ConFIG(pref_vector=pref_vector)(matrix)
    torch.testing.assert_close(result, _reference_config(matrix, pref_vector), rtol=1e-4, atol=1e-4)


def test_matches_svd_pseudo_inverse_on_rank_deficient_rows() -> None:
    basis = randn_(3, 8)
    matrix = torch.cat([basis, randn_(4, 3) @ basis])  # 7 rows of rank 3
    # The rounding of the product makes the float32 matrix of full rank, with singular values of
    # the order of 1e-7: the reference must cut them, as ConFIG does, rather than amplify them.
    expected = _reference_config(matrix, rcond=1e-4)
    torch.testing.assert_close(ConFIG()(matrix), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_pref", [False, True])
def test_equal_cosines_with_independent_rows(with_pref: bool) -> None:
    """``U û ∝ w``: the cosine between ``û`` and each row is proportional to its preference."""
    matrix = randn_(4, 9)
    w = tensor_([1.0, 2.0, 0.5, 3.0]) if with_pref else tensor_([1.0] * 4)
    result = ConFIG(pref_vector=w if with_pref else None)(matrix)
    cosines = torch.nn.functional.cosine_similarity(matrix, result.unsqueeze(0), dim=1)
    ratios = cosines / w
    torch.testing.assert_close(ratios, ratios[0].expand(4), rtol=1e-4, atol=1e-5)
    assert float(ratios[0]) > 0.0


def test_length_is_the_sum_of_projections() -> None:
    matrix = randn_(3, 6)
    result = ConFIG()(matrix)
    direction = result / result.norm()
    torch.testing.assert_close(result.norm(), (matrix @ direction).sum().abs())


def test_zero_matrix_gives_zeros() -> None:
    result = ConFIG()(zeros_(3, 4))
    assert bool(torch.isfinite(result).all())
    torch.testing.assert_close(result, zeros_(4))


def test_zero_row_is_ignored() -> None:
    matrix = randn_(3, 5)
    with_zero = torch.cat([matrix[:1], zeros_(1, 5), matrix[1:]])
    torch.testing.assert_close(ConFIG()(with_zero), ConFIG()(matrix))


@pytest.mark.parametrize("scale", [1e-15, 1e-10, 1e10, 1e15])
def test_direction_does_not_depend_on_the_scale(scale: float) -> None:
    matrix = randn_(3, 5)
    torch.testing.assert_close(ConFIG()(scale * matrix) / scale, ConFIG()(matrix))


def test_linear_under_scaling() -> None:
    matrix = randn_(4, 6)
    c1, c2 = randn_(4).abs() + 0.1, randn_(4).abs() + 0.1

    def aggregate(coefficients: Tensor) -> Tensor:
        result: Tensor = ConFIG()(coefficients.unsqueeze(1) * matrix)
        return result

    result = aggregate(2.0 * c1 + 3.0 * c2)
    torch.testing.assert_close(result, 2.0 * aggregate(c1) + 3.0 * aggregate(c2))


def test_permutation_invariant_with_the_preference() -> None:
    matrix = randn_(5, 4)
    pref_vector = tensor_([1.0, 2.0, 3.0, 4.0, 5.0])
    permutation = torch.tensor([3, 0, 4, 1, 2], device=DEVICE)
    result = ConFIG(pref_vector)(matrix)
    permuted = ConFIG(pref_vector[permutation])(matrix[permutation])
    torch.testing.assert_close(permuted, result)


def test_keeps_dtype_and_device() -> None:
    result = ConFIG()(tensor_(J_BASE))
    assert result.dtype == DTYPE
    assert result.device.type == DEVICE.type


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype: torch.dtype) -> None:
    result = ConFIG()(tensor_(J_BASE, dtype=dtype))
    assert result.dtype == dtype
    torch.testing.assert_close(
        result.float(), tensor_([0.1588, 2.0706, 2.0706], dtype=torch.float32), rtol=0.02, atol=0.02
    )


def test_non_differentiable() -> None:
    matrix = tensor_(J_BASE, requires_grad=True)
    assert not ConFIG()(matrix).requires_grad
    assert not ConFIG.differentiable


def test_pref_vector_should_be_a_vector() -> None:
    with pytest.raises(ValueError, match="`pref_vector`"):
        ConFIG(pref_vector=tensor_([[1.0, 2.0]]))


def test_pref_vector_should_have_one_entry_per_row() -> None:
    aggregator = ConFIG(pref_vector=tensor_([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"`pref_vector`.*2 entries"):
        aggregator(tensor_(J_BASE))


def test_representations() -> None:
    assert repr(ConFIG()) == "ConFIG(pref_vector=None)"
    assert str(ConFIG()) == "ConFIG"
    pref_vector = torch.tensor([1.0, 2.0])
    assert repr(ConFIG(pref_vector)) == "ConFIG(pref_vector=tensor([1., 2.]))"
    assert str(ConFIG(pref_vector)) == "ConFIG([1., 2.])"
    assert ConFIG(pref_vector).pref_vector is pref_vector
    assert ConFIG().pref_vector is None


def test_balanced_opposite_rows_give_zeros() -> None:
    """``w`` orthogonal to the range of ``U`` gives ``b = 0``: the update is 0, not noise."""
    direction = randn_(5)
    matrix = torch.stack([2.0 * direction, -0.5 * direction, 3.0 * direction, -direction])
    torch.testing.assert_close(ConFIG()(matrix), zeros_(5))
    torch.testing.assert_close(ConFIG()(matrix[[1, 3, 0, 2]]), zeros_(5))


def test_nearly_balanced_opposite_rows_are_not_zeroed() -> None:
    direction = randn_(5)
    matrix = torch.stack([2.0 * direction, -0.5 * direction])
    result = ConFIG(pref_vector=tensor_([1.0, 1.01]))(matrix)
    # b = −0.005 u (least squares on [u; −u] b = [1, 1.01]), so û = −u with u the unit direction,
    # and the length is the sum of the projections on û: −2‖d‖ + 0.5‖d‖. The update is 1.5 d.
    torch.testing.assert_close(result, 1.5 * direction, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "J",
    [
        [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]],
        [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]],  # linearly dependent rows
        [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],  # opposite rows: b = 0
        [[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]],  # a zero row
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[3e-8, 1e-8, 0.0], [1e-8, 2e-8, 1e-8]],
    ],
)
@pytest.mark.parametrize("pref", [[1.0, 1.0], [0.2, 3.0]])
def test_two_objectives_in_closed_form_match_the_tensor_path(
    J: list[list[float]], pref: list[float]
) -> None:
    """With two objectives (on the CPU, without autograd), the weights are computed in closed
    form on Python floats: they are those of the tensor path, in float64."""
    matrix = torch.tensor(J, dtype=torch.float64)
    gramian = matrix @ matrix.T
    w = torch.tensor(pref, dtype=torch.float64)
    expected = _config_weights(gramian, w)
    assert_close(_two_objectives(gramian, w), expected, atol=1e-12, rtol=1e-10)


def _rank_deficient(m: int, rank: int) -> list[list[float]]:
    generator = torch.Generator().manual_seed(m + 10 * rank)
    basis = torch.randn(rank, 6, generator=generator, dtype=torch.float64)
    rows = torch.randn(m, rank, generator=generator, dtype=torch.float64) @ basis
    return rows.tolist()


@pytest.mark.parametrize(
    "J",
    [
        torch.randn(3, 5, generator=torch.Generator().manual_seed(0)).tolist(),
        torch.randn(8, 4, generator=torch.Generator().manual_seed(1)).tolist(),  # rank 4 of 8
        _rank_deficient(6, 2),
        [[2.0, 0.0], [-0.5, 0.0], [3.0, 0.0], [-1.0, 0.0]],  # b = 0 for w = 1
        [[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]],  # zero rows
        [[0.0] * 3] * 5,
        [[3e-8, 1e-8, 0.0], [1e-8, 2e-8, 1e-8], [0.0, 1e-8, 5e-8]],
    ],
)
@pytest.mark.parametrize("pref_scale", [None, 2.0])
def test_few_objectives_on_python_floats_match_the_tensor_path(
    J: list[list[float]], pref_scale: float | None
) -> None:
    """With 3 to 8 objectives (on the CPU, without autograd), everything but the
    eigendecomposition is computed on Python floats: the weights are those of the tensor path,
    in float64."""
    matrix = torch.tensor(J, dtype=torch.float64)
    gramian = matrix @ matrix.T
    m = matrix.shape[0]
    w = torch.ones(m, dtype=torch.float64)
    if pref_scale is not None:
        w = w + pref_scale * torch.arange(m, dtype=torch.float64) / m
    expected = _config_weights(gramian, w)
    assert_close(_few_objectives(gramian, w), expected, atol=1e-12, rtol=1e-9)
