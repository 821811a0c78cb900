from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from scipy.optimize import minimize
from torch import Tensor
from torch.testing import assert_close

import torchjd.aggregation._cagrad as cagrad_module
from settings import DEVICE, DTYPE
from torchjd.aggregation import CAGrad, CAGradWeighting
from torchjd.aggregation._cagrad import _solve
from torchjd.linalg import PSDMatrix
from utils.tensors import eye_, randn_, tensor_, zeros_

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]
G_BASE = [[18.0, -22.0], [-22.0, 38.0]]

Array = NDArray[np.float64]


def _psd(x: Tensor) -> PSDMatrix:
    return cast(PSDMatrix, x)


def _problem(gramian: Array, c: float) -> tuple[Array, Array, float]:
    """The normalised Gramian ``Ĝ``, ``b = Ĝ 1/m`` and ``√φ = c ‖g₀‖`` of the CAGrad dual."""
    G_hat = gramian / np.trace(gramian)
    m = G_hat.shape[0]
    b = G_hat @ np.full(m, 1.0 / m)
    return G_hat, b, c * math.sqrt(max(float(b.mean()), 0.0))


def _objective(G_hat: Array, b: Array, sqrt_phi: float, w: Array) -> float:
    return float(b @ w) + sqrt_phi * math.sqrt(max(float(w @ G_hat @ w), 0.0))


