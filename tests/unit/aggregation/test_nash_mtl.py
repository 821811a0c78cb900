from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import cast

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from scipy.optimize import least_squares
from torch import Tensor
from torch.testing import assert_close

from settings import DEVICE, DTYPE
from torchjd import Stateful
from torchjd.aggregation import NashMTL
from torchjd.aggregation._nash_mtl import _NashMTLWeighting
from utils.tensors import randn_, tensor_, zeros_

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]

Array = NDArray[np.float64]


def _scipy_bargaining(J: Array) -> Array:
    """``α > 0`` with ``α ⊙ (J Jᵀ α) = 1``, by scipy's least squares (trust-region reflective) on
    the relative residual in log-coordinates ``α = exp(y)``, in float64."""
    G = J @ J.T
    start = np.log(1.0 / np.sqrt(np.diag(G)))
    result = least_squares(
        lambda y: np.exp(y) * (G @ np.exp(y)) - 1.0,
        start,
        jac=lambda y: (
            np.exp(y)[:, None] * G * np.exp(y)[None, :] + np.diag(np.exp(y) * (G @ np.exp(y)))
        ),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=10_000,
    )
    alpha = np.exp(result.x)
    assert np.abs(alpha * (G @ alpha) - 1.0).max() < 1e-10
    return cast(Array, alpha)


def _two_rows_closed_form(J: Array) -> Array:
    """For m = 2, ``α_i = 1 / (‖g_i‖ sqrt(1 + cos θ))`` with θ the angle between the rows."""
    norms = np.linalg.norm(J, axis=1)
    cosine = float(J[0] @ J[1]) / float(norms[0] * norms[1])
    return cast(Array, 1.0 / (norms * math.sqrt(1.0 + cosine)))


def _weights(J: Tensor, **kwargs: float) -> Tensor:
    weighting = _NashMTLWeighting(J.shape[0], **kwargs)  # type: ignore[arg-type]
    return weighting(J)


def test_reference_value() -> None:
    """TorchJD 0.18.0 gives [0.0542, 0.7061, 0.7061]: the exact solution agrees to 4 decimals."""
    result = NashMTL(n_tasks=2)(tensor_(J_BASE))
    assert_close(result, tensor_([0.0542, 0.7061, 0.7061]), rtol=0, atol=1e-4)


def test_j_base_closed_form() -> None:
    """α = [1/sqrt(18), 1/sqrt(38)] / sqrt(1 + cos θ); rescaled to norm 1, the update is
    (ĝ₀ + ĝ₁) / ‖ĝ₀ + ĝ₁‖ = [0.054153..., 0.70607..., 0.70607...] (0.18.0: [0.0542, 0.7061])."""
    J = np.array(J_BASE)
    alpha = _two_rows_closed_form(J)
    assert_close(_weights(tensor_(J_BASE), max_norm=0.0), tensor_(alpha.tolist()))
    # The same weights as FairGrad(alpha=1) in 0.18.0: [0.5915, 0.4071].
    assert_close(
        _weights(tensor_(J_BASE), max_norm=0.0), tensor_([0.5915, 0.4071]), atol=1e-4, rtol=0
    )
    unit_rows = J / np.linalg.norm(J, axis=1, keepdims=True)
    direction = unit_rows.sum(axis=0) / np.linalg.norm(unit_rows.sum(axis=0))
    assert_close(NashMTL(n_tasks=2)(tensor_(J_BASE)), tensor_(direction.tolist()))
    assert direction[0] == pytest.approx(0.0541533, abs=1e-7)


