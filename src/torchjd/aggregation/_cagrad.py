from __future__ import annotations

import math

import torch
from torch import Tensor

from ._aggregator_bases import GramianWeightedAggregator
from ._utils.checks import check_non_negative
from ._utils.non_differentiable import NonDifferentiable
from ._weighting_bases import _GramianWeighting

# The solver works on the normalised Gramian (trace 1, so every entry is at most 1 in absolute
# value), in float64. Its optimality tolerance ``tol`` is relative to that scale and to the
# precision of the input: ``max(1e-12, 10·eps)`` of the Gramian's dtype (a float32 Gramian is
# only known to about 1e-7, and its rounding errors must not be taken for tiny improvements).
_COORDINATE_TOL = 1e-12
"""Barycentric coordinates at or below this value leave the support (Wolfe's algorithm)."""
_FACE_FACTOR = 100.0
"""The checks of a solution (optimality on the current face, and the relative error of
``‖d(τ)‖² = (√φ τ)²``) use ``_FACE_FACTOR · tol``."""
_NEGLIGIBLE = 1e-12
"""A norm of the minimiser ``Aᵀw*`` below which it is zero (the rows have norms up to 1)."""
_MAX_OUTER_ITERATIONS = 200
"""Cap on the iterations on ``τ`` (each Newton-like step is safeguarded by bisection)."""

_Corral = tuple[list[int], list[float]]
"""A support (indices of affinely independent rows) and barycentric coordinates on it."""


class _Hull:
    """The rows ``a_i`` of one solve (through the normalised float64 Gramian) and the bordered
    matrices of the systems of its faces.

    The scalar arithmetic of the solver (on supports of a few to ``m`` points) runs on Python
    floats; only the products with the Gramian and the linear solves are tensor operations:
    measured 3-5 times fewer tensor operations per step than with tensors throughout.
    """

    def __init__(self, gramian: Tensor, b: Tensor, gamma: float) -> None:
        m = gramian.shape[0]
        self.m = m
        self.gramian = gramian
        self.gamma = gamma
        # [[G, 1], [1ᵀ, 0]] and the right-hand sides [e_m, (b; 0)] of every face's system.
        bordered = gramian.new_zeros(m + 1, m + 1)
        bordered[:m, :m] = gramian
        bordered[:m, m] = 1.0
        bordered[m, :m] = 1.0
        self.bordered = bordered
        rhs = gramian.new_zeros(m + 1, 2)
        rhs[m, 0] = 1.0
        rhs[:m, 1] = b
        self.rhs = rhs
        self.b: list[float] = b.tolist()
        self.diagonal: list[float] = gramian.diagonal().tolist()

    def shifted_norms(self, tau: float) -> list[float]:
        """``‖a_i + τ g₀‖² − τ² ‖g₀‖²`` for every row."""
        return [d + 2.0 * tau * b for d, b in zip(self.diagonal, self.b, strict=True)]

    def scale(self, tau: float) -> float:
        """``max_i ‖a_i + τ g₀‖²``, the scale of the optimality gaps."""
        return max(self.shifted_norms(tau)) + tau * tau * self.gamma

    def shifted(self, inner: list[float], tau: float) -> list[float]:
        """``⟨a_i, d + τ g₀⟩`` for every row, from ``inner`` = ``⟨a_i, d⟩``."""
        return [x + tau * b for x, b in zip(inner, self.b, strict=True)]

    def affine_coordinates(self, support: list[int]) -> tuple[list[float], list[float]]:
        """Return ``(origin, slope)``: ``origin − τ·slope`` are the barycentric coordinates of
        the point of the affine hull of ``{a_i : i ∈ support}`` closest to ``−τ g₀``, for every
        ``τ``.

        ``origin`` gives the point ``q`` of the hull closest to 0 and ``slope`` (summing to 0)
        gives ``h``, the projection of ``g₀`` on the directions of the hull. Both solve the
        bordered system ``[[G_SS, 1], [1ᵀ, 0]] [x; ν] = rhs``, invertible for affinely
        independent points.
        """
        index = torch.tensor([*support, self.m])
        system = self.bordered.index_select(0, index).index_select(1, index)
        rhs = self.rhs.index_select(0, index)
        solution, info = torch.linalg.solve_ex(system, rhs)
        if int(info) != 0:  # numerically dependent rows: a least-squares solution is good enough
            solution = torch.linalg.lstsq(system, rhs).solution
        pairs: list[list[float]] = solution[: len(support)].tolist()
        return [pair[0] for pair in pairs], [pair[1] for pair in pairs]

    def inner(self, support: list[int], coords: list[float]) -> list[float]:
        """``⟨a_i, d⟩`` for every row, where ``d = Σ_k coords_k a_{support_k}``."""
        columns = self.gramian.index_select(1, torch.tensor(support))
        weights = torch.tensor(coords, dtype=self.gramian.dtype)
        return (columns @ weights).tolist()


