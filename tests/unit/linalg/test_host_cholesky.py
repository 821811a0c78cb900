from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from torchjd.linalg._host_cholesky import cholesky, cholesky_solve, smallest_eigenvalue_exceeds


def _spd(m: int, condition: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=torch.float64)).Q
    eigenvalues = torch.logspace(0, -math.log10(condition), m, dtype=torch.float64)
    matrix = (Q * eigenvalues) @ Q.T
    symmetric: torch.Tensor = (matrix + matrix.T) / 2
    return symmetric


@pytest.mark.parametrize("m", [1, 2, 5, 12])
def test_factor_and_solve_match_lapack(m: int) -> None:
    G = _spd(m, 1e3, seed=m)
    L = cholesky(G.tolist(), list(range(m)))
    assert L is not None
    assert_close(torch.tensor(L, dtype=torch.float64), torch.linalg.cholesky(G))
    rhs = torch.arange(1.0, m + 1.0, dtype=torch.float64)
    x = cholesky_solve(L, rhs.tolist())
    assert_close(torch.tensor(x, dtype=torch.float64), torch.linalg.solve(G, rhs))


def test_factor_of_a_principal_submatrix() -> None:
    G = _spd(6, 10.0, seed=0)
    index = [4, 1, 3]
    L = cholesky(G.tolist(), index)
    assert L is not None
    sub = G[index][:, index]
    assert_close(torch.tensor(L, dtype=torch.float64) @ torch.tensor(L, dtype=torch.float64).T, sub)


@pytest.mark.parametrize(
    "G",
    [
        [[1.0, 2.0], [2.0, 4.0]],  # singular: a zero pivot
        [[1.0, 0.0], [0.0, -1.0]],
        [[0.0, 0.0], [0.0, 0.0]],
        [[1.0, 0.0], [0.0, math.nan]],
    ],
)
def test_factor_declines_matrices_that_are_not_positive_definite(G: list[list[float]]) -> None:
    assert cholesky(G, [0, 1]) is None


@pytest.mark.parametrize("m", [1, 2, 4, 9, 20])
@pytest.mark.parametrize("condition", [1.0, 10.0, 1e4, 1e9])
@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e14])
def test_smallest_eigenvalue_bounds_are_lower_bounds(
    m: int, condition: float, scale: float
) -> None:
    """True just below ``λ_min / m`` (the weaker bound loses at most a factor ``m``), false above
    ``λ_min`` (by more than the rounding of the factor, eps times the condition number)."""
    G = scale * _spd(m, condition, seed=m)
    L = cholesky(G.tolist(), list(range(m)))
    assert L is not None
    trace = float(G.diagonal().sum())
    smallest = float(torch.linalg.eigvalsh(G)[0])
    assert smallest_eigenvalue_exceeds(L, trace, 0.99 * smallest / m)
    rounding = 100 * torch.finfo(torch.float64).eps * condition
    assert not smallest_eigenvalue_exceeds(L, trace, smallest * (1 + rounding))
