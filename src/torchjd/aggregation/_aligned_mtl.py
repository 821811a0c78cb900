from __future__ import annotations

import math
from typing import Any, Literal, cast, get_args

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from torchjd.linalg import PSDMatrix
from torchjd.linalg._sym2 import eigh2

from ._aggregator_bases import GramianWeightedAggregator
from ._mean import MeanWeighting
from ._utils.pref_vector import pref_vector_to_weighting
from ._utils.small import use_python_floats
from ._utils.str import pref_suffix
from ._weighting_bases import _GramianWeighting

ScaleMode = Literal["min", "median", "rmse"]
"""How the eigenvalues kept by :class:`AlignedMTLWeighting` give the scale of the update."""


def _check_scale_mode(scale_mode: object) -> ScaleMode:
    allowed = get_args(ScaleMode)
    if scale_mode not in allowed:
        expected = ", ".join(repr(value) for value in allowed[:-1]) + f", or {allowed[-1]!r}"
        raise ValueError(f"Invalid scale_mode={scale_mode!r}. Expected {expected}.")
    return cast(ScaleMode, scale_mode)


def _scale(eigenvalues: Tensor, kept: Tensor, rank: Tensor, scale_mode: ScaleMode) -> Tensor:
    """Return the scale ``s`` from the kept (largest) eigenvalues; ``1`` when none is kept.

    ``eigenvalues`` are in ascending order, so the kept ones are the last ``rank``. Indices are
    computed as tensors (no host synchronisation) and clamped so that they stay valid, and hence
    the values finite, when ``rank = 0``.
    """
    m = eigenvalues.shape[0]
    first = (m - rank).clamp(max=m - 1)
    if scale_mode == "min":
        scale = eigenvalues[first]
    elif scale_mode == "median":
        # torch.median convention: the lower of the two middle values for an even count.
        offset = (rank - 1).clamp(min=0).div(2, rounding_mode="floor")
        scale = eigenvalues[(first + offset).clamp(max=m - 1)]
    else:
        kept_sum = torch.where(kept, eigenvalues, torch.zeros_like(eigenvalues)).sum()
        scale = kept_sum / rank.clamp(min=1)
    return torch.where(rank > 0, scale, torch.ones_like(scale))


class _InverseRootOnRange(torch.autograd.Function):
    """``G ↦ (λ, F)``: the ascending eigenvalues of ``G`` and ``F = V φ(Λ) Vᵀ``, where
    ``φ(λ) = λ^{-1/2}`` for the kept eigenvalues (``λ > max(λ) · m · eps``) and ``0`` otherwise.

    The backward pass uses the Daleckii–Krein formula
    ``dF = V (Φ ∘ (Vᵀ dG V)) Vᵀ`` with the divided differences ``Φ_ij = (φ_i − φ_j)/(λ_i − λ_j)``,
    written in closed form so that it stays finite for repeated eigenvalues (such as ``G = I``),
    where differentiating through :func:`torch.linalg.eigh` gives NaN. The set of kept eigenvalues
    is treated as constant. Only first-order derivatives are supported.
    """

    @staticmethod
    def forward(ctx: Any, gramian: Tensor) -> tuple[Tensor, Tensor]:
        eigenvalues, eigenvectors = torch.linalg.eigh(gramian, UPLO="U")
        kept = _kept(eigenvalues)
        # Discarded eigenvalues may be zero or negative: replace them before taking roots.
        roots = torch.where(kept, eigenvalues, torch.ones_like(eigenvalues)).sqrt()
        inverse_roots = torch.where(kept, 1.0 / roots, torch.zeros_like(roots))
        ctx.save_for_backward(eigenvalues, eigenvectors, kept, roots, inverse_roots)
        return eigenvalues, (eigenvectors * inverse_roots) @ eigenvectors.T

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, eigenvalues_grad: Tensor, function_grad: Tensor) -> Tensor:
        saved: tuple[Tensor, ...] = ctx.saved_tensors
        eigenvalues, eigenvectors, kept, roots, inverse_roots = saved
        both_kept = kept.unsqueeze(1) & kept.unsqueeze(0)
        # (r_i⁻¹ − r_j⁻¹) / (r_i² − r_j²) = −1 / (r_i r_j (r_i + r_j)), exact even when r_i = r_j.
        kept_pairs = -1.0 / (roots.unsqueeze(1) * roots.unsqueeze(0) * (roots.unsqueeze(1) + roots))
        # One kept and one discarded eigenvalue: their difference is positive, hence safe.
        gaps = eigenvalues.unsqueeze(1) - eigenvalues.unsqueeze(0)
        one_kept = kept.unsqueeze(1) ^ kept.unsqueeze(0)
        safe_gaps = torch.where(one_kept, gaps, torch.ones_like(gaps))
        mixed_pairs = (inverse_roots.unsqueeze(1) - inverse_roots.unsqueeze(0)) / safe_gaps
        zeros = torch.zeros_like(gaps)
        divided_differences = torch.where(
            both_kept, kept_pairs, torch.where(one_kept, mixed_pairs, zeros)
        )
        inner = divided_differences * (eigenvectors.T @ function_grad @ eigenvectors)
        inner = inner + torch.diag(eigenvalues_grad)
        return eigenvectors @ inner @ eigenvectors.T


