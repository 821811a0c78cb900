"""The Gramian helper that computes each symmetric block once."""

from __future__ import annotations

import pytest
import torch

from settings import DEVICE, DTYPE
from torchjd.linalg._matrix import add_gram_, gram
from utils.tensors import randn_


@pytest.mark.parametrize(("m", "n"), [(3, 5), (64, 4096), (97, 2000), (128, 1100), (200, 700)])
def test_gram_is_the_gramian(m: int, n: int) -> None:
    """Small products take one GEMM; large ones (here from 64 rows) are split in row blocks,
    including odd numbers of rows."""
    matrix = randn_(m, n)
    expected = matrix.double() @ matrix.double().T
    result = gram(matrix)
    assert result.dtype == DTYPE
    assert result.device.type == DEVICE.type
    torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-4 * n**0.5)
    torch.testing.assert_close(result, result.T)
    accumulated = torch.ones(m, m, device=DEVICE, dtype=DTYPE)
    add_gram_(accumulated, matrix)
    torch.testing.assert_close(accumulated.double(), expected + 1.0, rtol=1e-5, atol=1e-4 * n**0.5)


def test_gram_is_differentiable() -> None:
    matrix = randn_(128, 1100).requires_grad_()
    (grad,) = torch.autograd.grad(gram(matrix).sum(), [matrix])
    torch.testing.assert_close(grad, 2 * matrix.sum(dim=0).expand(128, -1).detach())
