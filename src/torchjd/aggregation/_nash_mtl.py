from __future__ import annotations

import math

import torch
from torch import Tensor

from torchjd._stateful import Stateful

from ._aggregator_bases import WeightedAggregator
from ._utils.checks import check_gramian_of, check_non_negative, check_positive_int
from ._utils.non_differentiable import NonDifferentiable
from ._weighting_bases import _MatrixWeighting, at_least_float32

_DECREMENT_TOL = 1e-12
"""Squared Newton decrement below which one last full Newton step reaches float64 precision."""
_RESIDUAL_TOL = 1e-6
"""Largest accepted relative residual ``|β_i (Gβ)_i − 1|`` of a solution."""
_ROUNDING_TOL = 0.1
"""Largest accepted bound on the rounding error of ``β_i (Gβ)_i`` (see ``_is_solution``)."""
_PURE_NEWTON = 1.0 / 16.0
"""Squared Newton decrement below which full Newton steps are taken (quadratic convergence)."""
_ARMIJO = 0.25
"""Fraction of the decrease predicted by the Newton model that a step must achieve."""
_MAX_HALVINGS = 60
"""Cap on the halvings of the step of the line search."""


def _potential(gramian: Tensor, beta: Tensor) -> float:
    """``½ βᵀGβ − Σ_i log β_i``, strictly convex on ``β > 0``, minimal where ``Gβ = 1/β``."""
    return 0.5 * float(beta @ gramian @ beta) - float(beta.log().sum())


def _is_solution(gramian: Tensor, beta: Tensor) -> bool:
    """Whether ``β > 0`` solves ``β_i (Gβ)_i = 1`` (relative residual at most ``1e-6``) in a way
    that rounding errors cannot fake.

    The rounding error of ``β_i (Gβ)_i`` (including that of the Gramian) is at most about
    ``m·eps·β_i sqrt(G_ii) Σ_j sqrt(G_jj) β_j``. When it stays below ``0.1``, every computed
    ``(Gβ)_i > 0`` is truly positive: ``d = Jᵀβ`` improves every task, so the solution exists.
    Beyond that, the rows are too close to a vanishing convex combination for float64.
    """
    if not bool((beta > 0).all()):
        return False
    residual = (beta * (gramian @ beta) - 1.0).abs()
    norms = gramian.diagonal().sqrt()
    rounding = gramian.shape[0] * torch.finfo(beta.dtype).eps * beta * norms * (norms @ beta)
    return float(residual.max()) <= _RESIDUAL_TOL and float(rounding.max()) <= _ROUNDING_TOL


def _solve_bargaining(gramian: Tensor, max_iterations: int) -> Tensor | None:
    """Return ``β > 0`` with ``Gβ = 1/β`` (float64 ``gramian``), or ``None`` if none is found.

    Damped Newton method on the strictly convex potential ``½ βᵀGβ − Σ log β_i``. Each step
    follows the Newton direction ``δ`` multiplicatively, ``β ← β ⊙ exp(t δ/β)``, which keeps
    ``β > 0`` and agrees with ``β + tδ`` to first order, with Armijo backtracking on ``t``. The
    start is the best multiple of ``diag(G)^{-1/2}`` (the exact solution for ``m ≤ 2``).
    """
    m = gramian.shape[0]
    diagonal = gramian.diagonal()
    if bool((diagonal <= 0.0).any()):
        return None  # a zero row: (Gβ)_i = 0 for every β
    direction = diagonal.rsqrt()
    curvature = float(direction @ gramian @ direction)
    if curvature <= 0.0:
        return None  # a positive combination of the rows vanishes
    beta = math.sqrt(m / curvature) * direction
    value = _potential(gramian, beta)
    for _ in range(max_iterations):
        gradient = gramian @ beta - 1.0 / beta
        step, info = torch.linalg.solve_ex(gramian + torch.diag(beta.pow(-2)), -gradient)
        if int(info) != 0:
            return None
        decrement = float(-(gradient @ step))  # squared Newton decrement λ² ≈ 2 (f(β) − f*)
        if decrement <= _DECREMENT_TOL:
            beta = beta + step  # quadratic convergence: this last step reaches the precision
            return beta if _is_solution(gramian, beta) else None
        if decrement < _PURE_NEWTON:
            # λ < 1/4: the full step stays in β > 0 and converges quadratically (the potential is
            # self-concordant); no line search, whose test would drown in rounding errors here.
            beta = beta + step
            value = _potential(gramian, beta)
            continue
        t = 1.0
        for _ in range(_MAX_HALVINGS):
            candidate = beta * torch.exp(t * step / beta)
            candidate_value = _potential(gramian, candidate)
            if candidate_value <= value - _ARMIJO * t * decrement:
                break
            t *= 0.5
        else:
            return None
        beta, value = candidate, candidate_value
    return beta if _is_solution(gramian, beta) else None


def _bargaining_weights(matrix: Tensor, max_iterations: int) -> Tensor:
    """The Nash bargaining weights ``α > 0`` with ``α_i (J Jᵀ α)_i = 1``, or zeros if none."""
    # Only the [m, m] Gramian leaves the device of J (in float64, for the solver). An overflow
    # must not pass for "no solution" (zero weights): it is an error that names the matrix.
    source = at_least_float32(matrix)
    product = source @ source.T
    check_gramian_of(matrix, product)
    gramian = product.to(device="cpu", dtype=torch.float64)
    scale = float(torch.linalg.matrix_norm(gramian))  # Frobenius norm
    if scale == 0.0:
        return torch.zeros(matrix.shape[0], dtype=torch.float64)
    # Solving on G/‖G‖_F keeps the numbers near 1; β then rescales to the solution for G.
    beta = _solve_bargaining(gramian / scale, max_iterations)
    if beta is None:
        return torch.zeros(matrix.shape[0], dtype=torch.float64)
    return beta / math.sqrt(scale)


