from __future__ import annotations

import math
import operator

import torch
from torch import Tensor

from torchjd.linalg import Matrix
from torchjd.linalg._host_cholesky import (
    CUTOFF_MARGIN,
    cholesky,
    cholesky_solve,
    smallest_eigenvalue_exceeds,
)
from torchjd.linalg._matrix import compute_gramian
from torchjd.linalg._sym2 import pinv2

from ._aggregator_bases import Aggregator
from ._constant import ConstantWeighting
from ._sum import SumWeighting
from ._utils.checks import check_length
from ._utils.non_differentiable import NonDifferentiable
from ._utils.pref_vector import pref_vector_to_weighting
from ._utils.small import use_python_floats
from ._utils.str import pref_suffix

# The pseudo-inverse has no half-precision kernels; such matrices are solved in float32.
_UPCAST = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _config_weights(gramian: Tensor, pref: Tensor) -> Tensor:
    """Return the weights ``λ`` ``[m]`` such that ``ConFIG(J) = λᵀ J``, from ``G = J Jᵀ`` alone.

    With ``D = diag(1/‖g_i‖)`` (0 for a zero row), the unit rows are ``U = D J``. The identity
    ``pinv(U) = Uᵀ pinv(U Uᵀ)`` of the Moore–Penrose pseudo-inverse gives
    ``b = pinv(U) w = Jᵀ y`` with ``y = D pinv(D G D) w``, and then ``‖b‖² = yᵀ G y`` and
    ``Σ_i g_iᵀ b = 1ᵀ G y``. The update ``(Σ_i g_iᵀ û) û`` with ``û = b/‖b‖`` is therefore
    ``Jᵀ y (1ᵀ G y) / (yᵀ G y)`` (zero when ``b = 0``).

    This replaces the SVD of the ``[m, n]`` matrix ``U`` by one ``[m, m]`` symmetric
    pseudo-inverse, which is much faster when ``n`` is large; ``J`` itself is only read by the
    Gramian and by the final combination. The only numerical difference is the cut-off of tiny
    singular values: the eigenvalues of ``D G D`` (the squared singular values of ``U``) below
    ``m·eps`` times the largest are treated as zero, i.e. unit rows that are linearly dependent up
    to about ``√(m·eps)`` are treated as exactly dependent.
    """
    norms = gramian.diagonal().sqrt()
    inverse_norms = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    unit_gramian = inverse_norms.unsqueeze(1) * gramian * inverse_norms.unsqueeze(0)
    y = inverse_norms * (torch.linalg.pinv(unit_gramian, hermitian=True) @ pref)
    g_y = gramian @ y
    squared_norm = y @ g_y  # ‖b‖²
    nonzero = squared_norm > _negligible_squared_norm(unit_gramian, pref)
    safe_squared_norm = torch.where(nonzero, squared_norm, 1.0)
    return torch.where(nonzero, y * (g_y.sum() / safe_squared_norm), 0.0)


def _negligible_squared_norm(unit_gramian: Tensor, pref: Tensor) -> Tensor:
    """The value of ``‖b‖²`` below which ``b`` is rounding noise and the update is set to 0.

    ``b = 0`` exactly when ``w`` is orthogonal to the range of ``U``, as with two opposite rows
    and ``w = [1, 1]``; rounding then leaves a tiny ``b`` of arbitrary direction, which the
    normalisation would blow up into an update of the size of ``J``. In general
    ``‖b‖² ≥ ‖w_U‖² / λ_max ≥ ‖w_U‖² / tr(U Uᵀ)``, where ``w_U`` is the projection of ``w`` on that
    range. Like the cut-off of the pseudo-inverse, ``w_U`` is treated as 0 when it is below
    ``√(m·eps)·‖w‖``, i.e. when ``‖b‖² · tr(U Uᵀ) ≤ m·eps·‖w‖²``.
    """
    m = unit_gramian.shape[0]
    eps = torch.finfo(unit_gramian.dtype).eps
    trace = unit_gramian.diagonal().sum()  # the number of non-zero rows, up to rounding
    threshold = m * eps * (pref @ pref)
    return torch.where(trace > 0, threshold / torch.where(trace > 0, trace, 1.0), threshold)


def _two_objectives(gramian: Tensor, pref: Tensor) -> Tensor:
    """:func:`_config_weights` for a ``[2, 2]`` Gramian, in Python floats (see ``_sym2``)."""
    (a, b), (_, c) = gramian.tolist()
    w = pref.tolist()
    eps = torch.finfo(gramian.dtype).eps
    inverse = [1.0 / math.sqrt(x) if x > 0.0 else 0.0 for x in (a, c)]
    # torch.linalg.pinv(hermitian=True)'s default tolerance, with the Gramian's precision.
    p, q, r = pinv2(
        a * inverse[0] ** 2, b * inverse[0] * inverse[1], c * inverse[1] ** 2, rtol=2 * eps
    )
    y = [inverse[0] * (p * w[0] + q * w[1]), inverse[1] * (q * w[0] + r * w[1])]
    g_y = [a * y[0] + b * y[1], b * y[0] + c * y[1]]
    squared_norm = y[0] * g_y[0] + y[1] * g_y[1]
    trace = a * inverse[0] ** 2 + c * inverse[1] ** 2
    threshold = 2 * eps * (w[0] * w[0] + w[1] * w[1])
    negligible = threshold / trace if trace > 0.0 else threshold
    scale = (g_y[0] + g_y[1]) / squared_norm if squared_norm > negligible else 0.0
    return torch.tensor([y[0] * scale, y[1] * scale], dtype=gramian.dtype, device=gramian.device)