def _kept(eigenvalues: Tensor) -> Tensor:
    """Mask of the ascending ``eigenvalues`` above ``max(λ) · m · eps`` (``eps`` of their dtype)."""
    m = eigenvalues.shape[0]
    return eigenvalues > eigenvalues[-1] * m * torch.finfo(eigenvalues.dtype).eps


def _balance_matrix(gramian: Tensor, scale_mode: ScaleMode) -> Tensor:
    """Return ``B = sqrt(s) V_r Λ_r^{-1/2} V_rᵀ``, or ``I`` when ``G`` has numerical rank 0."""
    # torch does not annotate `Function.apply`: the cast restores the types of `forward`.
    outputs = _InverseRootOnRange.apply(gramian)  # type: ignore[no-untyped-call]
    eigenvalues, inverse_root = cast("tuple[Tensor, Tensor]", outputs)
    kept = _kept(eigenvalues.detach())
    rank = kept.sum()
    balance = _scale(eigenvalues, kept, rank, scale_mode).sqrt() * inverse_root
    identity = torch.eye(gramian.shape[0], dtype=gramian.dtype, device=gramian.device)
    # torch.where rather than a Python `if` on the rank: no host synchronisation.
    return torch.where(rank > 0, balance, identity)


def _scale_on_host(kept_values: list[float], scale_mode: ScaleMode) -> float:
    """The scale of :func:`_scale` from the kept eigenvalues (ascending, at least one)."""
    if scale_mode == "min":
        return kept_values[0]
    if scale_mode == "median":
        return kept_values[(len(kept_values) - 1) // 2]
    return sum(kept_values) / len(kept_values)


def _on_the_cpu(gramian: Tensor, preference: Tensor, scale_mode: ScaleMode) -> Tensor:
    """``B u`` without a graph on the CPU: the eigenvalues are read by the host, which is free
    there, and ``B`` is applied to ``u`` through the eigenvectors instead of being formed (a
    third of the tensor operations of :func:`_balance_matrix`).
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(gramian, UPLO="U")
    values: list[float] = eigenvalues.tolist()  # ascending
    m = len(values)
    threshold = values[-1] * m * torch.finfo(gramian.dtype).eps  # as in `_kept`
    first = next((i for i, value in enumerate(values) if value > threshold), m)
    if first == m:
        return preference.clone()  # B = I
    scale = _scale_on_host(values[first:], scale_mode)
    factors = [0.0] * first + [math.sqrt(scale / value) for value in values[first:]]
    roots = torch.tensor(factors, dtype=gramian.dtype, device=gramian.device)
    weights: Tensor = eigenvectors @ (roots * (preference @ eigenvectors))
    return weights


def _two_objectives(gramian: Tensor, preference: Tensor, scale_mode: ScaleMode) -> Tensor:
    """``B u`` for a ``[2, 2]`` Gramian, in Python floats (see ``_sym2``)."""
    (a, b), (_, c) = gramian.tolist()
    values, vectors = eigh2(a, b, c)
    threshold = values[1] * 2 * torch.finfo(gramian.dtype).eps  # as in `_kept`, with m = 2
    kept = [
        (value, vector) for value, vector in zip(values, vectors, strict=True) if value > threshold
    ]
    u = preference.tolist()
    if not kept:
        return preference.clone()  # B = I
    scale = _scale_on_host([value for value, _ in kept], scale_mode)
    w = [0.0, 0.0]
    for value, (x, y) in kept:
        # sqrt(s) λ^{-1/2} (v vᵀ) u
        factor = math.sqrt(scale / value) * (x * u[0] + y * u[1])
        w[0] += factor * x
        w[1] += factor * y
    return torch.tensor(w, dtype=gramian.dtype, device=gramian.device)


class AlignedMTLWeighting(_GramianWeighting):
    """Weights that make the rows orthogonal with a common norm, then apply the preference.

    With the eigendecomposition ``G = V Λ Vᵀ`` (ascending eigenvalues), keep the ``r``
    eigenvalues above ``tol = max(λ) · m · eps`` (``eps`` of ``G``'s dtype) and set
    ``B = sqrt(s) V_r Λ_r^{-1/2} V_rᵀ``, where ``s`` is the smallest kept eigenvalue (``"min"``),
    their median (``"median"``, the lower middle one for an even count) or their mean
    (``"rmse"``). ``B = I`` when ``r = 0``. The weights are ``w = B u``, with ``u = 1/m`` or the
    preference vector. The rows of ``Bᵀ J`` (when ``J`` has full row rank) are orthogonal with
    norm ``sqrt(s)``: the update is their ``u``-combination.

    Differentiable to first order. The gradient uses the Daleckii–Krein formula for ``V_r
    Λ_r^{-1/2} V_rᵀ`` in closed form, so it stays finite for repeated eigenvalues (such as
    ``G = I``), where differentiating through :func:`torch.linalg.eigh` gives NaN. The rank is
    treated as locally constant. Double backward is not supported.

    Reference: Senushkin et al., *Independent Component Alignment for Multi-Task Learning*,
    CVPR 2023 (Aligned-MTL).

    Args:
        pref_vector: The ``[m]`` preference vector ``u``. Default: ``None``, i.e. ``1/m``.
        scale_mode: How to compute ``s`` from the kept eigenvalues: ``"min"``, ``"median"`` or
            ``"rmse"``. Default: ``"min"``. Any other value raises a ``ValueError``.

    >>> import torch
    >>> AlignedMTLWeighting()(torch.tensor([[18.0, -22.0], [-22.0, 38.0]]))
    tensor([0.5591, 0.4083])
    """

    def __init__(self, pref_vector: Tensor | None = None, scale_mode: ScaleMode = "min") -> None:
        super().__init__()
        self.weighting = pref_vector_to_weighting(pref_vector, default=MeanWeighting())
        self.pref_vector = pref_vector
        self.scale_mode: ScaleMode = _check_scale_mode(scale_mode)

    def forward(self, stat: PSDMatrix, /) -> Tensor:
        preference = self.weighting(stat)
        # On the CPU without a graph (any m): the host reads the eigenvalues.
        if use_python_floats(stat, stat.shape[0]) and not preference.requires_grad:
            if stat.shape[0] == 2:
                return _two_objectives(stat, preference, self.scale_mode)
            return _on_the_cpu(stat, preference, self.scale_mode)
        return _balance_matrix(stat, self.scale_mode) @ preference


class AlignedMTL(GramianWeightedAggregator):
    """Aggregates the rows after aligning them into orthogonal vectors of a common norm:
    ``A(J) = Jᵀ B u`` (see :class:`AlignedMTLWeighting` for ``B``).

    Reference: Senushkin et al., *Independent Component Alignment for Multi-Task Learning*,
    CVPR 2023 (Aligned-MTL).

    Args:
        pref_vector: The ``[m]`` preference vector ``u``. Default: ``None``, i.e. ``1/m``.
        scale_mode: How to compute the scale from the kept eigenvalues of the Gramian:
            ``"min"``, ``"median"`` or ``"rmse"``. Default: ``"min"``.

    >>> import torch
    >>> AlignedMTL()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.2133, 0.9673, 0.9673])
    """

    gramian_weighting: AlignedMTLWeighting

    def __init__(self, pref_vector: Tensor | None = None, scale_mode: ScaleMode = "min") -> None:
        super().__init__(AlignedMTLWeighting(pref_vector=pref_vector, scale_mode=scale_mode))

    def __repr__(self) -> str:
        weighting = self.gramian_weighting
        return (
            f"{type(self).__name__}(pref_vector={weighting.pref_vector!r}, "
            f"scale_mode={weighting.scale_mode!r})"
        )

    def __str__(self) -> str:
        return f"{type(self).__name__}{pref_suffix(self.gramian_weighting.pref_vector)}"