class _NashMTLWeighting(NonDifferentiable, _MatrixWeighting, Stateful):
    """Computes the Nash-MTL weights of the rows of ``J``; see :class:`NashMTL`."""

    def __init__(
        self,
        n_tasks: int,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter: int = 20,
    ) -> None:
        super().__init__()
        self.n_tasks = check_positive_int(n_tasks, "n_tasks")
        self.max_norm = check_non_negative(max_norm, "max_norm")
        self.update_weights_every = check_positive_int(update_weights_every, "update_weights_every")
        self.optim_niter = check_positive_int(optim_niter, "optim_niter")
        self._step = 0
        self._alpha: Tensor | None = None

    def reset(self) -> None:
        """Forget the cached weights and restart the step counter."""
        self._step = 0
        self._alpha = None

    def forward(self, stat: Tensor, /) -> Tensor:
        if stat.shape[0] != self.n_tasks:
            raise ValueError(
                f"Parameter `n_tasks` should be the number of rows of the matrix. Found "
                f"n_tasks={self.n_tasks} and `matrix.shape = {tuple(stat.shape)}`."
            )
        if self._alpha is None or self._step % self.update_weights_every == 0:
            self._alpha = _bargaining_weights(stat, self.optim_niter)
        self._step += 1
        alpha = self._alpha.to(dtype=stat.dtype, device=stat.device)
        if self.max_norm > 0.0:
            # max_norm / max(‖αᵀJ‖, max_norm): 1 below the cap, a shrinking factor above it.
            norm = torch.linalg.vector_norm(alpha @ stat)
            alpha = alpha * (self.max_norm / norm.clamp(min=self.max_norm))
        return alpha


class NashMTL(NonDifferentiable, WeightedAggregator, Stateful):
    """Combines the rows with the weights of the Nash bargaining solution between the tasks
    (Nash-MTL).

    The tasks bargain over an update ``d`` of a ball ``‖d‖ ≤ ε``, with utilities ``⟨g_i, d⟩``;
    the Nash bargaining solution maximises ``Σ_i log⟨g_i, d⟩``. It is ``d = Jᵀα`` with
    ``α_i = 1/⟨g_i, d⟩``, i.e. the unique ``α > 0`` with ``α_i (G α)_i = 1`` for ``G = J Jᵀ``
    (then ``‖d‖ = √m``). This ``α`` minimises the strictly convex potential
    ``½ αᵀGα − Σ_i log α_i``: it is computed by Newton's method with an Armijo line search, to
    float64 precision, in at most ``optim_niter`` iterations. ``G`` is computed on the device and
    in the dtype of ``J``; the solver runs on ``G/‖G‖_F``, in float64 on the CPU. Finally, if
    ``‖αᵀJ‖ > max_norm > 0``, ``α`` is rescaled so that ``‖αᵀJ‖ = max_norm``.

    When a convex combination of the rows vanishes (``J`` is Pareto-stationary: no update
    improves every task, for instance with a zero row or two opposite rows), no positive solution
    exists, the potential is unbounded below, and the weights are zeros. They are also zeros when
    the solution is not reached within ``optim_niter`` iterations or cannot be resolved in
    float64, which only happens when the rows almost have a vanishing convex combination.

    The update is invariant to the multiplication of a row by a positive factor, and it is
    non-conflicting: ``⟨g_i, d⟩ = 1/α_i > 0``. TorchJD 0.18.0 approximates the same solution by
    a sequence of convex programs stopped after a few rounds. The output does not require grad.

    .. warning::
        This aggregator is :class:`~torchjd.Stateful`: the weights are only recomputed every
        ``update_weights_every`` calls (the calls in between reuse them, with the ``max_norm``
        rescaling applied to the new matrix). Call :meth:`reset` to start over.

    Reference: Navon et al., *Multi-Task Learning as a Bargaining Game*, ICML 2022.

    Args:
        n_tasks: The number of rows ``m`` of the matrices to aggregate.
        max_norm: The largest norm of the update; ``0`` disables the rescaling. Default: ``1.0``.
        update_weights_every: The number of calls between two computations of the weights.
            Default: ``1``.
        optim_niter: The maximum number of Newton iterations of the solver. Default: ``20``.

    >>> import torch
    >>> NashMTL(n_tasks=2)(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.0542, 0.7061, 0.7061])
    """

    weighting: _NashMTLWeighting

    def __init__(
        self,
        n_tasks: int,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter: int = 20,
    ) -> None:
        super().__init__(_NashMTLWeighting(n_tasks, max_norm, update_weights_every, optim_niter))

    def reset(self) -> None:
        """Forget the cached weights and restart the step counter."""
        self.weighting.reset()

    def __repr__(self) -> str:
        w = self.weighting
        return (
            f"{type(self).__name__}(n_tasks={w.n_tasks!r}, max_norm={w.max_norm!r}, "
            f"update_weights_every={w.update_weights_every!r}, optim_niter={w.optim_niter!r})"
        )
