"""Cholesky factorisation and solves of small symmetric matrices, in plain Python floats.

For a few dozen rows on the CPU, factorising a matrix read once with ``tolist()`` costs fewer
microseconds than the tensor operations around a LAPACK call (each costs tens of microseconds
when caches are cold, as after a garbage collection in a training loop). The loops are written
out rather than as ``sum`` over generators, which allocate a frame per inner product.
"""

from __future__ import annotations

import math

# Where the smallest eigenvalue is provably above this many times ``pinv``'s cutoff, no eigenvalue
# is cut, even after the rounding of a computed decomposition, so that ``G⁺ = G⁻¹``.
CUTOFF_MARGIN = 10.0


def cholesky(G: list[list[float]], index: list[int]) -> list[list[float]] | None:
    """The lower factor ``L`` of ``G[index][:, index] = L Lᵀ``, or ``None`` when a pivot is not
    positive (the submatrix is not positive definite, in floating point) or not a number.
    """
    n = len(index)
    L = [[0.0] * n for _ in range(n)]
    for a in range(n):
        row_a, g_a = L[a], G[index[a]]
        for b in range(a):
            row_b = L[b]
            s = g_a[index[b]]
            for k in range(b):
                s -= row_a[k] * row_b[k]
            row_a[b] = s / row_b[b]
        s = g_a[index[a]]
        for k in range(a):
            s -= row_a[k] * row_a[k]
        if not s > 0.0:  # (also NaN)
            return None
        row_a[a] = math.sqrt(s)
    return L


def cholesky_solve(L: list[list[float]], rhs: list[float]) -> list[float]:
    """The solution ``x`` of ``L Lᵀ x = rhs``, by forward and backward substitution."""
    n = len(rhs)
    w = [0.0] * n
    for a in range(n):
        row_a = L[a]
        s = rhs[a]
        for k in range(a):
            s -= row_a[k] * w[k]
        w[a] = s / row_a[a]
    x = [0.0] * n
    for a in range(n - 1, -1, -1):
        s = w[a]
        for k in range(a + 1, n):
            s -= L[k][a] * x[k]
        x[a] = s / L[a][a]
    return x


def smallest_eigenvalue_exceeds(L: list[list[float]], trace: float, threshold: float) -> bool:
    """Whether the smallest eigenvalue ``λ_1`` of ``L Lᵀ`` (of trace ``trace``) is provably above
    ``threshold``, from one of two lower bounds.

    - From the determinant and the trace: with ``λ_1 ≤ … ≤ λ_n``, ``det = λ_1 Π_{i>1} λ_i`` and,
      by the inequality of arithmetic and geometric means, ``Π_{i>1} λ_i ≤ (trace / (n-1))^(n-1)``,
      so ``λ_1 ≥ det · ((n-1) / trace)^(n-1)``. Free from the factor, and within a factor ``e``
      of ``λ_1`` for a clustered spectrum, but loose for a spread one.
    - Otherwise from ``trace(G⁻¹) = Σ 1/λ_i ≥ 1/λ_1``, that is ``λ_1 ≥ 1 / ‖L⁻¹‖_F²``: within a
      factor ``n`` always, and tight for a spread spectrum; it costs a triangular inverse.
    """
    n = len(L)
    log_bound = 0.0  # (in logarithms, so that no scale overflows)
    for a in range(n):
        log_bound += 2.0 * math.log(L[a][a])
    if n > 1:
        log_bound += (n - 1) * math.log((n - 1) / trace)
    if log_bound > math.log(threshold):
        return True
    inverse_trace = 0.0
    for j in range(n):  # column j of L⁻¹, by forward substitution (zero above the diagonal)
        x = [0.0] * n
        x[j] = 1.0 / L[j][j]
        inverse_trace += x[j] * x[j]
        for a in range(j + 1, n):
            row_a = L[a]
            s = 0.0
            for k in range(j, a):
                s -= row_a[k] * x[k]
            x[a] = s / row_a[a]
            inverse_trace += x[a] * x[a]
    return 1.0 / inverse_trace > threshold