def _dot(support: list[int], coords: list[float], values: list[float]) -> float:
    """``Σ_k coords_k · values[support_k]``."""
    return sum(c * values[i] for i, c in zip(support, coords, strict=True))


def _first_argmin(values: list[float]) -> int:
    return min(range(len(values)), key=values.__getitem__)  # the first minimum, as torch


def _minor_cycle(hull: _Hull, tau: float, corral: _Corral) -> _Corral:
    """Move from ``corral`` towards the point of its affine hull closest to ``−τ g₀``, dropping
    the rows whose coordinate vanishes, until that point has positive coordinates.
    """
    support, coords = corral
    while True:
        origin, slope = hull.affine_coordinates(support)
        target = [o - tau * s for o, s in zip(origin, slope, strict=True)]
        if all(t > _COORDINATE_TOL for t in target):
            return support, target
        # The largest step towards the target that keeps every coordinate non-negative (a
        # coordinate already at the target, hence at zero, leaves at once).
        ratios = [
            (c / (c - t) if c != t else 0.0) if t <= _COORDINATE_TOL else math.inf
            for c, t in zip(coords, target, strict=True)
        ]
        first = _first_argmin(ratios)
        step = ratios[first]
        coords = [c + step * (t - c) for c, t in zip(coords, target, strict=True)]
        coords[first] = 0.0
        kept = [k for k, c in enumerate(coords) if c > _COORDINATE_TOL]
        total = sum(coords[k] for k in kept)
        support = [support[k] for k in kept]
        coords = [coords[k] / total for k in kept]


def _project(hull: _Hull, tau: float, corral: _Corral, tol: float) -> _Corral:
    """Project ``−τ g₀`` onto the convex hull of the rows ``a_i`` with Wolfe's min-norm-point
    algorithm (on the points ``a_i + τ g₀``), warm-started from ``corral``.

    Each major iteration adds the row that most violates the optimality condition
    ``⟨d + τ g₀, a_i − d⟩ ≥ 0`` (by more than ``tol`` relative to ``max_i ‖a_i + τ g₀‖²``),
    moves to the best point of the segment towards it, then runs the minor cycle. The distance to
    ``−τ g₀`` strictly decreases and each iteration ends on a new affinely independent support,
    so the algorithm is finite; it also stops if rounding errors prevent any decrease.
    """
    scale = hull.scale(tau)
    support, coords = corral
    previous = math.inf
    for _ in range(50 * hull.m + 50):
        support, coords = _minor_cycle(hull, tau, (support, coords))
        inner = hull.inner(support, coords)  # ⟨a_i, d⟩
        shifted = hull.shifted(inner, tau)  # ⟨a_i, d + τ g₀⟩
        current = _dot(support, coords, shifted)  # ⟨d, d + τ g₀⟩
        distance = current + tau * (_dot(support, coords, hull.b) + tau * hull.gamma)
        j = _first_argmin(shifted)
        gap = current - shifted[j]
        if gap <= tol * scale or j in support or distance >= previous:
            return support, coords
        previous = distance  # ‖d + τ g₀‖²
        segment = hull.diagonal[j] - 2.0 * inner[j] + _dot(support, coords, inner)  # ‖a_j − d‖²
        step = min(1.0, gap / segment) if segment > 0.0 else 1.0
        if step >= 1.0:
            support, coords = [j], [1.0]
        else:
            support = [*support, j]
            coords = [(1.0 - step) * c for c in coords] + [step]
    raise RuntimeError("CAGrad: Wolfe's algorithm did not converge (numerical breakdown).")


def _is_projection(hull: _Hull, tau: float, corral: _Corral, tol: float) -> bool:
    """Whether ``corral`` gives the projection of ``−τ g₀`` onto the hull (KKT certificate)."""
    support, coords = corral
    if min(coords) < -tol:
        return False
    inner = hull.inner(support, coords)
    shifted = hull.shifted(inner, tau)
    gap = _dot(support, coords, shifted) - min(shifted)
    return gap <= tol * hull.scale(tau)


