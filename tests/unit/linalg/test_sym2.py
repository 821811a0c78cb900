"""The closed-form 2×2 symmetric eigendecomposition and pseudo-inverse, against LAPACK."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from torchjd.linalg._sym2 import eigh2, pinv2

_MATRICES = [
    [[2.0, 0.0], [0.0, 1.0]],  # diagonal, unordered
    [[1.0, 0.0], [0.0, 3.0]],
    [[18.0, -22.0], [-22.0, 38.0]],
    [[1.0, 1.0], [1.0, 1.0]],  # rank 1
    [[4.0, -2.0], [-2.0, 1.0]],  # rank 1, opposite rows
    [[1e-20, 1e-20], [1e-20, 3e-20]],  # tiny scale
    [[1e15, 3e14], [3e14, 2e14]],  # large scale
    [[0.0, 0.0], [0.0, 0.0]],
    [[1.0, 2.0], [2.0, -3.0]],  # indefinite
]


@pytest.mark.parametrize("matrix", _MATRICES)
def test_eigh2_matches_lapack(matrix: list[list[float]]) -> None:
    (a, b), (_, c) = matrix
    values, vectors = eigh2(a, b, c)
    expected_values = torch.linalg.eigvalsh(torch.tensor(matrix, dtype=torch.float64))
    scale = max(abs(v) for row in matrix for v in row) or 1.0
    assert_close(
        torch.tensor(values, dtype=torch.float64), expected_values, atol=1e-15 * scale, rtol=0
    )
    V = torch.tensor(vectors, dtype=torch.float64).T  # eigenvectors as columns
    assert_close(V.T @ V, torch.eye(2, dtype=torch.float64), atol=1e-15, rtol=0)
    A = torch.tensor(matrix, dtype=torch.float64)
    assert_close(
        V @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ V.T,
        A,
        atol=1e-15 * scale,
        rtol=0,
    )


@pytest.mark.parametrize("matrix", _MATRICES)
def test_pinv2_matches_torch(matrix: list[list[float]]) -> None:
    (a, b), (_, c) = matrix
    p, q, r = pinv2(a, b, c, rtol=2 * torch.finfo(torch.float64).eps)
    expected = torch.linalg.pinv(torch.tensor(matrix, dtype=torch.float64))
    scale = float(expected.abs().max()) or 1.0
    assert_close(
        torch.tensor([[p, q], [q, r]], dtype=torch.float64), expected, atol=1e-12 * scale, rtol=0
    )
