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
    c = U @ G  # row i is (G u_i)ᵀ, since G is symmetric
    if U.device.type == "cpu":
        z, n_failed = _pivot_compact(G, c, U, max_iter, well_conditioned)
        if n_failed:
            raise ProjectionError(
                f"The dual-cone projection did not converge in max_iter={max_iter} iterations "
                f"for {n_failed} of {U.shape[0]} vectors. This happens only with an "
                "ill-conditioned Gramian: increase `reg_eps` or `max_iter`."
            )
        if z is None:
            return U  # nothing conflicts with any u: every projection is u itself
    else:
        z, converged = _pivot_masked(G, c, U, max_iter)
        # A device-side assertion reports a failure without making the host wait for the result.
        device_assert(converged.all(), "The dual-cone projection did not converge.")
    return U + z.clamp(min=0.0)


class _Noise:
    """The rounding-noise level of ``y = G v``: ``4·√m·eps·max(G)·‖v‖_∞`` for each row.

    A violation smaller than this is noise; a larger tolerance would stop at a less exact
    solution. The constant part is computed once per solve.
    """

    def __init__(self, G: Tensor, U: Tensor) -> None:
        eps = torch.finfo(G.dtype).eps
        # max(diag G) ≥ |G_jk| for a positive semi-definite G. (Negative: tolerances are
        # compared with values below zero.)
        self.neg_scale = G.diagonal().max() * (-_TOL_FACTOR * math.sqrt(G.shape[0]) * eps)
        self.diag = G.diagonal()
        self.u_max = U.abs().amax(dim=-1)

    def violations(self, F: Tensor, z: Tensor, y: Tensor, u_max: Tensor | None = None) -> Tensor:
        """The variables that break the KKT conditions by more than the rounding noise.

        A free ``z_j < 0`` is measured by how much dropping it would change ``y_j``
        (``G_jj z_j``), so that both tests are in the units of ``y``. ``u_max`` holds the
        ``‖u‖_∞`` of the rows that ``F``, ``z`` and ``y`` belong to (default: all of ``U``).
        """
        u_max = self.u_max if u_max is None else u_max
        tol = torch.maximum(u_max, z.abs().amax(dim=-1)).mul_(self.neg_scale).unsqueeze(-1)
        return torch.where(F, z * self.diag, y) < tol


def _pivot_compact(
    G: Tensor, c: Tensor, U: Tensor, max_iter: int, well_conditioned: bool = False
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
    noise = _Noise(G, U)
    # The first iteration in closed form (z = 0, F = ∅, so y = c and every violator enters F):
    # it is the same step as in the loop, with a fraction of the tensor operations.
    F_a = c < (noise.neg_scale * noise.u_max).unsqueeze(-1)
    best = F_a.sum(dim=-1)
    active = best > 0
    n_active = int(active.sum())
    if n_active == 0:
        return None, 0
    c_a, U_a, u_max_a = c, U, noise.u_max
    # While no row has been dropped, `rows` and `z_out` are None and `z_a` is the whole output.
    rows: Tensor | None = None
    z_out: Tensor | None = None
    if n_active < k:
        z_out = torch.zeros_like(U)  # a row without violator is solved by z = 0
        rows = active.nonzero().squeeze(1)
        F_a, best, c_a, U_a, u_max_a = F_a[rows], best[rows], c[rows], U[rows], u_max_a[rows]
    budget = torch.full((n_active,), _FULL_EXCHANGE_BUDGET, device=U.device)
    m = G.shape[0]
    masked = m <= MAX_MASKED_M and n_active * m * m <= MAX_MASKED_ENTRIES
    solve = MaskedSolver(G) if masked else CompactSolver(G, well_conditioned)
    stalled = _Stalled()
    z_a, y_a = solve(U_a, c_a, F_a)
    for iteration in range(max_iter):
        V = noise.violations(F_a, z_a, y_a, u_max_a)
        violating = V.any(dim=-1)
        n_active = int(violating.sum())
        if n_active == 0:
            if rows is None or z_out is None:
                return z_a, 0  # every row converged, none was dropped
            z_out[rows] = z_a
            return z_out, stalled.finish(solve, noise, z_out, max_iter - iteration)
        n_violations = V.sum(dim=-1)
        improved = n_violations < best
        active, stalling = violating, None
        if bool(improved.all()):  # the usual case: every row has fewer violators than ever
            best, budget = n_violations, budget.fill_(_FULL_EXCHANGE_BUDGET)
        else:
            # A row swaps all its violators while their number decreases, and for a few more
            # tries; then it has stalled, and is set aside.
            budget = torch.where(improved, _FULL_EXCHANGE_BUDGET, budget - 1)
            best = torch.where(improved, n_violations, best)
            stalling = violating & (budget < 0)
            n_stalling = int(stalling.sum())
            if n_stalling == 0:
                stalling = None
            else:
                active, n_active = violating & ~stalling, n_active - n_stalling
        # Converged rows are dropped once they are the majority: before that, indexing costs
        # more than solving them again (their sets do not change, nor does their solution).
        if stalling is not None or 2 * n_active <= V.shape[0]:
            if rows is None or z_out is None:
                rows, z_out = torch.arange(k, device=U.device), torch.zeros_like(U)
            converged = ~violating
            z_out[rows[converged]] = z_a[converged]
            if stalling is not None:
                stalled.add(
                    rows[stalling], U_a[stalling], c_a[stalling], z_a[stalling], u_max_a[stalling]
                )
                if n_active == 0:
                    return z_out, stalled.finish(solve, noise, z_out, max_iter - iteration)
            rows, V, c_a, U_a, u_max_a = (
                rows[active],
                V[active],
                c_a[active],
                U_a[active],
                u_max_a[active],
            )
            F_a, best, budget = F_a[active], best[active], budget[active]
        F_a = F_a ^ V
        del z_a, y_a  # the next solve's working set can reuse their memory
        z_a, y_a = solve(U_a, c_a, F_a)  # noqa: RUF059 (read by the next iteration)
    return z_a if z_out is None else z_out, U_a.shape[0] + stalled.count()


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


def _pivot_masked(G: Tensor, c: Tensor, U: Tensor, max_iter: int) -> tuple[Tensor, Tensor]:
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
    noise = _Noise(G, U)
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
