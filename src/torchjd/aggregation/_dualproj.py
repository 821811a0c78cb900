from __future__ import annotations

import torch
from torch import Tensor

from torchjd.linalg import PSDMatrix

from ._utils.dual_cone import DualConeAggregator, DualConeWeighting


class DualProjWeighting(DualConeWeighting):
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

    def forward(self, stat: PSDMatrix, /) -> Tensor:
        projector = self._uniform_projector_on_host(stat)
        if projector is not None:
            m = stat.shape[0]
            (v,) = projector.project_rows_on_host([[1.0 / m] * m], stat)
            return torch.tensor(v, dtype=stat.dtype, device=stat.device)
        u = self.weighting(stat)
        return self.projector(u.unsqueeze(0), stat).squeeze(0)


class DualProj(DualConeAggregator):
    r"""Projects the preference-weighted combination of the rows (their mean by default) onto
    their dual cone ``{x : J x ≥ 0}``: a GEM-style projection (Lopez-Paz & Ranzato, 2017), as
    described in *Jacobian Descent For Multi-Objective Optimization* (Quinton & Rey, 2024).

    The result conflicts with no row (``J @ DualProj(J) ≥ 0``). The projection is solved exactly
    in the Gramian (see :class:`DualProjWeighting`). As for :class:`UPGrad`, this is exact with
    ``reg_eps=0``; the default ``reg_eps=1e-4`` bounds the conflict by
    ``(J d)_j ≥ −reg_eps·trace(G)·w_j``, which matters for rows much smaller than the others.

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

    weighting_class = DualProjWeighting
