from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from settings import DTYPE
from torchjd.aggregation import IMTLG, IMTLGWeighting
from torchjd.aggregation import _imtl_g as imtl_g_module
from torchjd.linalg import PSDMatrix
from utils.tensors import randn_, tensor_, zeros_


def _psd(x: Tensor) -> PSDMatrix:
    return cast(PSDMatrix, x)


J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]
TOL = 1e-4 if torch.float32 == DTYPE else 1e-9


def test_reference_values() -> None:
    J = tensor_(J_BASE)
    assert_close(IMTLG()(J), tensor_([0.0767, 1.0, 1.0]), atol=1e-4, rtol=0)
    assert_close(IMTLGWeighting()(_psd(J @ J.T)), tensor_([0.5923, 0.4077]), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("m", "n"), [(1, 3), (3, 5), (5, 2), (6, 6), (10, 4)])
def test_matches_numpy_pseudo_inverse(m: int, n: int) -> None:
    J = randn_(m, n)
    G = J @ J.T
    G_np = G.cpu().double().numpy()
    # Same relative cutoff as torch.linalg.pinv: m · eps of the test dtype.
    rcond = m * torch.finfo(DTYPE).eps
    v = np.linalg.pinv(G_np, rcond=rcond, hermitian=True) @ np.sqrt(np.diag(G_np))
    expected = v / v.sum()
    weights = IMTLGWeighting()(_psd(G))
    assert_close(weights.cpu().double(), torch.from_numpy(expected), atol=TOL, rtol=TOL)


@pytest.mark.parametrize(("m", "n"), [(2, 3), (4, 4), (5, 9)])
def test_equal_projections_on_unit_rows(m: int, n: int) -> None:
    # Full row rank: ⟨Jᵀw, g_i/‖g_i‖⟩ is the same for every row i.
    J = randn_(m, n)
    update = IMTLG()(J)
    projections = (J @ update) / J.norm(dim=1)
    assert_close(projections, projections[0].expand(m), atol=TOL, rtol=TOL)


def test_weights_sum_to_one() -> None:
    J = randn_(6, 3)
    weights = IMTLGWeighting()(_psd(J @ J.T))
    assert_close(weights.sum(), tensor_(1.0), atol=TOL, rtol=0)


def test_zero_matrix_gives_zero_weights() -> None:
    assert_close(IMTLGWeighting()(_psd(zeros_(3, 3))), zeros_(3))
    assert_close(IMTLG()(zeros_(3, 4)), zeros_(4))


def test_opposite_rows_give_zero_weights() -> None:
    # pinv(G) d = 0, so Σv = 0: the zero case, not a division by zero.
    J = tensor_([[1.0, 2.0], [-1.0, -2.0]])
    weights = IMTLGWeighting()(_psd(J @ J.T))
    assert bool(torch.isfinite(weights).all())
    assert_close(weights, zeros_(2))


def test_linearly_dependent_rows() -> None:
    J = tensor_([[0.3, 2.7, 1.1], [-0.3, -2.7, -1.1], [1.0, 0.0, 0.0]])
    G = J @ J.T
    G_np = G.cpu().double().numpy()
    v = np.linalg.pinv(G_np) @ np.sqrt(np.diag(G_np))
    assert_close(
        IMTLGWeighting()(_psd(G)).cpu().double(), torch.from_numpy(v / v.sum()), atol=TOL, rtol=0
    )


def test_is_not_differentiable() -> None:
    J = randn_(3, 4).requires_grad_()
    assert not IMTLG()(J).requires_grad
    assert not IMTLGWeighting()(_psd(J @ J.T)).requires_grad
    assert not IMTLG.differentiable
    assert not IMTLGWeighting.differentiable


def test_repr_and_str() -> None:
    assert repr(IMTLG()) == "IMTLG()"
    assert str(IMTLG()) == "IMTLG"
    assert repr(IMTLGWeighting()) == "IMTLGWeighting()"


