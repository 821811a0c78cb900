from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.testing import assert_close

from torchjd.aggregation import Krum, KrumWeighting
from torchjd.linalg import PSDMatrix
from utils.tensors import ones_, randn_, tensor_


def _psd(x: Tensor) -> PSDMatrix:
    return cast(PSDMatrix, x)


J_KRUM = [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [75.0, -666.0, 23.0], [1.0, 2.0, 3.0], [2.0, 0.0, 1.0]]


def _loop_krum_weights(
    J: NDArray[np.float64], n_byzantine: int, n_selected: int
) -> NDArray[np.float64]:
    """Straightforward Multi-Krum with explicit loops over the rows, for cross-checking."""
    m = J.shape[0]
    scores = []
    for i in range(m):
        distances = sorted(float(np.linalg.norm(J[i] - J[j])) for j in range(m) if j != i)
        scores.append(sum(distances[: m - n_byzantine - 2]))
    weights = np.zeros(m)
    for i in np.argsort(scores, kind="stable")[:n_selected]:
        weights[i] = 1.0 / n_selected
    return weights


def test_reference_values() -> None:
    J = tensor_(J_KRUM)
    assert_close(Krum(1, 4)(J), tensor_([1.25, 0.75, 1.5]))
    assert_close(KrumWeighting(1, 4)(_psd(J @ J.T)), tensor_([0.25, 0.25, 0.0, 0.25, 0.25]))


@pytest.mark.parametrize(
    ("m", "n_byzantine", "n_selected"),
    [(3, 0, 1), (5, 1, 1), (5, 1, 4), (8, 2, 3), (8, 0, 8), (12, 4, 5), (12, 9, 2)],
)
def test_matches_a_straightforward_loop(m: int, n_byzantine: int, n_selected: int) -> None:
    J = randn_(m, 6, dtype=torch.float64)
    weights = KrumWeighting(n_byzantine, n_selected)(_psd(J @ J.T))
    expected = _loop_krum_weights(J.cpu().numpy(), n_byzantine, n_selected)
    assert_close(weights.cpu(), torch.from_numpy(expected))


def test_byzantine_rows_are_never_selected() -> None:
    honest = randn_(7, 4)
    byzantine = 100.0 * randn_(2, 4)
    J = torch.cat([honest[:3], byzantine, honest[3:]])
    weights = KrumWeighting(n_byzantine=2, n_selected=7)(_psd(J @ J.T))
    assert_close(weights[3:5], torch.zeros_like(weights[3:5]))
    assert_close(weights.sum(), tensor_(1.0))


def test_distances_are_not_squared() -> None:
    # Points 0, 1, 6, 9, 13 on a line, f = 1: each score sums the 2 nearest other distances.
    # Euclidean scores: 1+6=7, 1+5=6, 3+5=8, 3+4=7, 4+7=11 → row 1 (x = 1).
    # Squared scores: 1+36=37, 1+25=26, 9+25=34, 9+16=25, 16+49=65 → row 3 would win instead.
    J = tensor_([[0.0], [1.0], [6.0], [9.0], [13.0]])
    weights = KrumWeighting(n_byzantine=1)(_psd(J @ J.T))
    assert_close(weights, tensor_([0.0, 1.0, 0.0, 0.0, 0.0]))


def test_negative_squared_distances_are_clamped() -> None:
    # The Gramian of the points 0, 0, 3, 10 with a rounding-like error on G_01: the squared
    # distance of rows 0 and 1 is −2e-6. Clamped to 0, rows 0 and 1 get the best scores (3);
    # a NaN there would instead hand the selection to rows 2 and 3.
    J = tensor_([[0.0], [0.0], [3.0], [10.0]])
    G = J @ J.T
    G[0, 1] = G[1, 0] = 1e-6
    weights = KrumWeighting(n_byzantine=0, n_selected=2)(_psd(G))
    assert_close(weights, tensor_([0.5, 0.5, 0.0, 0.0]))


def test_is_differentiable_with_constant_weights() -> None:
    J = tensor_(J_KRUM).requires_grad_()
    torch.autograd.backward(Krum(1, 4)(J).sum())
    assert J.grad is not None
    expected = tensor_([0.25, 0.25, 0.0, 0.25, 0.25]).unsqueeze(1).expand(5, 3)
    assert_close(J.grad, expected)
    assert not KrumWeighting(1, 4)(_psd(J @ J.T)).requires_grad


@pytest.mark.parametrize("n_byzantine", [-1, -5])
def test_invalid_n_byzantine(n_byzantine: int) -> None:
    with pytest.raises(ValueError, match="n_byzantine"):
        Krum(n_byzantine)
    with pytest.raises(ValueError, match="n_byzantine"):
        KrumWeighting(n_byzantine)


@pytest.mark.parametrize("n_selected", [0, -2])
def test_invalid_n_selected(n_selected: int) -> None:
    with pytest.raises(ValueError, match="n_selected"):
        Krum(1, n_selected)
    with pytest.raises(ValueError, match="n_selected"):
        KrumWeighting(1, n_selected)


def test_invalid_types() -> None:
    with pytest.raises(TypeError, match="n_byzantine"):
        Krum(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n_selected"):
        Krum(1, True)


def test_too_few_rows_for_n_byzantine() -> None:
    with pytest.raises(ValueError, match=r"n_byzantine \+ 3"):
        Krum(2)(randn_(4, 3))
    with pytest.raises(ValueError, match="n_byzantine"):
        KrumWeighting(0)(_psd(ones_(2, 2)))
    Krum(2)(randn_(5, 3))  # m = n_byzantine + 3 is enough


def test_too_few_rows_for_n_selected() -> None:
    with pytest.raises(ValueError, match="n_selected"):
        Krum(0, 4)(randn_(3, 3))
    Krum(0, 3)(randn_(3, 3))  # m = n_selected is enough


def test_repr_and_str() -> None:
    assert repr(Krum(1, 2)) == "Krum(n_byzantine=1, n_selected=2)"
    assert str(Krum(1, 2)) == "Krum1-2"
    assert repr(Krum(3)) == "Krum(n_byzantine=3, n_selected=1)"
    assert repr(KrumWeighting(1, 2)) == "KrumWeighting()"
