"""The families of input matrices shared by the family-wide aggregator tests.

Each family is a ``dict`` from a readable name (used in test ids) to a matrix on the test device and
dtype. All matrices are drawn at import time, in float64 on the CPU, from one local
:class:`torch.Generator` seeded with 0, and only then cast: the same matrices (up to the cast) are
used on every device and dtype, and the global RNG is left untouched.

Sizes are small on purpose: the whole family test suite must run in about a minute on two cores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from settings import DEVICE, DTYPE

from ._matrix_samplers import (
    ConflictingSampler,
    MatrixSampler,
    NonWeakSampler,
    NormalSampler,
    StrictlyWeakSampler,
    StrongSampler,
)

_generator = torch.Generator().manual_seed(0)


def _cast(matrix: Tensor) -> Tensor:
    return matrix.to(device=DEVICE, dtype=DTYPE)


def _sample(samplers: list[MatrixSampler]) -> dict[str, Tensor]:
    family = {}
    for sampler in samplers:
        prefix = type(sampler).__name__.removesuffix("Sampler").lower()
        name = f"{prefix}_{sampler.m}x{sampler.n}_r{sampler.rank}"
        family[name] = _cast(sampler(_generator))
    return family


_NORMAL_SHAPES = [
    (1, 1, 1),
    (1, 5, 1),
    (2, 5, 2),
    (4, 3, 1),
    (4, 3, 2),
    (4, 3, 3),
    (5, 8, 5),
    (9, 11, 5),
    (9, 11, 9),
    (20, 100, 3),
    (20, 100, 20),
]
_STRONG_SHAPES = [(2, 3, 1), (4, 3, 2), (4, 3, 3), (9, 11, 5), (9, 11, 8), (20, 100, 19)]
_STRICTLY_WEAK_SHAPES = [(2, 3, 1), (4, 3, 2), (4, 3, 3), (9, 11, 5), (9, 11, 8), (20, 100, 19)]
_CONFLICTING_SHAPES = [(2, 3), (3, 3), (5, 8), (9, 11), (20, 100)]
_NON_WEAK_SHAPES = [(2, 3, 1), (4, 3, 1), (4, 3, 3), (9, 11, 5), (9, 11, 9), (20, 100, 20)]

normal_matrices = _sample([NormalSampler(m, n, r) for m, n, r in _NORMAL_SHAPES])
"""Generic matrices of controlled rank, from ``1 x 1`` to ``20 x 100``."""

zero_matrices = {f"zero_{m}x{n}": _cast(torch.zeros(m, n)) for m, n in [(1, 1), (4, 3), (9, 11)]}

strong_matrices = _sample([StrongSampler(m, n, r) for m, n, r in _STRONG_SHAPES])
"""Strongly stationary: some ``v > 0`` has ``vᵀJ = 0``."""

strictly_weak_matrices = _sample(
    [StrictlyWeakSampler(m, n, r) for m, n, r in _STRICTLY_WEAK_SHAPES]
)
"""Weakly stationary (some ``v ≥ 0, v ≠ 0`` has ``vᵀJ = 0``) but not strongly stationary."""

non_weak_matrices = _sample([NonWeakSampler(m, n, r) for m, n, r in _NON_WEAK_SHAPES])
"""Not weakly stationary: some direction ``d`` has ``J d > 0``."""

conflicting_matrices = _sample([ConflictingSampler(m, n, m) for m, n in _CONFLICTING_SHAPES])
"""Full-row-rank matrices with strongly conflicting rows (condition number at most 16)."""

SCALES = [0.0, 1e-10, 1e3, 1e5, 1e10, 1e15]
_scale_bases = _sample([NormalSampler(4, 3, 2), NormalSampler(9, 11, 9)])
scaled_matrices = {
    f"{name}_x{scale:g}": scale * matrix
    for name, matrix in _scale_bases.items()
    for scale in SCALES
}
"""Generic matrices multiplied by scales from 0 to 1e15 (the Gramian stays finite in float32)."""


def _with_duplicated_rows(matrix: Tensor, rows: list[int]) -> Tensor:
    return matrix[rows]


_duplicate_bases = _sample([NormalSampler(4, 3, 3), NormalSampler(9, 11, 9)])
duplicated_row_matrices = {
    "dup_4x3_row0x2": _with_duplicated_rows(_duplicate_bases["normal_4x3_r3"], [0, 1, 2, 0, 3]),
    "dup_9x11_rows012x2": _with_duplicated_rows(
        _duplicate_bases["normal_9x11_r9"], [0, 1, 2, 3, 0, 4, 5, 1, 6, 7, 2, 8]
    ),
}
"""Matrices in which some rows appear twice (exactly)."""

NEAR_ZERO_FACTOR = 1e-6
_near_zero_bases = _sample([NormalSampler(4, 3, 3), NormalSampler(9, 11, 9)])
near_zero_row_matrices = {}
for _name, _matrix in _near_zero_bases.items():
    _matrix = _matrix.clone()
    _matrix[1] *= NEAR_ZERO_FACTOR
    near_zero_row_matrices[f"{_name}_tiny_row1"] = _matrix
"""Generic matrices whose second row is scaled down by ``1e-6``."""

non_strong_matrices = {**strictly_weak_matrices, **non_weak_matrices}
"""Matrices that are not strongly stationary (no ``v > 0`` has ``vᵀJ = 0``)."""

typical_matrices = {
    **normal_matrices,
    **zero_matrices,
    **strong_matrices,
    **strictly_weak_matrices,
    **non_weak_matrices,
    **conflicting_matrices,
    **duplicated_row_matrices,
    **near_zero_row_matrices,
}
"""Every family at unit scale."""

all_matrices = {**typical_matrices, **scaled_matrices}

well_posed_matrices = {
    name: matrix for name, matrix in typical_matrices.items() if name not in near_zero_row_matrices
}
"""The typical matrices whose non-zero singular values are within a factor 16 of each other.

Used to compare two computations that are equal in exact arithmetic (``A(J[π])`` and ``A(J)``,
...). A near-zero row makes the Gramian's condition number about ``1e12``: methods that invert the
Gramian (pseudo-inverse, ``Λ^{-1/2}``) are then only accurate to ``1e12·eps``, so such identities
cannot be checked there at the rounding tolerance.
"""

small_matrices = {
    name: matrix
    for name, matrix in well_posed_matrices.items()
    if matrix.shape[0] <= 9 and matrix.shape[1] <= 11
}
"""The well-posed matrices up to ``9 x 11``: used by the tests that make several calls."""

representative_matrices = {
    name: well_posed_matrices[name]
    for name in [
        "normal_1x1_r1",
        "normal_4x3_r2",
        "normal_9x11_r9",
        "zero_4x3",
        "strong_4x3_r2",
        "strictlyweak_9x11_r5",
        "conflicting_9x11_r9",
        "dup_4x3_row0x2",
    ]
}
"""One matrix of each kind: used by the interface tests, which need no statistics."""

well_conditioned_matrices = {
    name: typical_matrices[name]
    for name in [
        "normal_1x1_r1",
        "normal_4x3_r3",
        "normal_9x11_r9",
        "nonweak_9x11_r9",
        "conflicting_5x8_r5",
    ]
}
"""Full-rank matrices with no zero or tiny row: their Gramians have simple non-zero eigenvalues,
so every differentiable method has finite gradients."""
