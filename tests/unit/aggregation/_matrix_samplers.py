"""Seeded samplers of Jacobian matrices with a controlled rank and stationarity structure.

Every sampler draws ``J = U diag(s) Vᵀ`` where ``U`` ``[m, r]`` and ``V`` ``[n, r]`` have
orthonormal columns and the singular values ``s`` lie in ``[1, 4]``. The rank is therefore exactly
``r`` and the matrix is well conditioned on its row space, which gives the property tests clear
margins. The samplers differ by the column space of ``J`` (the span of ``U``), or equivalently by
its left null space ``N = {v : vᵀJ = 0}``:

- ``NormalSampler``: ``U`` is uniformly random (Haar).
- ``StrongSampler``: ``N`` contains a vector ``v > 0`` (``J`` is strongly stationary: a positive
  combination of the rows vanishes).
- ``StrictlyWeakSampler``: ``N`` contains a vector ``v ≥ 0, v ≠ 0`` but no ``v > 0``. ``N`` lies in
  the hyperplane ``{v : v_k = 0}`` of a random coordinate ``k``, and contains a ``v`` that is
  positive off ``k``.
- ``NonWeakSampler``: ``N`` contains no ``v ≥ 0, v ≠ 0``. ``N`` is orthogonal to a random ``p > 0``,
  so ``pᵀv > 0`` for every such ``v``.

``ConflictingSampler`` is the exception to the ``U diag(s) Vᵀ`` form: it draws full-row-rank
matrices close to a strongly stationary one, whose rows conflict a lot (generic full-rank matrices
have nearly orthogonal rows, which makes the non-conflicting methods trivially equal to the mean).

The draws use a caller-provided :class:`torch.Generator` (never the global RNG) on the CPU in
float64; callers cast the result to the test device and dtype.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

_S_MIN = 1.0
_S_MAX = 4.0


def _randn(*shape: int, generator: torch.Generator) -> Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _orthonormal_columns(matrix: Tensor) -> Tensor:
    """Orthonormal basis of the column span of ``matrix`` (assumed of full column rank)."""
    q: Tensor = torch.linalg.qr(matrix).Q
    return q


def _complement_basis(basis: Tensor, generator: torch.Generator) -> Tensor:
    """Orthonormal basis ``[m, m - k]`` of the orthogonal complement of the span of ``basis``.

    ``basis`` ``[m, k]`` must have full column rank. The QR factorisation of ``[basis, R]`` with a
    random ``R`` ``[m, m - k]`` is complete: its first ``k`` columns span ``basis`` and the others
    span the complement.
    """
    m, k = basis.shape
    full = torch.cat([basis, _randn(m, m - k, generator=generator)], dim=1)
    q: Tensor = torch.linalg.qr(full).Q
    return q[:, k:]


class MatrixSampler(ABC):
    """Draws ``[m, n]`` matrices of rank ``rank`` whose column space has a given structure."""

    def __init__(self, m: int, n: int, rank: int) -> None:
        if not 0 <= rank <= min(m, n):
            raise ValueError(f"rank should be in [0, min(m, n)]. Found {m=}, {n=}, {rank=}.")
        self.m = m
        self.n = n
        self.rank = rank

    @abstractmethod
    def _column_basis(self, generator: torch.Generator) -> Tensor:
        """Orthonormal basis ``[m, rank]`` of the column space of the sampled matrix."""

    def __call__(self, generator: torch.Generator) -> Tensor:
        """Draw one float64 CPU matrix ``[m, n]`` of rank ``rank``."""
        u = self._column_basis(generator)
        v = _orthonormal_columns(_randn(self.n, self.rank, generator=generator))
        s = _S_MIN + (_S_MAX - _S_MIN) * torch.rand(
            self.rank, generator=generator, dtype=torch.float64
        )
        return (u * s) @ v.T

    def __repr__(self) -> str:
        return f"{type(self).__name__}(m={self.m}, n={self.n}, rank={self.rank})"


class NormalSampler(MatrixSampler):
    """Uniformly random column space: a generic matrix of the given rank."""

    def _column_basis(self, generator: torch.Generator) -> Tensor:
        return _orthonormal_columns(_randn(self.m, self.rank, generator=generator))


class StrongSampler(MatrixSampler):
    """Strongly stationary matrices: some ``v > 0`` has ``vᵀJ = 0``. Needs ``rank < m``."""

    def __init__(self, m: int, n: int, rank: int) -> None:
        super().__init__(m, n, rank)
        if rank >= m:
            raise ValueError(f"A strongly stationary matrix needs rank < m. Found {m=}, {rank=}.")

    def _column_basis(self, generator: torch.Generator) -> Tensor:
        positive = 0.5 + torch.rand(self.m, 1, generator=generator, dtype=torch.float64)
        others = _randn(self.m, self.m - self.rank - 1, generator=generator)
        null_basis = torch.cat([positive, others], dim=1)
        return _complement_basis(null_basis, generator)


class StrictlyWeakSampler(MatrixSampler):
    """Weakly but not strongly stationary matrices. Needs ``1 <= rank < m``.

    The left null space lies in ``{v : v_k = 0}`` (so it has no positive vector) and contains a
    ``v`` that is positive on every other coordinate.
    """

    def __init__(self, m: int, n: int, rank: int) -> None:
        super().__init__(m, n, rank)
        if not 1 <= rank < m:
            raise ValueError(f"A strictly weak matrix needs 1 <= rank < m. Found {m=}, {rank=}.")

    def _column_basis(self, generator: torch.Generator) -> Tensor:
        k = int(torch.randint(self.m, (1,), generator=generator))
        non_negative = 0.5 + torch.rand(self.m, 1, generator=generator, dtype=torch.float64)
        non_negative[k] = 0.0
        others = _randn(self.m, self.m - self.rank - 1, generator=generator)
        others[k] = 0.0
        null_basis = torch.cat([non_negative, others], dim=1)
        return _complement_basis(null_basis, generator)


class NonWeakSampler(MatrixSampler):
    """Matrices that are not even weakly stationary: no ``v ≥ 0, v ≠ 0`` has ``vᵀJ = 0``.

    Equivalently (Gordan), some direction ``d`` has ``J d > 0``. Needs ``rank >= 1``.
    """

    def __init__(self, m: int, n: int, rank: int) -> None:
        super().__init__(m, n, rank)
        if rank < 1:
            raise ValueError(f"A non-weak matrix needs rank >= 1. Found {rank=}.")

    def _column_basis(self, generator: torch.Generator) -> Tensor:
        positive = 0.5 + torch.rand(self.m, 1, generator=generator, dtype=torch.float64)
        # The null space is a random subspace of p⊥: project random vectors onto p⊥.
        others = _randn(self.m, self.m - self.rank, generator=generator)
        others = others - positive @ (positive.T @ others) / (positive.T @ positive)
        # The column space is the complement of the null space, so it contains p.
        return _complement_basis(_orthonormal_columns(others), generator)


class ConflictingSampler(MatrixSampler):
    """Full-row-rank matrices whose rows conflict strongly. Needs ``rank = m <= n``.

    With a random ``p > 0`` and ``P = I − p pᵀ/‖p‖²`` (so that ``pᵀP = 0``: the rows of ``P`` are
    strongly stationary), ``A = P + δ p pᵀ/‖p‖²`` has singular values ``1`` (``m − 1`` times) and
    ``δ = 0.25``. The sample is ``diag(c) A Wᵀ``, with ``W`` ``[n, m]`` orthonormal and row scales
    ``c`` in ``[0.5, 2]``: its condition number is at most 16, and every pair of rows conflicts,
    since ``(A Aᵀ)_ij = −(1 − δ²) p_i p_j / ‖p‖² < 0`` for ``i ≠ j``.
    """

    _DELTA = 0.25

    def __init__(self, m: int, n: int, rank: int) -> None:
        super().__init__(m, n, rank)
        if rank != m:
            raise ValueError(f"A conflicting matrix has full row rank. Found {m=}, {rank=}.")

    def _column_basis(self, generator: torch.Generator) -> Tensor:
        raise NotImplementedError  # not used: __call__ is overridden

    def __call__(self, generator: torch.Generator) -> Tensor:
        p = 0.5 + torch.rand(self.m, 1, generator=generator, dtype=torch.float64)
        projector = p @ p.T / (p.T @ p)
        a = torch.eye(self.m, dtype=torch.float64) - (1.0 - self._DELTA) * projector
        w = _orthonormal_columns(_randn(self.n, self.m, generator=generator))
        c = 0.5 + 1.5 * torch.rand(self.m, 1, generator=generator, dtype=torch.float64)
        return c * a @ w.T