def _few_objectives(gramian: Tensor, pref: Tensor) -> Tensor:
    """:func:`_config_weights` for a handful of objectives (on the CPU, without a graph), in
    Python floats (float64).

    Two tensor operations (reading ``G`` and building the result) instead of about forty, each
    of which costs microseconds of dispatch while the arithmetic is a few hundred flops. When the
    unit Gramian is provably far from singular (see :func:`smallest_eigenvalue_exceeds`), no
    eigenvalue is below the cut-off of ``torch.linalg.pinv(hermitian=True)`` (``m·eps`` times the
    largest, with the Gramian's ``eps``) and its pseudo-inverse is its inverse, applied by
    Cholesky; otherwise by ``eigh``, with that cut-off.
    """
    rows: list[list[float]] = gramian.tolist()
    w: list[float] = pref.tolist()
    m = len(rows)
    eps = torch.finfo(gramian.dtype).eps
    inverse = [1.0 / math.sqrt(rows[i][i]) if rows[i][i] > 0.0 else 0.0 for i in range(m)]
    unit = [[rows[a][b] * inverse[a] * inverse[b] for b in range(m)] for a in range(m)]
    trace = sum(unit[i][i] for i in range(m))  # the number of non-zero rows, up to rounding
    L = cholesky(unit, list(range(m)))
    if L is not None and smallest_eigenvalue_exceeds(L, trace, CUTOFF_MARGIN * m * eps * trace):
        x = cholesky_solve(L, w)  # pinv(D G D) w
    else:
        x = _pinv_times(unit, w, m * eps)
    y = list(map(operator.mul, inverse, x))
    g_y = [sum(map(operator.mul, row, y)) for row in rows]
    squared_norm = sum(map(operator.mul, y, g_y))  # ‖b‖²
    threshold = m * eps * sum(map(operator.mul, w, w))  # as in `_negligible_squared_norm`
    negligible = threshold / trace if trace > 0.0 else threshold
    scale = sum(g_y) / squared_norm if squared_norm > negligible else 0.0
    return torch.tensor([y_j * scale for y_j in y], dtype=gramian.dtype, device=gramian.device)


def _pinv_times(matrix: list[list[float]], w: list[float], rtol: float) -> list[float]:
    """``pinv(matrix) w`` for a symmetric ``matrix``, from its ``eigh`` (in float64): the
    eigenvalues of absolute value at most ``rtol`` times the largest are treated as zero.
    """
    values, vectors = torch.linalg.eigh(torch.tensor(matrix, dtype=torch.float64))
    eigenvalues: list[float] = values.tolist()
    eigenvectors: list[list[float]] = vectors.mT.tolist()  # one eigenvector per row
    cutoff = rtol * max(abs(value) for value in eigenvalues)
    x = [0.0] * len(w)
    for value, vector in zip(eigenvalues, eigenvectors, strict=True):
        if abs(value) > cutoff:
            coefficient = sum(map(operator.mul, vector, w)) / value
            x = [x_j + coefficient * v_j for x_j, v_j in zip(x, vector, strict=True)]
    return x


class ConFIG(NonDifferentiable, Aggregator):
    """Moves along the direction that has the same (preference-weighted) cosine with every row
    (Conflict-Free Inverse Gradients), scaled by the sum of the projections of the rows.

    Let ``U`` be the rows of ``J`` scaled to unit norm (zero rows stay zero) and ``w`` the
    preference vector (ones by default). The direction ``û = b / ‖b‖`` normalises the
    minimum-norm solution ``b = pinv(U) w`` of ``U b = w``, so that ``cos(g_i, û) ∝ w_i`` when
    the rows are linearly independent. The update is

    ``A(J) = (Σ_i g_iᵀ û) û``.

    ConFIG is linear under scaling and invariant to permutations of the rows (permuted together
    with the preference vector). The output is zero for a zero matrix, and does not require grad.

    Reference: Liu et al., *ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks*, ICLR 2025 (Equation 2 and its weighted variant).

    Args:
        pref_vector: The ``[m]`` preference vector ``w``. Default: ``None``, i.e. ones.

    >>> import torch
    >>> ConFIG()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.1588, 2.0706, 2.0706])
    """

    def __init__(self, pref_vector: Tensor | None = None) -> None:
        super().__init__()
        self.pref_weighting = pref_vector_to_weighting(pref_vector, default=SumWeighting())

    @property
    def pref_vector(self) -> Tensor | None:
        """The preference vector, or ``None`` for the default (ones)."""
        weighting = self.pref_weighting
        return weighting.weights if isinstance(weighting, ConstantWeighting) else None

    def forward(self, matrix: Matrix, /) -> Tensor:
        pref_vector = self.pref_vector
        if pref_vector is not None:
            check_length(pref_vector, matrix.shape[0], "pref_vector")
        work_matrix = matrix.to(_UPCAST.get(matrix.dtype, matrix.dtype))
        gramian = compute_gramian(work_matrix)
        # The preference weighting only uses the number of rows: giving it the [m, m] Gramian
        # rather than J avoids validating the large matrix a second time.
        pref = self.pref_weighting(gramian).to(gramian.dtype)
        if use_python_floats(gramian):
            m = gramian.shape[0]
            weights = _two_objectives(gramian, pref) if m == 2 else _few_objectives(gramian, pref)
        else:
            weights = _config_weights(gramian, pref)
        return weights.to(matrix.dtype) @ matrix

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pref_vector={self.pref_vector!r})"

    def __str__(self) -> str:
        return f"{type(self).__name__}{pref_suffix(self.pref_vector)}"
