from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from scipy.optimize import minimize
from torch import Tensor
from torch.testing import assert_close

from settings import DEVICE
from torchjd.aggregation import MGDA, MGDAWeighting
from torchjd.aggregation._utils.small import use_python_floats
from torchjd.linalg import PSDMatrix
from utils.tensors import randn_, tensor_


def _psd(x: Tensor) -> PSDMatrix:
    return cast(PSDMatrix, x)


J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]


def _numpy_frank_wolfe(
    G: NDArray[np.float64], epsilon: float, max_iters: int
) -> NDArray[np.float64]:
    """Straightforward scalar re-implementation of the Frank–Wolfe scheme, for cross-checking."""
    m = G.shape[0]
    alpha = np.full(m, 1.0 / m)
    for _ in range(max_iters):
        g_alpha = G @ alpha
        t = int(np.argmin(g_alpha))
        a, b, c = g_alpha[t], float(alpha @ g_alpha), G[t, t]
        if c <= a:
            gamma = 1.0
        elif b <= a:
            gamma = 0.0
        else:
            gamma = (b - a) / (b + c - 2 * a)
        vertex = np.zeros(m)
        vertex[t] = 1.0
        alpha = (1 - gamma) * alpha + gamma * vertex
        if gamma < epsilon:
            break
    return alpha