@pytest.mark.parametrize(
    "J",
    [
        [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]],
        [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]],  # linearly dependent rows
        [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],  # opposite rows: the weights sum to 0
        [[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]],  # a zero row
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[3e-8, 1e-8, 0.0], [1e-8, 2e-8, 1e-8]],
    ],
)
def test_two_objectives_in_closed_form_match_the_tensor_path(J: list[list[float]]) -> None:
    """With two objectives (on the CPU, without autograd), the weights are computed in closed
    form on Python floats: they are those of the tensor path (pinv), in float64."""
    gramian = torch.tensor(J, dtype=torch.float64) @ torch.tensor(J, dtype=torch.float64).T
    closed_form = IMTLGWeighting()(_psd(gramian))
    norms = gramian.diagonal().sqrt()
    v = torch.linalg.pinv(gramian) @ norms
    expected = v / v.sum() if float(v.sum().abs()) >= 1e-12 else torch.zeros(2, dtype=torch.float64)
    assert_close(closed_form, expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    ("m", "rank"), [(3, 0), (3, 1), (3, 3), (17, 5), (17, 16), (64, 1), (64, 40), (64, 64)]
)
def test_host_path_matches_the_tensor_path(
    m: int, rank: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to 64 objectives on the CPU without autograd, the weights come from ``eigh`` with the
    scalar work on the host: they are those of ``pinv`` (same cutoff), rank-deficient or not."""
    generator = torch.Generator().manual_seed(m * 100 + rank)
    J = torch.randn(m, rank, generator=generator, dtype=torch.float64) @ torch.randn(
        rank, 2 * m, generator=generator, dtype=torch.float64
    )
    J[0] *= 1e-3  # a short row: unequal norms make the weights non-trivial
    gramian = J @ J.T
    host = IMTLGWeighting()(_psd(gramian))
    monkeypatch.setattr(imtl_g_module, "_MAX_CHOLESKY_M", 0)
    monkeypatch.setattr(imtl_g_module, "_MAX_HOST_M", 0)
    tensor_path = IMTLGWeighting()(_psd(gramian))
    v = torch.linalg.pinv(gramian, hermitian=True) @ gramian.diagonal().sqrt()
    expected = v / v.sum() if float(v.sum().abs()) >= 1e-12 else torch.zeros(m, dtype=v.dtype)
    assert host.dtype == torch.float64
    assert_close(host, expected, atol=1e-9, rtol=1e-7)
    assert_close(host, tensor_path, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("m", [2, 3, 8, 16])
@pytest.mark.parametrize("condition", [1.0, 1e3, 1e5, 1e7, 1e12])
@pytest.mark.parametrize("scale", [1e-10, 1.0, 1e15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cholesky_path_matches_the_eigenvalue_paths(
    m: int, condition: float, scale: float, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to 16 objectives, a Gramian whose smallest eigenvalue is provably above pinv's cutoff
    ``m · eps · λ_max`` is solved by Cholesky; the others fall back to ``eigh``. Either way, the
    weights are those of ``pinv``, whatever the conditioning and the scale: in float32, ``pinv``
    cuts the smallest eigenvalues of the Gramians of condition 1e7 and 1e12, and so does the
    fallback."""
    generator = torch.Generator().manual_seed(m)
    Q = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=torch.float64)).Q
    eigenvalues = scale * torch.logspace(0, -math.log10(condition), m, dtype=torch.float64)
    gramian = ((Q * eigenvalues) @ Q.T).to(dtype)
    gramian = (gramian + gramian.T) / 2
    eps = torch.finfo(dtype).eps
    solved = imtl_g_module._through_cholesky(gramian)
    # The criterion is sufficient, not necessary: it may decline up to a factor m² or so early.
    if condition * m**3 * eps * 10 < 1.0:
        assert solved is not None
    if condition * m * eps > 1.0:
        assert solved is None
    weights = IMTLGWeighting()(_psd(gramian))
    monkeypatch.setattr(imtl_g_module, "_MAX_CHOLESKY_M", 0)
    through_eigh = IMTLGWeighting()(_psd(gramian))
    monkeypatch.setattr(imtl_g_module, "_MAX_HOST_M", 0)
    through_pinv = IMTLGWeighting()(_psd(gramian))
    if solved is None:
        assert_close(weights, through_eigh, atol=0.0, rtol=0.0)  # the same computation
    else:
        # The relative rounding of a solve: eps times the condition number.
        tolerance = 100 * eps * condition
        assert_close(weights, through_pinv, atol=tolerance, rtol=tolerance)
    # (The condition number of what pinv inverts is at most 1 / (m eps).)
    tolerance = 100 * eps * min(condition, 1.0 / (m * eps))
    assert_close(through_eigh, through_pinv, atol=tolerance, rtol=tolerance)


def test_cholesky_path_declines_singular_and_non_finite_gramians() -> None:
    rank_one = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    assert imtl_g_module._through_cholesky(rank_one.T @ rank_one) is None
    assert imtl_g_module._through_cholesky(torch.zeros(3, 3, dtype=torch.float64)) is None
    not_psd = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    assert imtl_g_module._through_cholesky(not_psd) is None