def _scipy_dual(G_hat: Array, b: Array, sqrt_phi: float) -> tuple[float, Array]:
    """``max μ s.t. A g ≥ μ, ‖g − g₀‖ ≤ √φ`` (the CAGrad primal, whose value is the optimal
    value of the weight problem) by SLSQP on an eigen-factor ``A Aᵀ = Ĝ``. Returns ``μ*`` and
    ``A g*`` (the inner products of the optimal update with the rows)."""
    values, vectors = np.linalg.eigh(G_hat)
    A = vectors * np.sqrt(np.clip(values, 0.0, None))
    m, r = A.shape
    g0 = A.T @ np.full(m, 1.0 / m)
    ones = np.ones((m, 1))
    constraints = [
        {"type": "ineq", "fun": lambda v: A @ v[:r] - v[r], "jac": lambda v: np.hstack([A, -ones])},
        {
            "type": "ineq",
            "fun": lambda v: sqrt_phi**2 - np.sum((v[:r] - g0) ** 2),
            "jac": lambda v: np.concatenate([-2.0 * (v[:r] - g0), [0.0]])[None],
        },
    ]
    result = minimize(
        lambda v: -v[r],
        np.concatenate([g0, [float((A @ g0).min())]]),
        jac=lambda v: np.concatenate([np.zeros(r), [-1.0]]),
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    # SLSQP may stop with "positive directional derivative" at the optimum: check feasibility
    # (to SLSQP's own accuracy, which varies by ~1e-8 between scipy builds).
    g, mu = result.x[:r], float(result.x[r])
    assert float((A @ g).min()) >= mu - 1e-9
    assert float(np.linalg.norm(g - g0)) <= sqrt_phi * (1.0 + 1e-7) + 1e-12
    return mu, A @ g


def _scipy_weights(G_hat: Array, b: Array, sqrt_phi: float) -> Array:
    """``argmin_{w ∈ Δ} bᵀw + √φ ‖Aᵀw‖`` by SLSQP, directly on the weights."""
    m = G_hat.shape[0]

    def gradient(w: Array) -> Array:
        norm = math.sqrt(max(float(w @ G_hat @ w), 1e-300))
        return b + sqrt_phi * (G_hat @ w) / norm

    result = minimize(
        lambda w: _objective(G_hat, b, sqrt_phi, w),
        np.full(m, 1.0 / m),
        jac=gradient,
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        method="SLSQP",
        options={"ftol": 1e-16, "maxiter": 2000},
    )
    return cast(Array, result.x)


def _matrix(m: int, n: int, rank: int, offset: float, seed: int) -> Array:
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    return J + offset * rng.standard_normal(n)


def _solver_weights(G_hat: Array, b: Array, sqrt_phi: float) -> Array:
    """The library's solver, in float64 with the float64 tolerance."""
    G = torch.from_numpy(G_hat)
    weights = _solve(G, torch.from_numpy(b), float(b.mean()), sqrt_phi, 1e-12)
    return cast(Array, weights.numpy())


# (m, n, rank, offset of the rows, c): full-rank and rank-deficient Gramians (m > n, rank < m),
# aligned rows (offset) and rows with a vanishing convex combination (no offset, m > rank).
SOLVER_CASES = [
    (1, 3, 1, 0.0, 0.5),
    (2, 5, 2, 0.0, 0.5),
    (2, 5, 1, 0.0, 0.5),
    (3, 10, 3, 1.0, 0.1),
    (3, 10, 3, 0.0, 0.9),
    (5, 3, 3, 0.0, 0.5),
    (8, 20, 8, 2.0, 0.5),
    (8, 20, 8, 0.0, 2.0),
    (10, 4, 4, 1.0, 1.0),
    (12, 30, 5, 0.5, 0.3),
    (16, 40, 16, 0.0, 0.5),
    (20, 8, 8, 2.0, 0.5),
    (20, 50, 20, 1.0, 10.0),
    (32, 6, 6, 0.0, 0.5),
    (40, 60, 40, 1.0, 0.5),
    (64, 10, 10, 1.0, 0.5),
    (64, 100, 64, 0.5, 0.5),
    (64, 80, 20, 0.0, 0.05),
]


@pytest.mark.parametrize(("m", "n", "rank", "offset", "c"), SOLVER_CASES)
def test_solver_matches_scipy(m: int, n: int, rank: int, offset: float, c: float) -> None:
    J = _matrix(m, n, rank, offset, seed=m + n + rank)
    G_hat, b, sqrt_phi = _problem(J @ J.T, c)
    w = _solver_weights(G_hat, b, sqrt_phi)
    value = _objective(G_hat, b, sqrt_phi, w)
    scale = math.sqrt(float(b.mean()))  # ‖g₀‖, the scale of the objective values
    assert w.min() >= 0.0
    assert w.sum() == pytest.approx(1.0, abs=1e-12)

    # The optimal value of the dual problem, solved by SLSQP: ours is at least as good and equal.
    reference_value, reference_inner = _scipy_dual(G_hat, b, sqrt_phi)
    assert value <= reference_value + 1e-9 * scale
    assert value == pytest.approx(reference_value, rel=1e-6, abs=1e-9 * scale)

    # The optimality (KKT) conditions hold to float64 precision: with d = Aᵀw and the gradient
    # v = g₀ + √φ d/‖d‖ of the objective, ⟨v, a_i − d⟩ ≥ 0 for every row i.
    norm = math.sqrt(float(w @ G_hat @ w))
    if norm > 1e-6:
        gradient = b + sqrt_phi * (G_hat @ w) / norm  # ⟨v, a_i⟩
        assert gradient.min() >= float(gradient @ w) - 1e-9
        # The update g₀ + √φ d/‖d‖ is the one of the SLSQP solution (unique).
        np.testing.assert_allclose(gradient, reference_inner, rtol=0, atol=1e-6 * scale)

    # For linearly independent rows, w* is unique: compare it to SLSQP on the weights (whose
    # weights are only accurate to about 1e-6, and whose objective is not better than ours).
    if rank == m and norm > 1e-6:
        reference_weights = _scipy_weights(G_hat, b, sqrt_phi)
        assert value <= _objective(G_hat, b, sqrt_phi, reference_weights) + 1e-12
        np.testing.assert_allclose(w, reference_weights, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("m", "n", "rank", "offset", "c"), SOLVER_CASES[::3])
def test_weights_formula_in_float64(m: int, n: int, rank: int, offset: float, c: float) -> None:
    """``1/m + (√φ/‖Aᵀw*‖) w*``, computed from the solver's ``w*``, and the update on the sphere."""
    J = _matrix(m, n, rank, offset, seed=m + n + rank)
    G_hat, b, sqrt_phi = _problem(J @ J.T, c)
    w = _solver_weights(G_hat, b, sqrt_phi)
    norm = math.sqrt(float(w @ G_hat @ w))
    G = torch.tensor(J @ J.T, dtype=torch.float64, device=DEVICE)
    weights = CAGradWeighting(c)(_psd(G)).cpu().numpy()
    np.testing.assert_allclose(weights, 1.0 / m + (sqrt_phi / norm) * w, rtol=1e-9, atol=1e-12)
    # In the normalised geometry, the update is on the sphere ‖g − g₀‖ = √φ.
    shift = weights - 1.0 / m
    assert math.sqrt(float(shift @ G_hat @ shift)) == pytest.approx(sqrt_phi, rel=1e-9)


def test_reference_values() -> None:
    assert_close(
        CAGrad(c=0.5)(tensor_(J_BASE)), tensor_([0.1835, 1.2041, 1.2041]), rtol=0, atol=1e-4
    )
    weights = CAGradWeighting(0.5)(_psd(tensor_(G_BASE)))
    assert_close(weights, tensor_([0.7041, 0.5000]), rtol=0, atol=1e-4)


def test_j_base_closed_form() -> None:
    """On J_base, w* = [1, 0] (the first row), so the weights are [1/2 + c‖g₀‖/‖a₀‖, 1/2]."""
    G_hat = torch.tensor(G_BASE, dtype=torch.float64) / 56.0
    mean_norm = math.sqrt(float(G_hat.sum()) / 4.0)
    expected = [0.5 + 0.5 * mean_norm / math.sqrt(float(G_hat[0, 0])), 0.5]
    assert_close(CAGradWeighting(0.5)(_psd(tensor_(G_BASE))), tensor_(expected))


@pytest.mark.parametrize("c", [0.0, 0.5, 1.0, 3.0])
def test_single_row_is_scaled_by_one_plus_c(c: float) -> None:
    row = randn_(1, 7)
    assert_close(CAGrad(c)(row), (1.0 + c) * row[0])


@pytest.mark.parametrize("m", [2, 3, 7])
@pytest.mark.parametrize("c", [0.2, 1.0, 4.0])
def test_orthogonal_rows_of_equal_norm(m: int, c: float) -> None:
    """By symmetry w* = 1/m, so the weights are (1 + c)/m."""
    matrix = 3.0 * eye_(m)
    assert_close(CAGradWeighting(c)(_psd(matrix @ matrix.T)), tensor_([(1.0 + c) / m] * m))


def test_c_zero_gives_the_mean() -> None:
    matrix = randn_(6, 4)
    assert_close(CAGrad(0.0)(matrix), matrix.mean(dim=0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [1.0, 2.0])
def test_non_conflicting_for_c_at_least_one(seed: int, c: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(8, 5, generator=generator).to(device=DEVICE, dtype=DTYPE)
    result = CAGrad(c)(matrix)
    # With c = 1 and rows with a vanishing convex combination, the update is g₀ − ‖g₀‖ ĝ₀ = 0
    # (up to rounding): the tolerance is relative to the scale of J, not of the update.
    assert bool((matrix @ result >= -1e-5 * matrix.norm() ** 2).all())


def test_can_conflict_for_small_c() -> None:
    """With c < 1 the update may conflict: here the rows have a vanishing convex combination."""
    matrix = tensor_([[1.0, 0.0], [-1.0, 0.1], [0.0, -1.0]])
    assert bool((matrix @ CAGrad(0.5)(matrix) < 0.0).any())


def test_maximises_the_smallest_improvement_in_the_ball() -> None:
    """The update of J_base beats every other vector of the ball on min_i ⟨a_i, d⟩."""
    G_hat = np.array(G_BASE) / 56.0
    b = G_hat @ np.full(2, 0.5)
    sqrt_phi = 0.5 * math.sqrt(float(b.mean()))
    weights = CAGradWeighting(0.5)(_psd(torch.tensor(G_BASE, dtype=torch.float64))).numpy()
    best = float((G_hat @ weights).min())
    reference_value, _ = _scipy_dual(G_hat, b, sqrt_phi)
    assert best == pytest.approx(reference_value, abs=1e-9)


def test_positively_homogeneous() -> None:
    matrix = randn_(5, 4)
    assert_close(CAGrad(0.5)(7.0 * matrix), 7.0 * CAGrad(0.5)(matrix))


def test_permutation_invariant() -> None:
    matrix = randn_(6, 8)
    permutation = torch.randperm(6, device=DEVICE)
    weights = CAGradWeighting(0.5)(_psd(matrix @ matrix.T))
    permuted = matrix[permutation]
    assert_close(CAGradWeighting(0.5)(_psd(permuted @ permuted.T)), weights[permutation])


def test_zero_or_tiny_matrix_gives_zeros() -> None:
    assert_close(CAGrad(0.5)(zeros_(3, 4)), zeros_(4))
    assert_close(CAGrad(0.5, norm_eps=0.0)(zeros_(3, 4)), zeros_(4))
    tiny = 1e-3 * randn_(3, 2)  # tr(J Jᵀ) < norm_eps = 1e-4 (with overwhelming probability)
    assert float((tiny @ tiny.T).trace()) < 1e-4
    assert_close(CAGradWeighting(0.5)(_psd(tiny @ tiny.T)), zeros_(3))


def test_vanishing_minimiser_gives_zeros() -> None:
    """Here ψ(d) = ⟨g₀, d⟩ + √φ‖d‖ ≥ 0 on the hull (whose second coordinates are ≥ 0), so the
    minimiser is d* = 0: the direction is undefined and the weights are zeros."""
    matrix = tensor_([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    assert_close(CAGradWeighting(0.5)(_psd(matrix @ matrix.T)), zeros_(3))


def test_zero_mean_gives_uniform_weights() -> None:
    """With g₀ = 0, √φ = 0 and the weights are 1/m (the update, the mean, is zero)."""
    matrix = tensor_([[1.0, 2.0], [-1.0, -2.0]])
    assert_close(CAGradWeighting(0.5)(_psd(matrix @ matrix.T)), tensor_([0.5, 0.5]))


@pytest.mark.parametrize(
    "rows",
    [
        [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]],  # identical rows
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],  # duplicate and zero rows
        [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [-1.0, 0.0]],  # collinear rows
        [[1.0, 1.0], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0], [0.7, 0.3]],  # affinely dependent
    ],
)
@pytest.mark.parametrize("c", [0.3, 1.0, 5.0])
def test_degenerate_rows(rows: list[list[float]], c: float) -> None:
    matrix = tensor_(rows)
    result = CAGrad(c)(matrix)
    assert bool(torch.isfinite(result).all())
    G = torch.tensor(rows, dtype=torch.float64)
    G_hat, b, sqrt_phi = _problem((G @ G.T).numpy(), c)
    weights = CAGradWeighting(c)(_psd(G @ G.T)).numpy()
    if weights.any() and sqrt_phi > 0.0:
        # The optimal value of the dual is the smallest inner product of the update with a row.
        reference_value, _ = _scipy_dual(G_hat, b, sqrt_phi)
        assert float((G_hat @ weights).min()) == pytest.approx(reference_value, abs=1e-7)


def test_identical_rows_give_one_plus_c_times_the_row() -> None:
    matrix = tensor_([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    assert_close(CAGrad(0.5)(matrix), tensor_([1.5, 3.0]))


def test_solver_non_convergence_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cagrad_module, "_MAX_OUTER_ITERATIONS", 0)
    with pytest.raises(RuntimeError, match="CAGrad"):
        CAGrad(0.5)(tensor_(J_BASE))


def test_keeps_dtype_and_device() -> None:
    for dtype in (torch.float32, torch.float64):
        weights = CAGradWeighting(0.5)(_psd(tensor_(G_BASE, dtype=dtype)))
        assert weights.dtype == dtype
        assert weights.device.type == DEVICE.type


def test_non_differentiable() -> None:
    matrix = tensor_(J_BASE, requires_grad=True)
    assert not CAGrad(0.5)(matrix).requires_grad
    assert not CAGradWeighting(0.5)(_psd(matrix @ matrix.T)).requires_grad
    assert not CAGrad.differentiable
    assert not CAGradWeighting.differentiable


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"c": -0.1}, "c"), ({"c": 1.0, "norm_eps": -1.0}, "norm_eps")]
)
def test_invalid_hyper_parameters(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        CAGrad(**kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        CAGradWeighting(**kwargs)


def test_invalid_hyper_parameter_types() -> None:
    with pytest.raises(TypeError, match="`c`"):
        CAGrad(cast(float, "0.5"))
    with pytest.raises(ValueError, match="`c`"):
        CAGrad(math.nan)


def test_representations() -> None:
    assert repr(CAGrad(c=0.5)) == "CAGrad(c=0.5, norm_eps=0.0001)"
    assert repr(CAGrad(c=2, norm_eps=0.0)) == "CAGrad(c=2.0, norm_eps=0.0)"
    assert str(CAGrad(c=0.5)) == "CAGrad0.5"
    assert str(CAGrad(c=1.0)) == "CAGrad1"
    assert str(CAGrad(c=2)) == "CAGrad2"
    assert str(CAGrad(c=10.0)) == "CAGrad10"
    assert repr(CAGradWeighting(0.5)) == "CAGradWeighting()"


def test_hyper_parameters_live_on_the_weighting() -> None:
    aggregator = CAGrad(c=0.5, norm_eps=0.01)
    assert isinstance(aggregator.gramian_weighting, CAGradWeighting)
    assert aggregator.gramian_weighting.c == 0.5
    assert aggregator.gramian_weighting.norm_eps == 0.01
