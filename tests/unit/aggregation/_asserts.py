"""Checkers of the properties of aggregators, with tolerances that depend on the dtype.

Each checker takes a ``method`` (a function ``J ↦ A(J)``: a fresh aggregator, seeded if it is
random) or an already computed output, and raises an ``AssertionError`` that says what failed.
They are tested on deliberately wrong methods in ``test_family.py``, so that a too-loose tolerance
is caught.

Tolerances. Every comparison is relative to a *scale* (a norm of the inputs or outputs), so the
same checks hold for matrices scaled from ``1e-10`` to ``1e15``. The relative tolerance is a
multiple of the machine epsilon of the dtype:

- ``rounding_tol``: ``1000·eps`` (float32: 1.2e-4, float64: 2.2e-13). Two computations that are
  equal in exact arithmetic (the same weights applied in another order, a product ``w @ J``
  computed twice) differ by a few ulps per operation; the inner solves of the methods (pseudo-
  inverses, eigendecompositions, QPs on Gramians with a condition number up to ``~1e4`` after
  regularisation) amplify that by their condition number. 1000 ulps covers this for our
  well-conditioned inputs (condition numbers at most 16), while any real defect (a wrong weight,
  a missed projection, a permutation-dependent tie) shows up at the scale of the output itself,
  i.e. with a relative error of order ``1e-2`` or more.
- For a weighted method, ``A(J) = Σ_i w_i g_i`` is computed in the dtype, with a rounding error
  proportional to ``Σ_i |w_i|·‖g_i‖`` instead of ``‖J‖_F`` (``combination_scale``). On nearly
  stationary inputs some methods (IMTLG, CAGrad, NashMTL) have weights of order 100 or more that
  nearly cancel: the comparisons of outputs are relative to this scale.
- ``span_rank_tol``: ``sqrt(eps)`` (float32: 3.5e-4, float64: 1.5e-8). Once the rows are
  normalised, singular values below this fraction of the largest one are rounding noise (the
  rank-``r`` inputs are cast from float64, which adds singular values of order ``eps``), the
  others are genuine (the normalised rows of our samples span their subspace with singular
  values far above ``1e-2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Method = Callable[[Tensor], Tensor]

STRONG_STATIONARITY_FACTOR = 5e-3
"""``‖A(J)‖`` must exceed this fraction of ``‖J‖₂`` when ``J`` is not strongly stationary.

