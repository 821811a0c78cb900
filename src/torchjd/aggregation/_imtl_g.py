from __future__ import annotations

import math

import torch
from torch import Tensor

from torchjd.linalg._host_cholesky import (
    CUTOFF_MARGIN,
    cholesky,
    cholesky_solve,
    smallest_eigenvalue_exceeds,
)
from torchjd.linalg._sym2 import pinv2

from ._aggregator_bases import GramianWeightedAggregator
from ._utils.non_differentiable import NonDifferentiable
from ._utils.small import use_python_floats
from ._weighting_bases import _GramianWeighting

_SUM_EPS = 1e-12
"""Below this absolute value, the sum of the unnormalised weights is treated as zero."""


class IMTLGWeighting(NonDifferentiable, _GramianWeighting):
    """Weights giving an update with equal projections onto every unit-normalised row.

    With ``d = sqrt(diag(G))`` (the row norms), ``v = G⁺ d`` (``G⁺`` the Moore–Penrose
    pseudo-inverse) and ``w = v / Σ_i v_i``. When ``|Σ_i v_i| < 1e-12`` (for instance for a zero
    matrix), the weights are zeros.

    For linearly independent rows, ``G w = d / Σ_i v_i``, so the update ``Jᵀw`` has the same inner
    product with every unit-normalised row ``g_i / ‖g_i‖``. The pseudo-inverse extends this to
    linearly dependent rows. Non-differentiable: the output carries no autograd graph.

    Reference: Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021 (IMTL-G, the
    gradient balancing part), generalised to linearly dependent rows.

    >>> import torch
    >>> IMTLGWeighting()(torch.tensor([[18.0, -22.0], [-22.0, 38.0]]))
    tensor([0.5923, 0.4077])
    """

    def forward(self, stat: Tensor, /) -> Tensor:
        if stat.shape[0] == 2 and use_python_floats(stat):
            return _two_objectives(stat)
        if use_python_floats(stat, _MAX_CHOLESKY_M):
            weights = _through_cholesky(stat)
            if weights is not None:
                return weights
        if use_python_floats(stat, _MAX_HOST_M):
            return _through_eigenvectors(stat)
        norms = stat.diagonal().sqrt()
        v = torch.linalg.pinv(stat, hermitian=True) @ norms  # eigh: 2.4x faster than SVD (m=128)
        v_sum = v.sum()
        # torch.where rather than a Python `if`: no host synchronisation on accelerators.
        is_zero = v_sum.abs() < _SUM_EPS
        safe_sum = torch.where(is_zero, torch.ones_like(v_sum), v_sum)
        return torch.where(is_zero, torch.zeros_like(v), v / safe_sum)


# Up to this many objectives, the CPU paths below keep the scalar work on the host; up to the
# first, a Cholesky factorisation in Python floats costs less than `eigh` and its tensor
# operations (IMTLG after a garbage collection, in-process A/B: 0.76x for m = 3 and 8, 0.92x
# for 16, 1.24x for 32).
_MAX_CHOLESKY_M = 16
_MAX_HOST_M = 64


def _through_cholesky(stat: Tensor) -> Tensor | None:
    """The weights of a Gramian that is clearly non-singular, by Cholesky in Python floats:
    ``G⁺ d = G⁻¹ d``. ``None`` when that cannot be guaranteed (the eigenvalue path decides).

    ``pinv`` cuts the eigenvalues below ``m · eps · λ_max``. ``trace(G)`` bounds ``λ_max`` from
    above, and the Cholesky factor ``λ_min`` from below (see :func:`smallest_eigenvalue_exceeds`):
    when ``λ_min`` is above ``CUTOFF_MARGIN`` times that cutoff of ``trace(G)``, no eigenvalue
    is cut. The result is then computed in float64.
    """
    m = stat.shape[0]
    G = stat.tolist()
    L = cholesky(G, list(range(m)))
    if L is None:
        return None
    diagonal = [G[i][i] for i in range(m)]
    trace = math.fsum(diagonal)
    cutoff = m * torch.finfo(stat.dtype).eps * trace
    if not smallest_eigenvalue_exceeds(L, trace, CUTOFF_MARGIN * cutoff):
        return None
    v = cholesky_solve(L, [math.sqrt(x) for x in diagonal])  # (a positive diagonal: L exists)
    return _normalised(v, stat)


def _through_eigenvectors(stat: Tensor) -> Tensor:
    """The same weights on the CPU without a graph: ``G⁺ d = Q Λ⁺ Qᵀ d`` from ``eigh``, with the
    eigenvalues and the small vectors read by the host.

    ``torch.linalg.pinv`` (``hermitian=True``) runs about ten tensor operations around its
    ``eigh``, and the normalisation five more; each costs tens of microseconds when caches are
    cold (as after a garbage collection in a training loop). Here ``Λ⁺`` keeps the eigenvalues
    above ``pinv``'s default cutoff, ``m · eps · max|λ|``.
    """
    m = stat.shape[0]
    diagonal = stat.diagonal().tolist()
    norms = torch.tensor(
        [math.sqrt(x) if x >= 0.0 else math.nan for x in diagonal], dtype=stat.dtype
    )
    eigenvalues, Q = torch.linalg.eigh(stat)
    lambdas = eigenvalues.tolist()
    cutoff = m * torch.finfo(stat.dtype).eps * max((abs(x) for x in lambdas), default=0.0)
    projected = (Q.mT @ norms).tolist()
    scaled = [p / x if abs(x) > cutoff else 0.0 for p, x in zip(projected, lambdas, strict=True)]
    v = (Q @ torch.tensor(scaled, dtype=stat.dtype)).tolist()
    return _normalised(v, stat)


def _normalised(v: list[float], stat: Tensor) -> Tensor:
    """``v / Σ_i v_i`` as a tensor like ``stat`` (zeros when ``|Σ_i v_i| < _SUM_EPS``)."""
    total = math.fsum(v)
    weights = [0.0] * len(v) if abs(total) < _SUM_EPS else [x / total for x in v]
    return torch.tensor(weights, dtype=stat.dtype, device=stat.device)


def _two_objectives(stat: Tensor) -> Tensor:
    """The same weights for a ``[2, 2]`` Gramian, in Python floats (see ``_sym2``)."""
    (a, b), (_, c) = stat.tolist()
    # torch.linalg.pinv's default tolerance, with the precision of the Gramian's dtype.
    p, q, r = pinv2(a, b, c, rtol=2 * torch.finfo(stat.dtype).eps)
    norms = [math.sqrt(x) if x >= 0.0 else math.nan for x in (a, c)]
    return _normalised([p * norms[0] + q * norms[1], q * norms[0] + r * norms[1]], stat)


class IMTLG(NonDifferentiable, GramianWeightedAggregator):
    """Returns the combination of the rows with equal projections onto every unit-normalised row:
    ``A(J) = Jᵀw`` with the weights of :class:`IMTLGWeighting`.

    Non-differentiable: the output carries no autograd graph.

    Reference: Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021.

    >>> import torch
    >>> IMTLG()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.0767, 1.0000, 1.0000])
    """

    def __init__(self) -> None:
        super().__init__(IMTLGWeighting())
