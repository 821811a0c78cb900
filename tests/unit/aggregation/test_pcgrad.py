from __future__ import annotations

import itertools

import numpy as np
import pytest
import quadprog
import torch
from torch import Tensor

from settings import DEVICE, DTYPE
from torchjd.aggregation import PCGrad, PCGradWeighting
from torchjd.aggregation._pcgrad import _project_conflicts, _random_orders
from utils.tensors import randn_, tensor_, zeros_

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]
G_BASE = [[18.0, -22.0], [-22.0, 38.0]]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def _orders_like_pcgrad(m: int, seed: int) -> Tensor:
    """The orders that ``PCGrad(generator=_generator(seed))`` draws: m² float32 uniforms."""
    keys = torch.rand(m, m, generator=_generator(seed), dtype=torch.float32, device=DEVICE)
    return torch.argsort(keys, dim=1)


def _reference_pcgrad(matrix: Tensor, orders: Tensor) -> Tensor:
    """PCGrad as in the paper, in the space of the gradients, one task at a time, in float64."""
    J = matrix.double()
    result = torch.zeros(J.shape[1], dtype=torch.float64, device=J.device)
    for i in range(J.shape[0]):
        g = J[i].clone()
        for j in orders[i].tolist():
            if j == i:
                continue
            inner = float(g @ J[j])
            if inner < 0.0:
                g = g - inner / float(J[j] @ J[j]) * J[j]
        result += g
    return result


def _reference_coefficients(gramian: Tensor, orders: Tensor) -> Tensor:
    """The coefficients of PCGrad on the Gramian, task by task, entry by entry, in float64."""
    G = gramian.double().cpu()
    m = G.shape[0]
    C = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m):
        c = [0.0] * m
        c[i] = 1.0
        for j in orders[i].tolist():
            if j == i:
                continue
            inner = sum(float(G[j, k]) * c[k] for k in range(m))
            if inner < 0.0:
                c[j] -= inner / float(G[j, j])
        C[i] = torch.tensor(c, dtype=torch.float64)
    return C


def _dual_cone_projection(matrix: Tensor, vector: Tensor) -> Tensor:
    """``argmin ‖x − vector‖²  s.t.  matrix x ≥ 0``, solved by quadprog in float64."""
    J = matrix.double().cpu().numpy()
    g = vector.double().cpu().numpy()
    x = quadprog.solve_qp(np.eye(J.shape[1]), g, J.T, np.zeros(J.shape[0]), 0)[0]
    return torch.from_numpy(x)


def test_reference_values() -> None:
    torch.manual_seed(0)
    result = PCGrad()(tensor_(J_BASE))
    torch.testing.assert_close(result, tensor_([0.5848, 3.8012, 3.8012]), rtol=0, atol=1e-4)
    torch.manual_seed(0)
    weights = PCGradWeighting()(tensor_(G_BASE))
    torch.testing.assert_close(weights, tensor_([2.2222, 1.5789]), rtol=0, atol=1e-4)


def test_weights_two_rows_closed_form() -> None:
    """For m = 2 with G01 < 0: w = [1 − G01/G00, 1 − G01/G11]."""
    G = tensor_(G_BASE)
    expected = tensor_([1.0 + 22.0 / 18.0, 1.0 + 22.0 / 38.0])
    torch.testing.assert_close(PCGradWeighting()(G), expected)


