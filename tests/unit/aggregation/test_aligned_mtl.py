from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.testing import assert_close

from settings import DEVICE, DTYPE
from torchjd.aggregation import AlignedMTL, AlignedMTLWeighting
from torchjd.aggregation._aligned_mtl import (
    ScaleMode,
    _balance_matrix,
    _on_the_cpu,
    _two_objectives,
)
from torchjd.linalg import PSDMatrix
from utils.tensors import ones_, randn_, tensor_, zeros_


def _psd(x: Tensor) -> PSDMatrix:
    return cast(PSDMatrix, x)


J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]
TOL = 1e-4 if torch.float32 == DTYPE else 1e-9
SCALE_MODES: list[ScaleMode] = ["min", "median", "rmse"]


def _numpy_weights(
    G: NDArray[np.float64], u: NDArray[np.float64], scale_mode: str, eps: float
) -> NDArray[np.float64]:
    """Straightforward re-implementation with numpy, for cross-checking."""
    m = G.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(G, UPLO="U")
    tolerance = eigenvalues.max() * m * eps
    rank = int((eigenvalues > tolerance).sum())
    if rank == 0:
        return u
    order = np.argsort(eigenvalues)[::-1][:rank]
    kept, vectors = eigenvalues[order], eigenvectors[:, order]
    if scale_mode == "min":
        scale = kept.min()
    elif scale_mode == "median":
        scale = np.sort(kept)[(rank - 1) // 2]  # lower middle, like torch.median
    else:
        scale = kept.mean()
    B = np.sqrt(scale) * vectors @ np.diag(kept**-0.5) @ vectors.T
    weights: NDArray[np.float64] = B @ u
    return weights


def test_reference_values() -> None:
    J = tensor_(J_BASE)
    assert_close(AlignedMTL()(J), tensor_([0.2133, 0.9673, 0.9673]), atol=1e-4, rtol=0)
    assert_close(AlignedMTLWeighting()(_psd(J @ J.T)), tensor_([0.5591, 0.4083]), atol=1e-4, rtol=0)
    median = AlignedMTL(scale_mode="median")(J)
    assert_close(median, tensor_([0.2133, 0.9673, 0.9673]), atol=1e-4, rtol=0)
    rmse = AlignedMTL(scale_mode="rmse")(J)
    assert_close(rmse, tensor_([0.5764, 2.6142, 2.6142]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale_mode", SCALE_MODES)
@pytest.mark.parametrize(("m", "n"), [(1, 3), (3, 5), (4, 4), (5, 8), (6, 2), (7, 3)])
@pytest.mark.parametrize("with_pref", [False, True])
def test_matches_numpy(scale_mode: ScaleMode, m: int, n: int, with_pref: bool) -> None:
    J = randn_(m, n)
    G = J @ J.T
    pref = randn_(m).abs() + 0.1 if with_pref else None
    weights = AlignedMTLWeighting(pref_vector=pref, scale_mode=scale_mode)(_psd(G))
    u = np.full(m, 1.0 / m) if pref is None else pref.cpu().double().numpy()
    eps = torch.finfo(DTYPE).eps
    expected = _numpy_weights(G.cpu().double().numpy(), u, scale_mode, eps)
    assert_close(weights.cpu().double(), torch.from_numpy(expected), atol=TOL, rtol=10 * TOL)


@pytest.mark.parametrize("scale_mode", SCALE_MODES)
def test_balanced_gramian_for_full_row_rank(scale_mode: ScaleMode) -> None:
    # B G B = s·I: the rows of BᵀJ are orthogonal with squared norm s.
    J = randn_(4, 6, dtype=torch.float64)
    G = J @ J.T
    eigenvalues = torch.linalg.eigvalsh(G)
    scales = {"min": eigenvalues[0], "median": eigenvalues[1], "rmse": eigenvalues.mean()}
    B = torch.stack(
        [AlignedMTLWeighting(pref_vector=e, scale_mode=scale_mode)(_psd(G)) for e in torch.eye(4)],
        dim=1,
    ).to(G)
    assert_close(B @ G @ B, scales[scale_mode] * torch.eye(4, dtype=torch.float64, device=DEVICE))


def test_median_is_the_lower_middle_eigenvalue() -> None:
    # Diagonal G with eigenvalues 1, 4, 9, 16: median → 4, so w = sqrt(4)·Λ^{-1/2}·u.
    G = torch.diag(tensor_([16.0, 1.0, 9.0, 4.0]))
    weights = AlignedMTLWeighting(pref_vector=ones_(4), scale_mode="median")(_psd(G))
    assert_close(weights, tensor_([0.5, 2.0, 2.0 / 3.0, 1.0]))


def test_rank_deficient_gramian_ignores_null_directions() -> None:
    # Two identical rows: rank 1, the kept eigenvalue is 2·‖g‖², B = sqrt(λ) v vᵀ / sqrt(λ).
    J = tensor_([[3.0, 4.0], [3.0, 4.0]])
    weights = AlignedMTLWeighting()(_psd(J @ J.T))
    assert_close(weights, tensor_([0.5, 0.5]), atol=TOL, rtol=0)


def test_zero_matrix_uses_the_identity() -> None:
    assert_close(AlignedMTLWeighting()(_psd(zeros_(3, 3))), tensor_([1 / 3, 1 / 3, 1 / 3]))
    pref = tensor_([1.0, 2.0])
    assert_close(AlignedMTLWeighting(pref_vector=pref)(_psd(zeros_(2, 2))), pref)
    assert_close(AlignedMTL()(zeros_(3, 4)), zeros_(4))


def test_pref_vector_scales_the_weights_linearly() -> None:
    J = randn_(3, 5)
    G = J @ J.T
    pref = tensor_([1.0, 2.0, 3.0])
    combined = AlignedMTLWeighting(pref_vector=pref)(_psd(G))
    parts = [
        AlignedMTLWeighting(pref_vector=e)(_psd(G))
        for e in torch.eye(3, dtype=DTYPE, device=DEVICE)
    ]
    assert_close(combined, parts[0] + 2.0 * parts[1] + 3.0 * parts[2], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("scale_mode", SCALE_MODES)
@pytest.mark.parametrize(("m", "n"), [(3, 5), (5, 2), (4, 4)])
def test_gradient_matches_finite_differences(scale_mode: ScaleMode, m: int, n: int) -> None:
    J = randn_(m, n, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(AlignedMTL(scale_mode=scale_mode), (J,))


def test_gradient_is_correct_for_repeated_eigenvalues() -> None:
    # G = I: differentiating through torch.linalg.eigh would give NaN here. The "rmse" scale
    # (the trace over m) keeps the map smooth, so finite differences apply.
    J = torch.eye(3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(AlignedMTL(scale_mode="rmse"), (J,))
    Q = torch.linalg.qr(
        randn_(3, 3, dtype=torch.float64)
    ).Q.requires_grad_()  # orthonormal rows: G = I as well
    assert torch.autograd.gradcheck(AlignedMTL(scale_mode="rmse"), (Q,))


@pytest.mark.parametrize(
    "J",
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ],
)
def test_gradient_is_finite_on_degenerate_inputs(J: list[list[float]]) -> None:
    for scale_mode in SCALE_MODES:
        matrix = tensor_(J).requires_grad_()
        torch.autograd.backward(AlignedMTL(scale_mode=scale_mode)(matrix).sum())
        assert matrix.grad is not None
        assert bool(torch.isfinite(matrix.grad).all())


def test_zero_matrix_gradient_is_the_mean_weight() -> None:
    # Rank 0: w = u is constant, so d(Σ_k (wᵀJ)_k)/dJ_ik = u_i.
    Z = zeros_(3, 4).requires_grad_()
    torch.autograd.backward(AlignedMTL()(Z).sum())
    assert Z.grad is not None
    assert_close(Z.grad, torch.full_like(Z, 1 / 3))


def test_double_backward_is_refused() -> None:
    J = randn_(3, 4, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(AlignedMTL()(J).sum(), J, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.backward(grad.sum())


@pytest.mark.parametrize("scale_mode", ["max", "MIN", "", None, 0])
def test_invalid_scale_mode(scale_mode: object) -> None:
    with pytest.raises(ValueError, match=r"Invalid scale_mode=.*Expected") as info:
        AlignedMTL(scale_mode=scale_mode)  # type: ignore[arg-type]
    for allowed in SCALE_MODES:
        assert repr(allowed) in str(info.value)
    with pytest.raises(ValueError, match=r"Invalid scale_mode=.*Expected"):
        AlignedMTLWeighting(scale_mode=scale_mode)  # type: ignore[arg-type]


def test_invalid_pref_vector_shape() -> None:
    with pytest.raises(ValueError, match="pref_vector"):
        AlignedMTL(pref_vector=ones_(2, 2))
    with pytest.raises(TypeError, match="pref_vector"):
        AlignedMTLWeighting(pref_vector=[1.0, 2.0])  # type: ignore[arg-type]


def test_pref_vector_length_mismatch_at_call() -> None:
    with pytest.raises(ValueError, match="3 entries"):
        AlignedMTL(pref_vector=ones_(2))(randn_(3, 4))


def test_repr_and_str() -> None:
    assert repr(AlignedMTL()) == "AlignedMTL(pref_vector=None, scale_mode='min')"
    assert str(AlignedMTL()) == "AlignedMTL"
    pref = torch.tensor([1.0, 2.0])
    assert repr(AlignedMTL(pref_vector=pref, scale_mode="rmse")) == (
        f"AlignedMTL(pref_vector={pref!r}, scale_mode='rmse')"
    )
    assert str(AlignedMTL(pref_vector=pref)) == "AlignedMTL([1., 2.])"


@pytest.mark.parametrize(
    "J",
    [
        [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]],
        [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]],  # rank 1
        [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],  # orthogonal rows
        [[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]],  # a zero row
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # rank 0: B = I
        [[3e-8, 1e-8, 0.0], [1e-8, 2e-8, 1e-8]],
    ],
)
@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("pref", [[0.5, 0.5], [0.2, 3.0]])
def test_two_objectives_in_closed_form_match_the_tensor_path(
    J: list[list[float]], scale_mode: ScaleMode, pref: list[float]
) -> None:
    """With two objectives (on the CPU, without autograd), the weights are computed in closed
    form on Python floats: they are those of the tensor path (eigh), in float64."""
    matrix = torch.tensor(J, dtype=torch.float64)
    gramian = matrix @ matrix.T
    u = torch.tensor(pref, dtype=torch.float64)
    expected = _balance_matrix(gramian, scale_mode) @ u
    assert_close(_two_objectives(gramian, u, scale_mode), expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize(("m", "rank"), [(3, 3), (5, 2), (8, 8), (16, 5), (32, 32), (6, 0)])
def test_host_path_matches_the_balance_matrix(scale_mode: ScaleMode, m: int, rank: int) -> None:
    """Without a graph on the CPU, ``B u`` is computed through the eigenvectors with the
    eigenvalues read by the host: the same weights as forming ``B`` (the graph path), for full
    rank, rank-deficient and zero Gramians."""
    g = torch.Generator().manual_seed(m + rank)
    J = torch.randn(m, max(rank, 1), generator=g, dtype=torch.float64)
    J = J if rank > 0 else torch.zeros_like(J)
    G = cast(PSDMatrix, (J @ J.T).to(dtype=DTYPE))
    u = torch.rand(m, generator=g, dtype=torch.float64).to(dtype=DTYPE)
    expected = _balance_matrix(G, scale_mode) @ u
    tolerance = 1e-9 if torch.float64 == DTYPE else 1e-4
    assert_close(_on_the_cpu(G, u, scale_mode), expected, rtol=tolerance, atol=tolerance)