def _solve(gramian: Tensor, b: Tensor, gamma: float, sqrt_phi: float, tol: float) -> Tensor:
    """Return ``w* = argmin_{w ∈ Δ} bᵀw + √φ ‖Aᵀw‖`` for the normalised float64 ``gramian``.

    The minimiser ``d* = Aᵀw*`` is the projection of ``−τ* g₀`` onto the convex hull of the rows,
    where ``τ* ≥ 0`` solves ``‖d(τ)‖ = √φ τ`` (the optimality condition of the problem
    ``⟨g₀ + √φ d*/‖d*‖, a_i − d*⟩ ≥ 0`` is that of the projection). ``‖d(τ)‖/τ`` is
    non-increasing, so ``τ*`` is bracketed. While the projection stays on one face of the hull,
    ``d(τ) = q − τ h`` is affine and the equation is solved in closed form:
    ``τ = ‖q‖ / sqrt(φ − ‖h‖²)``. That root is accepted when the optimality conditions hold
    there; otherwise the projection is recomputed at the root (or at the middle of the bracket).
    ``tol`` is the relative precision of ``gramian`` (see the module constants).
    """
    hull = _Hull(gramian, b, gamma)
    s2 = sqrt_phi * sqrt_phi
    lower, upper = 0.0, math.sqrt(max(hull.diagonal)) / sqrt_phi
    tau = min(math.sqrt(gamma) / sqrt_phi, upper)
    corral: _Corral = ([_first_argmin(hull.shifted_norms(tau))], [1.0])
    for _ in range(_MAX_OUTER_ITERATIONS):
        corral = _project(hull, tau, corral, tol)
        support, coords = corral
        squared_norm = _dot(support, coords, hull.inner(support, coords))  # ‖d(τ)‖²
        if abs(squared_norm - s2 * tau * tau) <= _FACE_FACTOR * tol * s2 * tau * tau:
            break  # ‖d(τ)‖ = √φ τ up to the precision of the Gramian
        if squared_norm > s2 * tau * tau:
            lower = tau
        else:
            upper = tau
        origin, slope = hull.affine_coordinates(support)
        h2 = max(_dot(support, slope, hull.b), 0.0)
        root = math.inf
        if h2 < s2:
            q2 = _dot(support, origin, hull.inner(support, origin))  # ‖q‖²
            root = math.sqrt(max(q2, 0.0) / (s2 - h2))
            candidate = (support, [o - root * s for o, s in zip(origin, slope, strict=True)])
            if _is_projection(hull, root, candidate, _FACE_FACTOR * tol):
                corral = candidate
                break
        if upper - lower <= 1e-15 * upper or sqrt_phi * upper <= _NEGLIGIBLE:
            # τ* is located to float64 precision, or ‖d*‖ = √φ τ* ≤ √φ·upper is negligible.
            break
        tau = root if lower < root < upper else 0.5 * (lower + upper)
    else:
        raise RuntimeError("CAGrad: the solver did not converge (numerical breakdown).")
    support, coords = corral
    weights = [0.0] * hull.m
    for i, c in zip(support, coords, strict=True):
        weights[i] = max(c, 0.0)
    total = sum(weights)
    return torch.tensor([w / total for w in weights], dtype=gramian.dtype)


