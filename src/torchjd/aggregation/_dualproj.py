from __future__ import annotations

from torch import Tensor

from torchjd.linalg import DualConeProjector, PSDMatrix

from ._aggregator_bases import GramianWeightedAggregator
from ._mean import MeanWeighting
from ._utils.non_differentiable import NonDifferentiable
from ._utils.pref_vector import pref_vector_to_weighting
from ._utils.projector import make_projector
from ._utils.str import pref_suffix
from ._weighting_bases import _GramianWeighting


class DualProjWeighting(NonDifferentiable, _GramianWeighting):
    r"""The weights of :class:`DualProj`, computed from the Gramian ``G = J Jᵀ``.

    With the preference weights ``u`` (``1/m`` each by default), the weights are
    ``w = argmin_{v ≥ u} vᵀ G v``, so that ``Jᵀ w`` is the projection of ``Jᵀ u`` onto the dual
    cone of the rows of ``J``.

    Args:
        pref_vector: The preference weights ``u`` ``[m]``. Defaults to ``1/m`` each.
        norm_eps: Below this trace, the Gramian is treated as zero. Defaults to ``1e-4``.
        reg_eps: The multiple of the identity added to the trace-normalised Gramian, which makes
            each projection a strictly convex problem. Defaults to ``1e-4``.
        solver: The solver of the default projector; only ``"active_set"`` (exact,
            torch-native, batched) exists.
        projector: A custom :class:`~torchjd.linalg.DualConeProjector`, instead of the default
            :class:`~torchjd.linalg.ActiveSetProjector` built from ``norm_eps`` and ``reg_eps``.

    Example:
        >>> import torch
        >>> G = torch.tensor([[18.0, -22.0], [-22.0, 38.0]])
        >>> DualProjWeighting()(G)
        tensor([0.6109, 0.5000])
    """

    def __init__(
        self,
        pref_vector: Tensor | None = None,
        norm_eps: float = 0.0001,
        reg_eps: float = 0.0001,
        solver: str = "active_set",
        *,
        projector: DualConeProjector | None = None,
    ) -> None:
        super().__init__()
        self.weighting = pref_vector_to_weighting(pref_vector, MeanWeighting())
        self.pref_vector = pref_vector
        self.projector = make_projector(norm_eps, reg_eps, solver, projector)

    def forward(self, stat: PSDMatrix, /) -> Tensor:
        u = self.weighting(stat)
        return self.projector(u.unsqueeze(0), stat).squeeze(0)

    def extra_repr(self) -> str:
        return f"pref_vector={self.pref_vector!r}, projector={self.projector!r}"


class DualProj(NonDifferentiable, GramianWeightedAggregator):
    r"""Projects the preference-weighted combination of the rows (their mean by default) onto
    their dual cone ``{x : J x ≥ 0}``: a GEM-style projection (Lopez-Paz & Ranzato, 2017), as
    described in *Jacobian Descent For Multi-Objective Optimization* (Quinton & Rey, 2024).

    The result conflicts with no row (``J @ DualProj(J) ≥ 0``). The projection is solved exactly
    in the Gramian (see :class:`DualProjWeighting`).

    Args:
        pref_vector: The preference weights ``[m]``. Defaults to ``1/m`` each.
        norm_eps: Below this trace, the Gramian is treated as zero. Defaults to ``1e-4``.
        reg_eps: The multiple of the identity added to the trace-normalised Gramian. Defaults
            to ``1e-4``.
        solver: The solver of the default projector; only ``"active_set"`` exists.
        projector: A custom :class:`~torchjd.linalg.DualConeProjector`.

    Example:
        >>> import torch
        >>> DualProj()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
        tensor([0.5563, 1.1109, 1.1109])
    """

    gramian_weighting: DualProjWeighting

    def __init__(
        self,
        pref_vector: Tensor | None = None,
        norm_eps: float = 0.0001,
        reg_eps: float = 0.0001,
        solver: str = "active_set",
        *,
        projector: DualConeProjector | None = None,
    ) -> None:
        super().__init__(
            DualProjWeighting(pref_vector, norm_eps, reg_eps, solver, projector=projector)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.gramian_weighting.extra_repr()})"

    def __str__(self) -> str:
        return f"{type(self).__name__}{pref_suffix(self.gramian_weighting.pref_vector)}"
