"""The fallback of the CPU active-set projector: Lawson & Hanson's monotone active-set method.

Block principal pivoting (``_active_set.py``) swaps every variable that breaks the KKT
conditions at once. It usually needs a handful of solves, but on some nearly degenerate problems
(a Gramian of rank about ``m/2`` with a small ``reg_eps``, for instance) the number of violators
stops decreasing, and its backup rule, which swaps one variable per step, then needed thousands
of steps (2685 for ``m = 64`` with ``reg_eps = 1e-6``). The rows that stall are handed over to
this method instead: from a feasible point (``z ≥ 0``), it solves the system of the free set,
moves towards that solution as far as ``z ≥ 0`` allows (dropping the variable that reaches zero)
or, once there, frees the variable with the most negative ``y``. The objective never increases
(a step of length zero only shrinks the free set), so the method cannot cycle; it needs about
one solve per variable that enters or leaves the free set (Lawson & Hanson, *Solving Least
Squares Problems*, 1974, ch. 23).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# (U, c, F) -> (z, y): ``G_FF z_F = -c_F`` with ``z = 0`` off ``F``, and ``y = G z + c``.
Solve = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
# (F, z, y, ‖u‖_∞ of the rows) -> the variables that break the KKT conditions beyond rounding.
Violations = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def lawson_hanson(
    solve: Solve,
    violations: Violations,
    U: Tensor,
    c: Tensor,
    start: Tensor,
    u_max: Tensor,
    max_iter: int,
) -> tuple[Tensor, int]:
    """Solve ``min_{z ≥ 0} ½ zᵀ G z + zᵀ c`` for each row, starting from ``max(start, 0)``, with
    one solve per step; solved rows are dropped.

    Returns ``z`` and the number of rows not solved in ``max_iter`` steps.
    """
    x = start.clamp(min=0.0)
    F = x > 0.0
    z = torch.zeros_like(U)
    rows = torch.arange(U.shape[0], device=U.device)
    for _ in range(max_iter):
        s, y = solve(U, c, F)
        F, x, solved = monotone_step(F, x, s, y, violations(F, s, y, u_max))
        if bool(solved.any()):
            z[rows[solved]] = x[solved]
            keep = ~solved
            if not bool(keep.any()):
                return z, 0
            rows, U, c, F, x, u_max = rows[keep], U[keep], c[keep], F[keep], x[keep], u_max[keep]
    z[rows] = x
    return z, rows.shape[0]


def monotone_step(
    F: Tensor, x: Tensor, s: Tensor, y: Tensor, V: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the method for every row: the new free sets and iterates, and which rows are
    solved (``x = s``, and no variable left to free).

    ``x`` is the feasible iterate (zero off ``F``), ``s`` the solution on ``F`` (zero off it),
    ``y = G s + c`` and ``V`` the variables that break the KKT conditions at ``s``.
    """
    blocked = F & (s <= 0.0)
    accepted = ~blocked.any(dim=-1)
    # Rows whose solution is feasible move there and free their most violated variable (or
    # are solved); the others move to the last feasible point on the way to it, where a
    # variable reaches zero and leaves the free set.
    entering = V & ~F & accepted.unsqueeze(-1)
    solved = accepted & ~entering.any(dim=-1)
    inf = torch.full_like(y, torch.inf)
    most_violated = torch.where(entering, y, inf).argmin(dim=-1, keepdim=True)
    freed = F | (entering & torch.zeros_like(F).scatter_(1, most_violated, True))
    gap = x - s  # > 0 where blocked, unless x = s = 0 (a variable at zero: it leaves at once)
    ratio = torch.where(blocked, x / torch.where(gap > 0.0, gap, 1.0), inf)
    step, leaving = ratio.min(dim=-1, keepdim=True)
    moved = x + step.clamp(max=1.0) * (s - x)
    # The variable that blocks the step leaves, with any other blocking one that reaches zero
    # (free variables at zero that are not blocking stay: they grow on the next step).
    kept = F & ~torch.zeros_like(F).scatter_(1, leaving, True) & ~(blocked & (moved <= 0.0))
    accepted = accepted.unsqueeze(-1)
    new_x = torch.where(accepted, s, torch.where(kept, moved, 0.0))
    return torch.where(accepted, freed, kept), new_x, solved