For our non-strongly stationary samples, ``‖Jᵀw‖ ≥ min_i(w_i)·σ_min`` for positive weights ``w``
(the preference direction has a component of norm ``≥ 1`` in the column space, see
``_matrix_samplers.py``), so ``1/m`` weights give at least ``σ_max/(4m) ≥ 1.25e-2·σ_max`` for
``m ≤ 20``. ``5e-3`` is the threshold of the upstream tests and leaves a margin of 2.5.
"""


def rounding_tol(dtype: torch.dtype) -> float:
    """Relative tolerance for quantities that are equal in exact arithmetic (see module doc)."""
    return 1000.0 * torch.finfo(dtype).eps


def span_rank_tol(dtype: torch.dtype) -> float:
    """Relative threshold separating genuine singular values from rounding noise."""
    return math.sqrt(torch.finfo(dtype).eps)


def _norm(tensor: Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor.detach().double()))


def combination_scale(matrix: Tensor, weights: Tensor | None) -> float:
    """``max(‖J‖_F, Σ_i |w_i|·‖g_i‖)``: the scale of the rounding errors of ``Σ_i w_i g_i``."""
    frobenius = _norm(matrix)
    if weights is None:
        return frobenius
    row_norms = torch.linalg.vector_norm(matrix.detach().double(), dim=1)
    return max(frobenius, float(weights.detach().double().abs() @ row_norms))


def assert_scaled_close(actual: Tensor, expected: Tensor, scale: float, tol: float) -> None:
    """Assert ``‖actual − expected‖ ≤ tol·scale`` (and that both are finite)."""
    assert actual.shape == expected.shape, f"Shapes differ: {actual.shape} != {expected.shape}."
    assert torch.isfinite(actual).all(), f"Non-finite entries in {actual}."
    assert torch.isfinite(expected).all(), f"Non-finite entries in {expected}."
    error = _norm(actual.double() - expected.double())
    assert error <= tol * scale, (
        f"‖actual − expected‖ = {error:.3e} > {tol:.1e}·{scale:.3e}.\n"
        f"actual={actual}\nexpected={expected}"
    )


def assert_expected_structure(output: Tensor, matrix: Tensor) -> None:
    """The output is a finite ``[n]`` vector of the dtype and on the device of ``matrix``."""
    assert output.shape == (matrix.shape[1],), f"Shape {tuple(output.shape)} for {matrix.shape}."
    assert output.dtype == matrix.dtype, f"dtype {output.dtype} for an input of {matrix.dtype}."
    assert output.device == matrix.device, f"device {output.device} for {matrix.device}."
    assert torch.isfinite(output).all(), f"Non-finite output {output}."


def assert_in_row_span(output: Tensor, matrix: Tensor, weights_norm: float | None = None) -> None:
    """The output is a combination ``Jᵀw`` of the rows of ``matrix``.

    The residual of the orthogonal projection onto the numerical row space (computed in float64)
    must be at most ``rounding_tol·(‖A(J)‖ + max(1, ‖w‖)·‖J‖_F)``, where ``‖w‖`` is the norm of
    the weights when they are known.
    """
    J = matrix.detach().double().cpu()
    d = output.detach().double().cpu()
    # The span does not depend on the norms of the rows: normalising them makes a tiny row as
    # visible as the others, while the rounding noise stays relative to each row.
    row_norms = torch.linalg.vector_norm(J, dim=1, keepdim=True)
    units = J[row_norms.squeeze(1) > 0] / row_norms[row_norms.squeeze(1) > 0]
    if units.shape[0] == 0:
        assert torch.equal(d, torch.zeros_like(d)), f"Non-zero output {output} for a zero matrix."
        return
    _, singular_values, vh = torch.linalg.svd(units, full_matrices=False)
    threshold = span_rank_tol(matrix.dtype) * float(singular_values.max())
    basis = vh[singular_values > threshold]  # [r, n]: orthonormal basis of the row space
    residual = d - basis.T @ (basis @ d)
    scale = _norm(d) + max(1.0, weights_norm or 0.0) * _norm(J)
    tol = rounding_tol(matrix.dtype)
    assert _norm(residual) <= tol * scale, (
        f"The output is not in the row span: residual {_norm(residual):.3e} > "
        f"{tol:.1e}·{scale:.3e}. output={output}"
    )


def assert_non_conflicting(
    output: Tensor,
    matrix: Tensor,
    tol: float,
    allowance: Tensor | None = None,
    output_scale: float | None = None,
) -> None:
    """``J A(J) ≥ −allowance − tol·S·max_i ‖g_i‖``.

    ``S·max_i ‖g_i‖`` is the scale of ``g_iᵀd`` for an output of size ``S`` (``‖J‖_F`` by
    default, ``combination_scale`` for weighted methods). ``allowance`` ``[m]`` (zeros by
    default) is the conflict a method is declared to allow.
    """
    products = matrix.detach().double() @ output.detach().double()
    row_norms = torch.linalg.vector_norm(matrix.detach().double(), dim=1)
    size = _norm(matrix) if output_scale is None else output_scale
    scale = size * float(row_norms.max())
    margin = products + (0.0 if allowance is None else allowance.detach().double())
    worst = float(margin.min())
    assert worst >= -tol * scale, (
        f"Conflicting output: min_i (g_iᵀA(J) + allowance_i) = {worst:.3e} < "
        f"−{tol:.1e}·{scale:.3e}.\nJ A(J) = {products}\nallowance = {allowance}"
    )


def assert_strongly_stationary(output: Tensor, matrix: Tensor) -> None:
    """On a matrix that is not strongly stationary, ``‖A(J)‖ > 5e-3·‖J‖₂``."""
    spectral_norm = float(torch.linalg.matrix_norm(matrix.detach().double(), ord=2))
    norm = _norm(output)
    threshold = STRONG_STATIONARITY_FACTOR * spectral_norm
    assert norm > threshold, f"‖A(J)‖ = {norm:.3e} <= {threshold:.3e} on a non-strong matrix."


def assert_permutation_invariant(
    method: Method, matrix: Tensor, permutation: Tensor, output_scale: float | None = None
) -> None:
    """``A(J[π]) = A(J)`` up to ``rounding_tol`` relative to ``max(‖A(J)‖, S)``, where ``S`` is
    ``‖J‖_F`` by default, ``combination_scale`` for weighted methods."""
    expected = method(matrix)
    actual = method(matrix[permutation])
    scale = max(_norm(expected), _norm(matrix) if output_scale is None else output_scale)
    assert_scaled_close(actual, expected, scale, rounding_tol(matrix.dtype))


def assert_linear_under_scaling(
    method: Method, matrix: Tensor, c1: Tensor, c2: Tensor, alpha: float, beta: float, tol: float
) -> None:
    """``A(diag(αc₁+βc₂) J) = αA(diag(c₁) J) + βA(diag(c₂) J)`` for positive ``c₁, c₂, α, β``.

    The tolerance ``tol`` is relative to the largest of the norms of both sides and of
    ``diag(αc₁+βc₂) J``.
    """
    c = alpha * c1 + beta * c2
    left = method(c.unsqueeze(1) * matrix)
    right = alpha * method(c1.unsqueeze(1) * matrix) + beta * method(c2.unsqueeze(1) * matrix)
    scale = max(_norm(left), _norm(right), _norm(c.unsqueeze(1) * matrix))
    assert_scaled_close(left, right, scale, tol)