@pytest.mark.parametrize(
    ("m", "n", "offset", "seed"),
    [
        (2, 5, 0.0, 0),
        (3, 4, 1.0, 1),
        (5, 10, 1.0, 2),
        (8, 20, 0.5, 3),
        (16, 30, 1.0, 4),
        (32, 40, 2.0, 5),
        (64, 100, 1.0, 6),
        (10, 3, 3.0, 7),
    ],
)
def test_matches_scipy(m: int, n: int, offset: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((m, n)) + offset * rng.standard_normal(n)
    J *= rng.uniform(0.1, 10.0, size=(m, 1))  # rows of various norms
    weights = _weights(torch.tensor(J, dtype=torch.float64, device=DEVICE), max_norm=0.0)
    alpha = weights.cpu().numpy()
    assert np.abs(alpha * (J @ J.T @ alpha) - 1.0).max() < 1e-10  # exact to float64 precision
    np.testing.assert_allclose(alpha, _scipy_bargaining(J), rtol=1e-8)


def test_update_norm_is_sqrt_m_or_max_norm() -> None:
    matrix = randn_(5, 8) + randn_(1, 8)
    result = NashMTL(5, max_norm=0.0)(matrix)
    assert float(result.norm()) == pytest.approx(math.sqrt(5.0), rel=1e-4)
    result = NashMTL(5, max_norm=10.0)(matrix)  # √5 < 10: no rescaling
    assert float(result.norm()) == pytest.approx(math.sqrt(5.0), rel=1e-4)
    result = NashMTL(5, max_norm=0.5)(matrix)
    assert float(result.norm()) == pytest.approx(0.5, rel=1e-4)


def test_single_row_gives_the_normalised_row() -> None:
    row = tensor_([[3.0, 4.0]])
    assert_close(_weights(row, max_norm=0.0), tensor_([0.2]))
    assert_close(NashMTL(1)(row), tensor_([0.6, 0.8]))


def test_non_conflicting_with_equal_inner_products() -> None:
    """⟨g_i, d⟩ = 1/α_i: every task improves, and α_i ⟨g_i, d⟩ = 1 for all i."""
    matrix = randn_(6, 10) + randn_(1, 10)
    weights = _weights(matrix, max_norm=0.0)
    inner = matrix @ (weights @ matrix)
    assert bool((inner > 0).all())
    assert_close(weights * inner, torch.ones_like(inner), rtol=1e-4, atol=1e-4)


def test_invariant_to_row_scaling() -> None:
    matrix = randn_(4, 6) + randn_(1, 6)
    scales = tensor_([0.01, 1.0, 7.0, 300.0])
    assert_close(NashMTL(4)(scales.unsqueeze(1) * matrix), NashMTL(4)(matrix), rtol=1e-4, atol=1e-5)


def test_permutation_invariant() -> None:
    matrix = randn_(6, 8) + randn_(1, 8)
    permutation = torch.randperm(6, device=DEVICE)
    assert_close(NashMTL(6)(matrix[permutation]), NashMTL(6)(matrix), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "rows",
    [
        [[0.0, 0.0], [0.0, 0.0]],  # zero matrix
        [[1.0, 2.0], [0.0, 0.0], [2.0, 1.0]],  # a zero row: ⟨g_1, d⟩ = 0 for every d
        [[1.0, 0.0], [-1.0, 0.0]],  # opposite rows
        [[1.0, 0.0], [-1.0, 0.1], [0.0, -1.0]],  # 0 in the interior of the hull
        [[1.0, 1.0, 0.0], [-2.0, -2.0, 0.0], [0.0, 1.0, 3.0], [0.0, 1.0, 3.0]],  # 2g0 + g1 = 0
    ],
)
def test_pareto_stationary_gives_zeros(rows: list[list[float]]) -> None:
    """No positive solution exists when a convex combination of the rows vanishes: zeros."""
    matrix = tensor_(rows)
    m = matrix.shape[0]
    assert_close(NashMTL(m)(matrix), zeros_(matrix.shape[1]))
    assert_close(_weights(matrix, max_norm=0.0), zeros_(m))


def test_random_pareto_stationary_gives_zeros() -> None:
    rows = randn_(5, 3)
    matrix = torch.cat([rows, -rows.sum(dim=0, keepdim=True)])  # the mean of the rows is 0
    assert_close(NashMTL(6)(matrix), zeros_(3))


def test_rank_deficient_with_a_solution() -> None:
    """m identical rows g (a singular Gramian): by symmetry α_i = a with m a² ‖g‖² = 1."""
    matrix = tensor_([[3.0, 4.0], [3.0, 4.0], [3.0, 4.0]])
    assert_close(_weights(matrix, max_norm=0.0), tensor_([1.0 / (math.sqrt(3.0) * 5.0)] * 3))


def test_optim_niter_caps_the_newton_iterations() -> None:
    """The start solves m ≤ 2 exactly, but not this matrix: one iteration is not enough."""
    matrix = tensor_([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [-0.4, 0.3, 1.0]])
    assert bool(NashMTL(3, optim_niter=20)(matrix).any())
    assert_close(NashMTL(3, optim_niter=1)(matrix), zeros_(3))


def test_update_weights_every() -> None:
    first, second = randn_(3, 4) + 2.0, randn_(3, 4) + 2.0
    aggregator = NashMTL(3, max_norm=0.0, update_weights_every=2)
    weights_first = _weights(first, max_norm=0.0)
    assert_close(aggregator(first), weights_first @ first)
    # The second call reuses the weights of the first matrix.
    assert_close(aggregator(second), weights_first @ second)
    # The third call (step 2) recomputes them.
    assert_close(aggregator(second), _weights(second, max_norm=0.0) @ second)


def test_cached_weights_are_rescaled_with_the_new_matrix() -> None:
    first = randn_(3, 4) + 2.0
    aggregator = NashMTL(3, max_norm=1.0, update_weights_every=3)
    aggregator(first)
    assert float(aggregator(10.0 * first).norm()) == pytest.approx(1.0, rel=1e-5)


def test_reset() -> None:
    first, second = randn_(3, 4) + 2.0, randn_(3, 4) + 2.0
    aggregator = NashMTL(3, update_weights_every=10)
    aggregator(first)
    reused = aggregator(second)
    aggregator.reset()
    recomputed = aggregator(second)
    assert_close(recomputed, NashMTL(3)(second))
    assert not torch.allclose(reused, recomputed)


def test_stateful() -> None:
    aggregator = NashMTL(2)
    assert isinstance(aggregator, Stateful)
    assert isinstance(aggregator.weighting, Stateful)
    assert isinstance(aggregator.weighting, _NashMTLWeighting)


def test_wrong_number_of_rows() -> None:
    with pytest.raises(ValueError, match="n_tasks"):
        NashMTL(n_tasks=3)(tensor_(J_BASE))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_tasks": 0}, "n_tasks"),
        ({"n_tasks": 2, "max_norm": -1.0}, "max_norm"),
        ({"n_tasks": 2, "update_weights_every": 0}, "update_weights_every"),
        ({"n_tasks": 2, "optim_niter": 0}, "optim_niter"),
    ],
)
def test_invalid_hyper_parameters(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        NashMTL(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_tasks": 2.5}, "n_tasks"),
        ({"n_tasks": 2, "max_norm": "1"}, "max_norm"),
        ({"n_tasks": 2, "update_weights_every": 1.0}, "update_weights_every"),
        ({"n_tasks": 2, "optim_niter": None}, "optim_niter"),
    ],
)
def test_invalid_hyper_parameter_types(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(TypeError, match=f"`{name}`"):
        NashMTL(**kwargs)  # type: ignore[arg-type]


def test_representations() -> None:
    aggregator = NashMTL(n_tasks=2)
    assert repr(aggregator) == (
        "NashMTL(n_tasks=2, max_norm=1.0, update_weights_every=1, optim_niter=20)"
    )
    assert str(aggregator) == "NashMTL"
    assert repr(NashMTL(3, 0, 2, 5)) == (
        "NashMTL(n_tasks=3, max_norm=0.0, update_weights_every=2, optim_niter=5)"
    )


def test_keeps_dtype_and_device() -> None:
    for dtype in (torch.float32, torch.float64):
        result = NashMTL(2)(tensor_(J_BASE, dtype=dtype))
        assert result.dtype == dtype
        assert result.device.type == DEVICE.type


def test_non_differentiable() -> None:
    matrix = tensor_(J_BASE, requires_grad=True)
    assert not NashMTL(2)(matrix).requires_grad
    assert not _weights(matrix).requires_grad
    assert not NashMTL.differentiable
    assert not _NashMTLWeighting.differentiable


def test_float32_input_matches_float64() -> None:
    matrix = torch.randn(6, 9, dtype=torch.float64) + 1.0
    expected = NashMTL(6)(matrix)
    result = NashMTL(6)(matrix.to(DTYPE).to(DEVICE))
    assert_close(result.cpu().double(), expected, rtol=1e-4, atol=1e-5)


def test_needs_only_torch() -> None:
    """CAGrad and NashMTL work without numpy, scipy and the solvers of TorchJD 0.18.0."""
    code = (
        "import json, sys\n"
        "for name in ['numpy', 'scipy', 'cvxpy', 'ecos', 'clarabel', 'quadprog', 'qpsolvers']:\n"
        "    sys.modules[name] = None\n"
        "import torch\n"
        "from torchjd.aggregation import CAGrad, NashMTL\n"
        "J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])\n"
        "print(json.dumps([CAGrad(c=0.5)(J).tolist(), NashMTL(n_tasks=2)(J).tolist()]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    cagrad, nash_mtl = json.loads(completed.stdout)
    assert cagrad == pytest.approx([0.1835, 1.2041, 1.2041], abs=1e-4)
    assert nash_mtl == pytest.approx([0.0542, 0.7061, 0.7061], abs=1e-4)


def test_overflowing_gramian_is_an_error_not_zero_weights() -> None:
    """A Gramian that overflows its dtype used to pass for "no bargaining solution" (zeros)."""
    J = torch.tensor([[1e20, 2e20, 0.0], [0.0, 1e20, -1e20]], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"too large for torch.float32"):
        NashMTL(n_tasks=2)(J)


def test_float16_matrix_whose_gramian_exceeds_float16() -> None:
    """The Gramian of a float16 matrix is computed in float32 (here ~1e6, beyond 65504)."""
    J = torch.tensor([[300.0, 200.0, 100.0], [-100.0, 500.0, 400.0]])
    result = NashMTL(n_tasks=2)(J.half())
    assert result.dtype == torch.float16
    torch.testing.assert_close(result.float(), NashMTL(n_tasks=2)(J), rtol=2e-3, atol=0.0)
