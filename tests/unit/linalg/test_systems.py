"""The compacted linear systems of the CPU active-set solver, against one solve per row."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import torchjd.linalg._systems as systems


def _expected(M: Tensor, rhs: Tensor, S: Tensor) -> Tensor:
    x = torch.zeros_like(rhs)
    for row in range(S.shape[0]):
        index = S[row].nonzero().squeeze(1)
        if index.numel() > 0:
            block = M[index][:, index]
            x[row, index] = torch.linalg.solve(block, rhs[row, index])
    return x


@pytest.mark.parametrize("positive_definite", [True, False])
@pytest.mark.parametrize(("sizes", "n_buckets"), [((1, 50), 3), ((40, 41), 1), ((0, 20), 1)])
def test_set_systems_match_one_solve_per_row(
    monkeypatch: pytest.MonkeyPatch, sizes: tuple[int, int], n_buckets: int, positive_definite: bool
) -> None:
    """Rows with sets of very different sizes are solved in buckets of similar sizes; the
    result is the same as solving each row's system on its own, with either padding."""
    g = torch.Generator().manual_seed(0)
    m, k = 64, 48
    A = torch.randn(m, 2 * m, generator=g, dtype=torch.float64)
    M = A @ A.T / m + 0.1 * torch.eye(m, dtype=torch.float64)
    low, high = sizes
    S = torch.zeros(k, m, dtype=torch.bool)
    for row in range(k):
        size = low + (high - low) * row // (k - 1)
        S[row, torch.randperm(m, generator=g)[:size]] = True
    rhs = torch.randn(k, m, generator=g, dtype=torch.float64)
    widths: list[int] = []
    original = systems._SetSystems._solve_padded

    def recording(self: systems._SetSystems, rhs: Tensor, S: Tensor, width: int) -> Tensor:
        widths.append(width)
        return original(self, rhs, S, width)

    monkeypatch.setattr(systems._SetSystems, "_solve_padded", recording)
    x = systems._SetSystems(M, positive_definite).solve(rhs, S)
    torch.testing.assert_close(x, _expected(M, rhs, S), rtol=1e-10, atol=1e-12)
    assert len(widths) == (n_buckets if high > 0 else 0)


def test_singular_matrix_is_solved_on_its_regular_sets() -> None:
    """An ``M`` that is not positive definite but whose blocks on the sets are is solved exactly
    when it is not declared positive definite: padding from ``M`` itself would make the
    factorisation fail."""
    g = torch.Generator().manual_seed(1)
    m, k = 40, 16
    A = torch.randn(m, 2 * m, generator=g, dtype=torch.float64)
    A[1] = A[0]  # two equal rows (a duplicated objective): M is singular...
    M = A @ A.T
    M[1, 1] -= 1e-3 * M[0, 0]  # ...and its block on {0, 1} indefinite, whatever the rounding
    S = torch.zeros(k, m, dtype=torch.bool)
    S[:, 0] = True  # never with index 1, which is the first index a row is padded with
    for row in range(k):
        S[row, 2 + torch.randperm(m - 2, generator=g)[: row % 12]] = True
    rhs = torch.randn(k, m, generator=g, dtype=torch.float64)
    x = systems._SetSystems(M, positive_definite=False).solve(rhs, S)
    torch.testing.assert_close(x, _expected(M, rhs, S), rtol=1e-8, atol=1e-10)
    with pytest.raises(RuntimeError, match="not positive definite"):
        systems._SetSystems(M, positive_definite=True).solve(rhs, S)


@pytest.mark.parametrize("positive_definite", [True, False])
def test_set_systems_are_differentiable(positive_definite: bool) -> None:
    """Gradients flow through the padded solves (the padding's masking is out of place), with
    respect to a factor of ``M`` (a symmetric parametrisation, as the factorisation reads one
    triangle)."""
    g = torch.Generator().manual_seed(2)
    m, k = 12, 6
    B = torch.randn(m, 2 * m, generator=g, dtype=torch.float64, requires_grad=True)
    S = torch.rand(k, m, generator=g) < 0.4
    S[:, 0] = True
    rhs = torch.randn(k, m, generator=g, dtype=torch.float64)

    def solve(B: Tensor) -> Tensor:
        M = B @ B.T / (2 * m) + 0.1 * torch.eye(m, dtype=torch.float64)
        return systems._SetSystems(M, positive_definite).solve(rhs, S)

    assert torch.autograd.gradcheck(solve, (B,))


@pytest.mark.parametrize("width_fraction", [0.1, 0.3, 0.5, 1.0])
def test_order_lists_the_set_then_the_rest(width_fraction: float) -> None:
    """Both ways of ordering (``topk`` for narrow systems, a cumulative sum for wide ones) give
    each row's set in increasing order, then the other indices in increasing order."""
    g = torch.Generator().manual_seed(3)
    k, m = 40, 96
    S = torch.rand(k, m, generator=g) < width_fraction * torch.rand(k, 1, generator=g)
    S[0] = False
    S[1] = True
    width = max(int(S.sum(dim=-1).max()), 1)
    order, valid = systems._order(S, width, torch.arange(2 * m))
    for row in range(k):
        members = S[row].nonzero().squeeze(1).tolist()
        others = (~S[row]).nonzero().squeeze(1).tolist()
        assert order[row].tolist() == (members + others)[:width]
        assert valid[row].tolist() == [i < len(members) for i in range(width)]
