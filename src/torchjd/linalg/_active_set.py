"""Exact, batched dual-cone projections: block principal pivoting on the Gramian.

For every row ``u`` of ``U`` we solve ``min_v vᵀ G v  s.t.  v ≥ u``. With ``v = u + z`` this is
the non-negative least-squares problem, in Gram form,

    min_{z ≥ 0}  ½ zᵀ G z + zᵀ c,      c = G u,

whose KKT conditions are ``z ≥ 0``, ``y = G z + c = G v ≥ 0`` and ``z ⊙ y = 0``. ``y_j < 0``
means that the current direction ``Jᵀ v`` conflicts with objective ``j``.

The solver is the block principal pivoting method for NNLS (Kim & Park, SIAM J. Sci. Comput.
33(6), 2011): guess the set ``F`` of free variables (``z_F`` solves ``G_FF z_F = -c_F``, the other
``z`` are 0) and swap every variable that violates the KKT conditions. In practice it needs 1 to
6 solves: the first guess, ``F = {j : c_j < 0}``, is already the set of objectives that conflict
with ``u``, and a row of ``U`` that conflicts with no objective is solved with no work at all.
When the number of violations of a row stops decreasing (nearly degenerate problems: a Gramian
of rank about ``m/2`` with a small ``reg_eps``), the row is finished by Lawson & Hanson's
monotone method (``_monotone.py``) from the non-negative part of its iterate, instead of Kim &
Park's backup rule (Murty's single swaps), which needed thousands of steps there (on the CPU;
accelerators keep the backup rule, see ``_pivot_masked``).

All right-hand sides are processed at once. On the CPU, where reading a value is free, the loop
stops when every row is solved, converged rows are dropped, and with more than 32 objectives each
linear system is compacted to the size of its bucket's largest free set (``_systems.py``). On
accelerators, the systems keep their full ``[m, m]`` size with masks and the loop runs a fixed
number of iterations, so that nothing is read back by the host.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchjd._device_assert import device_assert

from ._dual_cone import ProjectionError
from ._monotone import Solve, lawson_hanson
from ._systems import (
    MAX_MASKED_ENTRIES,
    MAX_MASKED_M,
    CompactSolver,
    MaskedSolver,
    solve_masked,
)

# How many full exchanges Kim & Park's method tries without progress before the backup rule.
_FULL_EXCHANGE_BUDGET = 3
# Tolerance factor on the rounding noise of ``y = G v``, ``√m·eps·max(G)·‖v‖``. A violation
# smaller than this is noise; a larger tolerance would stop at a less exact solution.
_TOL_FACTOR = 4.0


def project_onto_dual_cone(
    U: Tensor, G: Tensor, max_iter: int, *, well_conditioned: bool = False
) -> Tensor:
    """Return ``V`` such that each row ``v`` solves ``min vᵀ G v  s.t.  v ≥ u``.

    Args:
        U: The vectors to project, of shape ``[k, m]``.
        G: A symmetric positive-definite matrix ``[m, m]`` (positive semi-definite is enough for
            the rows that need no solve).
        max_iter: The number of pivoting iterations allowed (run in full on accelerators).
        well_conditioned: Whether ``G`` is known to be far from singular (a condition number of
            at most ~1e7, as ``Ĝ = G/tr(G) + reg_eps·I`` with ``reg_eps ≥ 1e-7``). Only then are
            rows with large free sets solved through ``G⁻¹`` (see ``_systems.CompactSolver``).
    """
    # Row i of c is (G u_i)ᵀ, since G is symmetric.
    z = _offsets(U, U @ G, U.abs().amax(dim=-1), G, max_iter, well_conditioned)
    return U if z is None else U + z.clamp(min=0.0)


def sum_of_diagonal_projections(
    u: Tensor, G: Tensor, max_iter: int, *, well_conditioned: bool = False
) -> Tensor:
    """Return ``Σ_i v⁽ⁱ⁾``, where ``v⁽ⁱ⁾`` solves ``min vᵀ G v  s.t.  v ≥ u_i e_i`` (UPGrad's
    weights), with the arguments of :func:`project_onto_dual_cone`.

    The same solve as ``project_onto_dual_cone(diag(u), G, ...).sum(dim=0)``, with the products
    of the diagonal ``U`` taken element-wise and the sum over the offsets alone: four fewer
    operations on ``[m, m]`` tensors (one of them a matrix product).
    """
    z = _offsets(torch.diag(u), u.unsqueeze(-1) * G, u.abs(), G, max_iter, well_conditioned)
    return u if z is None else u + z.clamp(min=0.0).sum(dim=0)


def _offsets(
    U: Tensor, c: Tensor, u_max: Tensor, G: Tensor, max_iter: int, well_conditioned: bool
) -> Tensor | None:
    """The ``z = v - u`` of every row (``None`` when every ``z`` is zero), given ``c = U G`` and
    the ``‖u‖_∞`` of each row.

    Raises (or asserts on the device) if the solve does not converge. Negative entries of ``z``,
    below the rounding noise, are left for the caller to clamp.
    """
    if U.device.type == "cpu":
        z, n_failed = _pivot_compact(G, c, U, u_max, max_iter, well_conditioned)
        if n_failed:
            raise ProjectionError(
                f"The dual-cone projection did not converge in max_iter={max_iter} iterations "
                f"for {n_failed} of {U.shape[0]} vectors. This happens only with an "
                "ill-conditioned Gramian: increase `reg_eps` or `max_iter`."
            )
        return z  # None when nothing conflicts with any u: every projection is u itself
    z, converged = _pivot_masked(G, c, U, u_max, max_iter)
    # A device-side assertion reports a failure without making the host wait for the result.
    device_assert(converged.all(), "The dual-cone projection did not converge.")
    return z


class _Noise:
    """The rounding-noise level of ``y = G v``: ``4·√m·eps·max(G)·‖v‖_∞`` for each row.

    A violation smaller than this is noise; a larger tolerance would stop at a less exact
    solution. The constant part is computed once per solve.
    """

    def __init__(self, G: Tensor, u_max: Tensor, split_by_sets: bool = False) -> None:
        eps = torch.finfo(G.dtype).eps
        # Whether the iterates have ``z = 0`` off ``F`` and ``y = 0`` on ``F`` exactly (the CPU
        # solvers), so that each test reads one sum instead of a selection.
        self.split_by_sets = split_by_sets
        # max(diag G) ≥ |G_jk| for a positive semi-definite G. (Negative: tolerances are
        # compared with values below zero.)
        self.neg_scale = G.diagonal().max() * (-_TOL_FACTOR * math.sqrt(G.shape[0]) * eps)
        self.diag = G.diagonal()
        self.u_max = u_max  # ‖u‖_∞ of each row of U

    def violations(self, F: Tensor, z: Tensor, y: Tensor, u_max: Tensor | None = None) -> Tensor:
        """The variables that break the KKT conditions by more than the rounding noise.

        A free ``z_j < 0`` is measured by how much dropping it would change ``y_j``
        (``G_jj z_j``), so that both tests are in the units of ``y``. ``u_max`` holds the
        ``‖u‖_∞`` of the rows that ``F``, ``z`` and ``y`` belong to (default: all of ``U``).
        """
        u_max = self.u_max if u_max is None else u_max
        tol = torch.maximum(u_max, z.abs().amax(dim=-1)).mul_(self.neg_scale).unsqueeze(-1)
        if self.split_by_sets:
            return torch.addcmul(y, z, self.diag) < tol
        return torch.where(F, z * self.diag, y) < tol


def _pivot_compact(
    G: Tensor, c: Tensor, U: Tensor, u_max: Tensor, max_iter: int, well_conditioned: bool = False
) -> tuple[Tensor | None, int]:
    """CPU variant: solve only the unconverged rows, on systems as small as their free sets.

    Returns ``z`` (``None`` if no row needs a solve) and the number of rows that did not
    converge in ``max_iter`` steps. The state of the unconverged rows is kept compacted
    (``*_a``); once rows are dropped, each is written to the output when it converges, so that
    no iteration indexes the full ``[k, m]`` tensors. Rows whose pivoting stalls (where Kim &
    Park would fall back to single swaps) are set aside and finished by the monotone method of
    ``_monotone.py``.
    """
    k = U.shape[0]
    noise = _Noise(G, u_max, split_by_sets=True)  # (see the solvers' `y`)
    # The first iteration in closed form (z = 0, F = ∅, so y = c and every violator enters F):
    # it is the same step as in the loop, with a fraction of the tensor operations.
    F_a = c < (noise.neg_scale * noise.u_max).unsqueeze(-1)
    # The per-row bookkeeping (violator counts, budgets) is in Python lists: reading the counts
    # once per iteration replaces about eight small tensor operations.
    best = F_a.sum(dim=-1).tolist()
    c_a, U_a, u_max_a = c, U, noise.u_max
    # While no row has been dropped, `rows` and `z_out` are None and `z_a` is the whole output.
    rows: Tensor | None = None
    z_out: Tensor | None = None
    if 0 in best:
        kept = [i for i, count in enumerate(best) if count]
        if not kept:
            return None, 0
        z_out = torch.zeros_like(U)  # a row without violator is solved by z = 0
        rows = torch.tensor(kept, device=U.device)
        F_a, c_a, U_a, u_max_a = F_a[rows], c[rows], U[rows], u_max_a[rows]
        best = [best[i] for i in kept]
    budget = [_FULL_EXCHANGE_BUDGET] * len(best)
    m = G.shape[0]
    masked = m <= MAX_MASKED_M and len(best) * m * m <= MAX_MASKED_ENTRIES
    solve = MaskedSolver(G) if masked else CompactSolver(G, well_conditioned)
    stalled = _Stalled()
    z_a, y_a = solve(U_a, c_a, F_a)
    for iteration in range(max_iter):
        V = noise.violations(F_a, z_a, y_a, u_max_a)
        counts = V.sum(dim=-1).tolist()
        n_converged = counts.count(0)
        if n_converged == len(counts):
            if rows is None or z_out is None:
                return z_a, 0  # every row converged, none was dropped
            z_out[rows] = z_a
            return z_out, stalled.finish(solve, noise, z_out, max_iter - iteration)
        # A row swaps all its violators while their number decreases, and for a few more
        # tries; then it has stalled, and is set aside.
        stalling: list[int] = []
        for i, count in enumerate(counts):
            if count < best[i]:
                best[i], budget[i] = count, _FULL_EXCHANGE_BUDGET
            else:
                budget[i] -= 1
                if count and budget[i] < 0:
                    stalling.append(i)
        # Converged rows are dropped once they are the majority: before that, indexing costs
        # more than solving them again (their sets do not change, nor does their solution).
        if stalling or 2 * (len(counts) - n_converged - len(stalling)) <= len(counts):
            if rows is None or z_out is None:
                rows, z_out = torch.arange(k, device=U.device), torch.zeros_like(U)
            converged = _index([i for i, count in enumerate(counts) if not count], U.device)
            z_out[rows[converged]] = z_a[converged]
            if stalling:
                at = _index(stalling, U.device)
                stalled.add(rows[at], U_a[at], c_a[at], z_a[at], u_max_a[at])
                if n_converged + len(stalling) == len(counts):
                    return z_out, stalled.finish(solve, noise, z_out, max_iter - iteration)
            set_aside = set(stalling)
            kept = [i for i, count in enumerate(counts) if count and i not in set_aside]
            active = _index(kept, U.device)
            rows, V, c_a, U_a, u_max_a = (
                rows[active],
                V[active],
                c_a[active],
                U_a[active],
                u_max_a[active],
            )
            F_a = F_a[active]
            best, budget = [best[i] for i in kept], [budget[i] for i in kept]
        F_a = F_a ^ V
        del z_a, y_a  # the next solve's working set can reuse their memory
        z_a, y_a = solve(U_a, c_a, F_a)  # noqa: RUF059 (read by the next iteration)
    return z_a if z_out is None else z_out, U_a.shape[0] + stalled.count()


def _index(positions: list[int], device: torch.device) -> Tensor:
    return torch.tensor(positions, dtype=torch.long, device=device)


class _Stalled:
    """The rows set aside by the pivoting, with their last iterate."""

    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []

    def add(self, rows: Tensor, U: Tensor, c: Tensor, z: Tensor, u_max: Tensor) -> None:
        self.parts.append((rows, U, c, z, u_max))

    def count(self) -> int:
        return sum(part[0].shape[0] for part in self.parts)

    def finish(self, solve: Solve, noise: _Noise, z_out: Tensor, max_iter: int) -> int:
        """Solve the rows set aside by the monotone method, into ``z_out``; return the number of
        rows that it did not solve in ``max_iter`` steps.
        """
        if not self.parts:
            return 0
        rows, U, c, z, u_max = (torch.cat(parts) for parts in zip(*self.parts, strict=True))
        solution, n_failed = lawson_hanson(solve, noise.violations, U, c, z, u_max, max_iter)
        z_out[rows] = solution
        return n_failed


def _pivot_masked(
    G: Tensor, c: Tensor, U: Tensor, u_max: Tensor, max_iter: int
) -> tuple[Tensor, Tensor]:
    """Accelerator variant: fixed iteration count, full-size masked systems, no host reads.

    A row whose pivoting stalls keeps Kim & Park's backup rule (single swaps) rather than the
    CPU's monotone fallback: every iteration runs for every row here, and the fallback's step
    would more than double the operations of each. Where the budget does not suffice, the
    device-side assertion of the caller reports it.
    """
    k, m = U.shape
    z = torch.zeros_like(U)
    F = torch.zeros(k, m, dtype=torch.bool, device=U.device)
    best = torch.full((k,), m + 1, device=U.device)
    budget = torch.full((k,), _FULL_EXCHANGE_BUDGET, device=U.device)
    noise = _Noise(G, u_max)
    for _ in range(max_iter):
        V = noise.violations(F, z, torch.addmm(c, z, G))
        F, best, budget = _exchange(F, V, best, budget)  # converged rows have no violators
        z = solve_masked(G, c, F)
    converged = ~noise.violations(F, z, torch.addmm(c, z, G)).any(dim=-1)
    return z, converged


def _exchange(F: Tensor, V: Tensor, best: Tensor, budget: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One pivoting step of Kim & Park: swap all violators while their number decreases (and
    for a few more tries), else only the last one (Murty's backup rule, which makes it finite).
    """
    n_violations = V.sum(dim=-1)
    improved = n_violations < best
    full = improved | (budget >= 1)
    budget = torch.where(improved, _FULL_EXCHANGE_BUDGET, torch.where(full, budget - 1, budget))
    best = torch.where(improved, n_violations, best)
    m = V.shape[-1]
    last = m - 1 - torch.argmax(V.flip(-1).to(torch.uint8), dim=-1)
    single = torch.nn.functional.one_hot(last, m).bool() & V
    return F ^ torch.where(full.unsqueeze(-1), V, single), best, budget