def _scipy_min_norm(G: NDArray[np.float64]) -> NDArray[np.float64]:
    """Solve ``min αᵀGα`` on the simplex with SLSQP, an independent solver."""
    m = G.shape[0]
    result = minimize(
        lambda a: a @ G @ a,
        np.full(m, 1.0 / m),
        jac=lambda a: 2.0 * G @ a,
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert result.success
    solution: NDArray[np.float64] = result.x
    return solution


def test_reference_values() -> None:
    J = tensor_(J_BASE)
    assert_close(MGDA()(J), tensor_([0.0, 1.0, 1.0]), atol=1e-4, rtol=0)
    assert_close(MGDAWeighting()(_psd(J @ J.T)), tensor_([0.6, 0.4]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [1, 3, 10])
def test_two_rows_match_the_closed_form(n: int) -> None:
    # For m = 2 the simplex is a segment: one exact line search reaches the optimum.
    J = randn_(2, n)
    g1, g2 = J[0], J[1]
    diff = g1 - g2
    alpha1 = ((g2 @ (g2 - g1)) / (diff @ diff)).clamp(0.0, 1.0)
    expected = torch.stack([alpha1, 1.0 - alpha1])
    assert_close(MGDAWeighting()(_psd(J @ J.T)), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("m", "n"), [(3, 5), (5, 8), (6, 3), (8, 20)])
@pytest.mark.parametrize(("epsilon", "max_iters"), [(0.001, 100), (1e-6, 7), (0.1, 100)])
def test_matches_a_straightforward_loop(m: int, n: int, epsilon: float, max_iters: int) -> None:
    # float64: the exact same arithmetic must take the same stopping decisions.
    J = randn_(m, n, dtype=torch.float64)
    G = J @ J.T
    weights = MGDAWeighting(epsilon=epsilon, max_iters=max_iters)(_psd(G))
    expected = _numpy_frank_wolfe(G.cpu().numpy(), epsilon, max_iters)
    assert_close(weights.cpu(), torch.from_numpy(expected), atol=1e-10, rtol=1e-9)


def test_single_iteration_is_one_line_search_step() -> None:
    G = tensor_([[4.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 3.0]])
    # α = 1/3: Gα = [5/3, 7/6, 7/6], t = 1, a = 7/6, b = 4/3, c = 2, γ = (1/6)/(1) = 1/6.
    expected = tensor_([5.0 / 18.0, 5.0 / 18.0 + 1.0 / 6.0, 5.0 / 18.0])
    assert_close(MGDAWeighting(max_iters=1)(_psd(G)), expected)


@pytest.mark.parametrize(("m", "n"), [(3, 5), (5, 8), (6, 3), (4, 2), (8, 20)])
def test_kkt_conditions_and_scipy_cross_check(m: int, n: int) -> None:
    # float64 and a tiny epsilon: Frank–Wolfe converges sublinearly, so we give it many steps.
    J = randn_(m, n, dtype=torch.float64)
    G = J @ J.T
    alpha = MGDAWeighting(epsilon=1e-14, max_iters=10_000)(_psd(G))
    g_alpha = G @ alpha
    value = alpha @ g_alpha
    gap = value - g_alpha.min()  # Frank–Wolfe duality gap, 0 exactly at the KKT point.

    assert bool((alpha >= 0).all())
    assert_close(alpha.sum(), torch.ones((), dtype=torch.float64, device=DEVICE))
    assert 0.0 <= float(gap) <= 1e-3 * (1.0 + float(value))

    G_np = G.cpu().numpy()
    J_np = J.cpu().numpy()
    reference = _scipy_min_norm(G_np)
    reference_value = float(reference @ G_np @ reference)
    # Convexity: f(α) − f* ≤ 2·gap, and ‖Jᵀα − d*‖² ≤ f(α) − f* for the min-norm point d*.
    excess = float(value) - reference_value
    assert -1e-9 <= excess <= 2.0 * float(gap) + 1e-9
    distance = np.linalg.norm(J_np.T @ alpha.cpu().numpy() - J_np.T @ reference)
    assert distance <= np.sqrt(max(excess, 0.0)) + 1e-6


def test_weights_are_on_the_simplex_with_default_parameters() -> None:
    J = randn_(7, 4)
    alpha = MGDAWeighting()(_psd(J @ J.T))
    assert bool((alpha >= 0).all())
    assert_close(alpha.sum(), tensor_(1.0))


def test_zero_matrix_jumps_to_the_first_vertex() -> None:
    # Every point is optimal; c = a = 0 triggers the full step γ = 1 towards t = argmin = 0.
    assert_close(MGDAWeighting()(_psd(tensor_([[0.0] * 3] * 3))), tensor_([1.0, 0.0, 0.0]))


def test_gradient_matches_the_two_row_closed_form() -> None:
    J = randn_(2, 4, dtype=torch.float64).requires_grad_()
    torch.autograd.backward(MGDA()(J).square().sum())
    assert J.grad is not None
    mgda_grad = J.grad.clone()

    J_ref = J.detach().clone().requires_grad_()
    g1, g2 = J_ref[0], J_ref[1]
    alpha1 = ((g2 @ (g2 - g1)) / ((g1 - g2) @ (g1 - g2))).clamp(0.0, 1.0)
    torch.autograd.backward((alpha1 * g1 + (1.0 - alpha1) * g2).square().sum())
    assert J_ref.grad is not None
    assert_close(mgda_grad, J_ref.grad)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_epsilon(epsilon: float) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        MGDA(epsilon=epsilon)
    with pytest.raises(ValueError, match="epsilon"):
        MGDAWeighting(epsilon=epsilon)


def test_invalid_epsilon_type() -> None:
    with pytest.raises(TypeError, match="epsilon"):
        MGDA(epsilon="0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("max_iters", [0, -3])
def test_invalid_max_iters(max_iters: int) -> None:
    with pytest.raises(ValueError, match="max_iters"):
        MGDA(max_iters=max_iters)
    with pytest.raises(ValueError, match="max_iters"):
        MGDAWeighting(max_iters=max_iters)


@pytest.mark.parametrize("max_iters", [1.5, True, "10"])
def test_invalid_max_iters_type(max_iters: object) -> None:
    with pytest.raises(TypeError, match="max_iters"):
        MGDA(max_iters=max_iters)  # type: ignore[arg-type]


def test_repr_and_str() -> None:
    assert repr(MGDA()) == "MGDA(epsilon=0.001, max_iters=100)"
    assert repr(MGDA(epsilon=0.1, max_iters=5)) == "MGDA(epsilon=0.1, max_iters=5)"
    assert str(MGDA()) == "MGDA"
    assert repr(MGDAWeighting()) == "MGDAWeighting()"


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 20, 32, 128, 256])
@pytest.mark.parametrize("seed", range(4))
def test_python_float_path_matches_tensor_path(m: int, seed: int) -> None:
    """With m ≤ 256 on the CPU and no graph to keep, the iterations run on Python floats; they
    must follow the same Frank–Wolfe steps as the tensor iterations (kept when G requires grad),
    although they update ``Gα`` instead of recomputing it."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, max(1, m - seed % 2), generator=g, dtype=torch.float64)
    G = cast(PSDMatrix, J @ J.T)
    weighting = MGDAWeighting(epsilon=1e-6, max_iters=500)
    fast = weighting(G)
    with torch.enable_grad():
        G_graph = cast(PSDMatrix, G.clone().requires_grad_())
        assert use_python_floats(G, 256)
        assert not use_python_floats(G_graph, 256)
        slow = weighting(G_graph)
    assert_close(fast, slow.detach(), rtol=1e-9, atol=1e-12)