@pytest.mark.parametrize(("m", "n"), [(3, 4), (5, 3), (8, 20), (12, 6)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_paper_loop_with_same_orders(m: int, n: int, seed: int) -> None:
    # Rows with a common negative offset make conflicts frequent.
    matrix = randn_(m, n) - 0.3 * randn_(1, n).abs()
    result = PCGrad(generator=_generator(seed))(matrix)
    expected = _reference_pcgrad(matrix, _orders_like_pcgrad(m, seed)).to(DTYPE)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "rows",
    [
        [[1.0, 0.2, -0.5], [-0.8, 1.0, 0.1], [-0.3, -0.9, 1.0]],
        # With the order [1, 2, 0], g0^PC ends up conflicting with g0 itself, which PCGrad skips.
        [[1.0, 0.0], [-1.0, -10.0], [-1.0, 0.05]],
    ],
)
def test_projections_on_every_order_of_three_tasks(rows: list[list[float]]) -> None:
    matrix = tensor_(rows)
    gramian = matrix @ matrix.T
    results = set()
    for permutations in itertools.product(itertools.permutations(range(3)), repeat=3):
        orders = torch.tensor(permutations, device=DEVICE)
        coefficients = _project_conflicts(gramian, orders)
        expected = _reference_coefficients(gramian, orders).to(device=DEVICE, dtype=DTYPE)
        torch.testing.assert_close(coefficients, expected, rtol=1e-5, atol=1e-5)
        results.add(tuple(round(float(x), 4) for x in coefficients.sum(dim=0)))
    # The order matters for three tasks: otherwise this test could not detect a wrong order.
    assert len(results) > 1


def test_random_orders_are_permutations_drawn_per_task() -> None:
    orders = _random_orders(50, _generator(0), DEVICE)
    expected = torch.arange(50, device=DEVICE).expand(50, 50)
    assert torch.equal(orders.sort(dim=1).values, expected)
    assert len({tuple(row) for row in orders.tolist()}) == 50


def test_generator_makes_calls_reproducible() -> None:
    matrix = randn_(7, 5)
    first = PCGrad(generator=_generator(3))(matrix)
    second = PCGrad(generator=_generator(3))(matrix)
    assert torch.equal(first, second)


def test_global_rng_by_default() -> None:
    matrix = randn_(7, 5) - 0.5
    torch.manual_seed(4)
    first = PCGrad()(matrix)
    torch.manual_seed(4)
    second = PCGrad()(matrix)
    assert torch.equal(first, second)


@pytest.mark.parametrize("seed", range(6))
def test_two_rows_equal_the_sum_of_dual_cone_projections(seed: int) -> None:
    """PCGrad with m = 2 is UPGrad with a sum preference (no regularisation)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    matrix[1] -= (1.5 * seed / 5) * matrix[0]  # from no conflict to strong conflict
    expected = sum(_dual_cone_projection(matrix, row) for row in matrix)
    assert isinstance(expected, Tensor)
    result = PCGrad()(matrix.to(device=DEVICE, dtype=DTYPE))
    torch.testing.assert_close(result, expected.to(device=DEVICE, dtype=DTYPE))


def test_two_rows_equal_the_sum_of_dual_cone_projections_on_j_base() -> None:
    matrix = torch.tensor(J_BASE, dtype=torch.float64)
    expected = _dual_cone_projection(matrix, matrix[0]) + _dual_cone_projection(matrix, matrix[1])
    torch.testing.assert_close(PCGrad()(tensor_(J_BASE)), expected.to(device=DEVICE, dtype=DTYPE))


def test_two_rows_non_conflicting() -> None:
    matrix = tensor_([[3.0, -1.0, 0.5], [-2.0, 2.0, 1.0]])
    assert bool((matrix @ PCGrad()(matrix) >= -1e-5).all())


def test_no_conflict_gives_the_sum() -> None:
    matrix = randn_(6, 4).abs()
    torch.testing.assert_close(PCGrad()(matrix), matrix.sum(dim=0))


def test_zero_rows_are_not_projected_on() -> None:
    matrix = tensor_([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.5]])
    # g0 ← g0 + 0.8 g2 = [0.2, 0.4]; g2 ← g2 + g0 = [0, 0.5]; the zero row stays zero.
    torch.testing.assert_close(PCGrad()(matrix), tensor_([0.2, 0.9]))
    torch.testing.assert_close(PCGrad()(zeros_(3, 4)), zeros_(4))


def test_zero_diagonal_entry_gives_no_nan() -> None:
    gramian = tensor_([[0.0, -1.0], [-1.0, 1.0]])  # not PSD: row 0 is "zero" only on the diagonal
    weights = PCGradWeighting()(gramian)
    assert bool(torch.isfinite(weights).all())
    # Task 0 is projected on row 1 (c = [1, 1]); task 1 is not projected on the zero row 0.
    torch.testing.assert_close(weights, tensor_([1.0, 2.0]))


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_under_scaling_for_fixed_orders(seed: int) -> None:
    matrix = randn_(6, 4)
    c1, c2 = randn_(6).abs() + 0.1, randn_(6).abs() + 0.1

    def aggregate(coefficients: Tensor) -> Tensor:
        result: Tensor = PCGrad(generator=_generator(seed))(coefficients.unsqueeze(1) * matrix)
        return result

    result = aggregate(2.0 * c1 + 3.0 * c2)
    torch.testing.assert_close(result, 2.0 * aggregate(c1) + 3.0 * aggregate(c2))


def test_keeps_dtype_and_device() -> None:
    weights = PCGradWeighting()(tensor_(G_BASE))
    assert weights.dtype == DTYPE
    assert weights.device.type == DEVICE.type


def test_non_differentiable() -> None:
    matrix = tensor_(J_BASE, requires_grad=True)
    assert not PCGrad()(matrix).requires_grad
    assert not PCGradWeighting()(matrix @ matrix.T).requires_grad
    assert not PCGrad.differentiable
    assert not PCGradWeighting.differentiable


def test_representations() -> None:
    assert repr(PCGrad()) == "PCGrad()"
    assert str(PCGrad()) == "PCGrad"
    assert repr(PCGradWeighting()) == "PCGradWeighting()"
    generator = torch.Generator()
    assert repr(PCGrad(generator=generator)) == f"PCGrad(generator={generator!r})"


def test_gramian_weighting_attribute() -> None:
    generator = torch.Generator()
    aggregator = PCGrad(generator=generator)
    assert isinstance(aggregator.gramian_weighting, PCGradWeighting)
    assert aggregator.gramian_weighting.generator is generator


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("seed", range(4))
def test_python_float_path_matches_tensor_path(m: int, seed: int) -> None:
    """With m ≤ 8 on the CPU, the projections run on Python floats, with the same random orders
    as the batched tensor projections."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, 3, generator=g, dtype=torch.float64)
    G = J @ J.T
    fast = PCGradWeighting(generator=torch.Generator().manual_seed(7))(G)
    orders = _random_orders(m, torch.Generator().manual_seed(7), G.device)
    torch.testing.assert_close(fast, _project_conflicts(G, orders).sum(dim=0), rtol=1e-12, atol=0)