class CAGradWeighting(NonDifferentiable, _GramianWeighting):
    """Computes the weights of CAGrad (Conflict-Averse Gradient descent) from the Gramian.

    Let ``Ĝ = G / tr(G)`` (the zero matrix if ``tr(G) < norm_eps``), ``A`` any factor with
    ``A Aᵀ = Ĝ`` (its rows ``a_i`` are the normalised gradients), ``g₀ = Aᵀ 1/m`` their mean and
    ``√φ = c ‖g₀‖``. CAGrad looks for the update ``d`` of the ball ``‖d − g₀‖ ≤ √φ`` that
    maximises ``min_i ⟨a_i, d⟩``. Its dual is

    ``min_{w ∈ Δ} (A g₀)ᵀ w + √φ ‖Aᵀ w‖``, i.e. ``min_{w ∈ Δ} bᵀw + √φ sqrt(wᵀĜw)`` with
    ``b = Ĝ 1/m``,

    over the simplex ``Δ``, and the update is ``d = g₀ + √φ Aᵀw* / ‖Aᵀw*‖``. The weights are
    therefore ``1/m + (√φ / ‖Aᵀw*‖) w*``. They are zeros when ``‖Aᵀw*‖ < norm_eps``: the
    minimiser is then (almost) the zero vector, the direction ``Aᵀw* / ‖Aᵀw*‖`` is undefined, and
    a convex combination of the rows (almost) vanishes (this happens for any ``c ≥ 1`` when ``J``
    is Pareto-stationary). They are ``1/m`` when ``√φ = 0`` (``c = 0``, or rows of zero mean),
    and zeros when ``tr(G) < norm_eps``.

    The dual is solved exactly (to the precision of the Gramian's dtype), not by a fixed number of
    first-order steps: ``Aᵀw*`` is the projection of ``−τ g₀`` onto the convex hull of the rows,
    for the ``τ`` at which its norm is ``√φ τ``. Each projection is computed by Wolfe's finite
    active-set method, and ``τ`` is found in closed form on the face of the hull where the
    projection lies, safeguarded by bisection. The optimality conditions are checked before
    returning. The solver runs in float64 on the CPU (one transfer of the ``[m, m]`` Gramian);
    the weights have the Gramian's dtype and device. Its iterations are bounded: a
    ``RuntimeError`` reports a non-convergence, which only a numerical breakdown can cause.
    Non-differentiable: the output carries no autograd graph.

    Reference: Liu et al., *Conflict-Averse Gradient Descent for Multi-task Learning*, NeurIPS
    2021.

    Args:
        c: The radius factor ``c ≥ 0`` of the ball around the mean gradient. ``c = 0`` gives
            the mean.
        norm_eps: The threshold ``≥ 0`` on the trace of ``G`` and on ``‖Aᵀw*‖`` below which the
            weights are zeros. Default: ``0.0001``.

    >>> import torch
    >>> CAGradWeighting(c=0.5)(torch.tensor([[18.0, -22.0], [-22.0, 38.0]]))
    tensor([0.7041, 0.5000])
    """

    def __init__(self, c: float, norm_eps: float = 0.0001) -> None:
        super().__init__()
        self.c = check_non_negative(c, "c")
        self.norm_eps = check_non_negative(norm_eps, "norm_eps")

    def forward(self, stat: Tensor, /) -> Tensor:
        m = stat.shape[0]
        gramian = stat.detach().to(device="cpu", dtype=torch.float64)
        trace = float(gramian.diagonal().sum())
        if trace < self.norm_eps or trace <= 0.0:
            return torch.zeros(m, dtype=stat.dtype, device=stat.device)
        gramian = gramian / trace
        uniform = gramian.new_full((m,), 1.0 / m)
        b = gramian @ uniform  # ⟨a_i, g₀⟩
        gamma = max(float(uniform @ b), 0.0)  # ‖g₀‖²
        sqrt_phi = self.c * math.sqrt(gamma)
        weights = uniform
        if sqrt_phi > 0.0:
            tol = max(1e-12, 10.0 * torch.finfo(stat.dtype).eps)
            w = _solve(gramian, b, gamma, sqrt_phi, tol)
            norm = math.sqrt(max(float(w @ gramian @ w), 0.0))  # ‖Aᵀw*‖
            if norm >= self.norm_eps and norm > 0.0:
                weights = uniform + (sqrt_phi / norm) * w
            else:
                weights = torch.zeros_like(uniform)
        return weights.to(dtype=stat.dtype, device=stat.device)


class CAGrad(NonDifferentiable, GramianWeightedAggregator):
    """Returns the CAGrad update: the vector of the ball of radius ``c‖g₀‖`` around the mean
    gradient ``g₀`` that maximises the smallest inner product with the rows.

    The rows are first normalised by ``sqrt(tr(J Jᵀ))``, so the update is positively
    homogeneous in ``J``. The weights only depend on ``J Jᵀ`` (see :class:`CAGradWeighting`,
    which also describes the exact solver and the zero-weight cases). ``c = 0`` gives the mean;
    with ``c ≥ 1`` the update is non-conflicting (``J A(J) ≥ 0``). The output does not require
    grad.

    Reference: Liu et al., *Conflict-Averse Gradient Descent for Multi-task Learning*, NeurIPS
    2021.

    Args:
        c: The radius factor ``c ≥ 0`` of the ball around the mean gradient.
        norm_eps: The threshold ``≥ 0`` below which the weights are zeros (see
            :class:`CAGradWeighting`). Default: ``0.0001``.

    >>> import torch
    >>> CAGrad(c=0.5)(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.1835, 1.2041, 1.2041])
    """

    gramian_weighting: CAGradWeighting

    def __init__(self, c: float, norm_eps: float = 0.0001) -> None:
        super().__init__(CAGradWeighting(c, norm_eps))

    def __repr__(self) -> str:
        weighting = self.gramian_weighting
        return f"{type(self).__name__}(c={weighting.c!r}, norm_eps={weighting.norm_eps!r})"

    def __str__(self) -> str:
        return f"{type(self).__name__}{self.gramian_weighting.c}".removesuffix(".0")
