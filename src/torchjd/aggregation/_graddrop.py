from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from torchjd.linalg import Matrix

from ._aggregator_bases import Aggregator
from ._utils.checks import check_length, check_vector
from ._utils.non_differentiable import NonDifferentiable
from ._utils.str import pref_suffix


def _identity(P: Tensor) -> Tensor:
    return P


def _positive_sign_purity(matrix: Tensor) -> Tensor:
    """Return ``P = ½(1 + Σ_i J_i / Σ_i |J_i|)`` ``[n]``, the share of positive mass per column.

    A column of zeros has no sign to keep; it gets ``P = ½`` instead of a NaN (its entries are 0,
    so any mask gives the same output).
    """
    total = matrix.sum(dim=0)
    mass = matrix.abs().sum(dim=0)
    safe_mass = torch.where(mass > 0, mass, torch.ones_like(mass))
    return 0.5 * (1.0 + torch.where(mass > 0, total / safe_mass, torch.zeros_like(total)))


class GradDrop(NonDifferentiable, Aggregator):
    """Sums the rows after randomly dropping, in each column, the entries of one sign
    (Gradient Sign Dropout).

    For each column ``k``, let ``P_k = ½(1 + Σ_i J_ik / Σ_i |J_ik|)`` be the "positive sign
    purity" and ``U_k ~ Uniform[0, 1)``. The positive entries of the column are kept if
    ``f(P_k) > U_k`` and the negative ones if ``f(P_k) < U_k``: the mask is
    ``M_ik = [f(P_k) > U_k]·[J_ik > 0] + [f(P_k) < U_k]·[J_ik < 0]``. With a leak vector ``ℓ``,
    row ``i`` keeps a share ``ℓ_i`` of its dropped entries:

    ``A(J) = Σ_i (ℓ_i + (1 − ℓ_i) M_i) ⊙ J_i``  (``ℓ = 0`` when ``leak`` is ``None``).

    ``U`` is drawn at every call as ``torch.rand(n)`` in float32 (whatever the matrix's dtype, so
    that a seed gives the same masks in every dtype) on the matrix's device, from ``generator``.
    GradDrop is neither weighted (the update is not a combination of the rows), nor
    non-conflicting, nor linear under scaling. The output does not require grad.

    Reference: Chen et al., *Just Pick a Sign: Optimizing Deep Multitask Models with Gradient
    Sign Dropout*, NeurIPS 2020 (Algorithm 1, with the leak parameters of its Section 3).

    Args:
        f: The monotonic function applied to the purity ``P`` (a ``[n]`` tensor) before it is
            compared to ``U``. Default: the identity.
        leak: The ``[m]`` leak coefficients, one per row, usually in ``[0, 1]``. Default:
            ``None``, i.e. no leak.
        generator: The random number generator used for ``U``, on the input's device. Default:
            ``None``, i.e. the global generator (seed it with :func:`torch.manual_seed`).

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> GradDrop()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([6., 2., 2.])
    """

    def __init__(
        self,
        f: Callable[[Tensor], Tensor] = _identity,
        leak: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(
                f"Parameter `f` should be a callable. Found f={f!r} of type {type(f).__name__}."
            )
        self.f = f
        self.leak = None if leak is None else check_vector(leak, "leak")
        self.generator = generator

    def forward(self, matrix: Matrix, /) -> Tensor:
        m, n = matrix.shape
        if self.leak is None:
            leak = torch.zeros(m, 1, dtype=matrix.dtype, device=matrix.device)
        else:
            check_length(self.leak, m, "leak")
            leak = self.leak.to(dtype=matrix.dtype, device=matrix.device).unsqueeze(1)
        purity = self.f(_positive_sign_purity(matrix))
        threshold = torch.rand(
            n, generator=self.generator, dtype=torch.float32, device=matrix.device
        )
        mask = ((purity > threshold) & (matrix > 0)) | ((purity < threshold) & (matrix < 0))
        return ((leak + (1.0 - leak) * mask) * matrix).sum(dim=0)

    def __repr__(self) -> str:
        generator = "" if self.generator is None else f", generator={self.generator!r}"
        return f"{type(self).__name__}(f={self.f!r}, leak={self.leak!r}{generator})"

    def __str__(self) -> str:
        return f"{type(self).__name__}{pref_suffix(self.leak)}"
