"""The dual-cone projections of a few objectives, in plain Python floats.

With ``m ≤ 8`` objectives (the usual multi-task case), a projection costs a few hundred
floating-point operations, while each tensor operation costs microseconds of overhead: the same
block principal pivoting as in ``_active_set.py``, run on Python floats (float64), is several
times faster on the CPU than the batched tensor version. (Where the number of violations stops
decreasing, this version keeps Kim & Park's backup rule, single swaps, which with so few
variables take a few steps; the tensor version switches to ``_monotone.py`` there.)
"""

from __future__ import annotations

import math

from ._active_set import _FULL_EXCHANGE_BUDGET, _TOL_FACTOR
from ._dual_cone import ProjectionError
from ._host_cholesky import cholesky, cholesky_solve

MAX_SMALL_M = 8
_EPS = 2.0**-52  # float64


def project_small(U: list[list[float]], G: list[list[float]], max_iter: int) -> list[list[float]]:
    """Return, for each row ``u`` of ``U``, the ``v`` solving ``min vᵀ G v  s.t.  v ≥ u``.

    ``G`` must be symmetric positive definite on the free sets met (as in ``_active_set.py``).
    """
    m = len(G)
    scale = max(G[j][j] for j in range(m)) * _TOL_FACTOR * math.sqrt(m) * _EPS
    return [_project_one(u, G, scale, max_iter) for u in U]


def _project_one(u: list[float], G: list[list[float]], scale: float, max_iter: int) -> list[float]:
    m = len(u)
    # Sums over the non-zero entries only: u is often a scaled basis vector (UPGrad), and z is
    # zero off the free set. The products are taken by rows of G (symmetric), as the batched
    # solver's ``U @ G`` and ``z @ G``; element-wise over ``zip`` rather than ``sum`` over
    # generators, each of which costs a frame per entry (UPGrad measured 0.81× for m = 4 and 8).
    c = [0.0] * m
    for i in range(m):
        if u[i] != 0.0:
            c = _axpy(c, u[i], G[i])
    u_max = max(map(abs, u))
    z = [0.0] * m
    free = [False] * m
    best, budget = m + 1, _FULL_EXCHANGE_BUDGET
    for _ in range(max_iter + 1):
        y = c
        for i in range(m):
            if free[i]:
                y = _axpy(y, z[i], G[i])
        tol = scale * max(u_max, max(map(abs, z)))
        violators = [j for j in range(m) if (z[j] * G[j][j] < -tol if free[j] else y[j] < -tol)]
        if not violators:
            return [a + max(b, 0.0) for a, b in zip(u, z, strict=True)]
        # Kim & Park's exchange: all violators while their number decreases (or for a few
        # more tries), else only the last one (Murty's backup rule, which makes it finite).
        if len(violators) < best:
            best, budget = len(violators), _FULL_EXCHANGE_BUDGET
        elif budget >= 1:
            budget -= 1
        else:
            violators = violators[-1:]
        for j in violators:
            free[j] = not free[j]
        z = _solve_free(G, c, free)
    raise ProjectionError(
        f"The dual-cone projection did not converge in max_iter={max_iter} iterations. This "
        "happens only with an ill-conditioned Gramian: increase `reg_eps` or `max_iter`."
    )


def _axpy(y: list[float], a: float, x: list[float]) -> list[float]:
    """``y + a x``, as a new list."""
    return [y_j + a * x_j for y_j, x_j in zip(y, x, strict=True)]


def _solve_free(G: list[list[float]], c: list[float], free: list[bool]) -> list[float]:
    """Solve ``G_FF z_F = -c_F`` by Cholesky, with ``z = 0`` off the free set ``F``."""
    index = [j for j in range(len(free)) if free[j]]
    L = cholesky(G, index)
    if L is None:
        raise ProjectionError(
            "The regularised Gramian is not positive definite, so the dual-cone "
            "projection has no unique solution. Use a positive `reg_eps` (the "
            "default is 1e-4) and a symmetric positive semi-definite Gramian."
        )
    x = cholesky_solve(L, [-c[j] for j in index])
    z = [0.0] * len(free)
    for a, j in enumerate(index):
        z[j] = x[a]
    return z
