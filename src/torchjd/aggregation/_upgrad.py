from __future__ import annotations

import torch
from torch import Tensor

from torchjd.linalg import ActiveSetProjector, PSDMatrix

from ._utils.dual_cone import DualConeAggregator, DualConeWeighting


class UPGradWeighting(DualConeWeighting):
    r"""The weights of :class:`UPGrad`, computed from the Gramian ``G = J Jᵀ``.

    With the preference weights ``u`` (``1/m`` each by default), each ``u_i e_i`` is projected:
    ``v⁽ⁱ⁾ = argmin_{v ≥ u_i e_i} vᵀ G v``, so that ``Jᵀ v⁽ⁱ⁾`` is the projection of ``u_i g_i``
    onto the dual cone of the rows of ``J``. The weights are ``Σ_i v⁽ⁱ⁾``.

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
        >>> UPGradWeighting()(G)
        tensor([1.1109, 0.7894])
    """

    def forward(self, stat: PSDMatrix, /) -> Tensor:
        projector = self._uniform_projector_on_host(stat)
        if projector is not None:
            m = stat.shape[0]
            U = [[1.0 / m if i == j else 0.0 for j in range(m)] for i in range(m)]
            V = projector.project_rows_on_host(U, stat)
            weights = [sum(column) for column in zip(*V, strict=True)]
            return torch.tensor(weights, dtype=stat.dtype, device=stat.device)
        u = self.weighting(stat)
        if type(self.projector) is ActiveSetProjector:
            return self.projector.sum_of_diagonal_projections(u, stat)
        return self.projector(torch.diag(u), stat).sum(dim=0)


class UPGrad(DualConeAggregator):
    r"""Unconflicting Projection of Gradients (UPGrad), from *Jacobian Descent For
    Multi-Objective Optimization* (Quinton & Rey, 2024, Section 2.3).

    Each row ``g_i`` of ``J``, scaled by its preference weight (``1/m`` by default), is projected
    onto the dual cone ``{x : J x ≥ 0}`` of the rows, and the projections are summed. The result
    conflicts with no row (``J @ UPGrad(J) ≥ 0``), is linear under positive scaling of the rows,
    and equals the mean of the rows when no two rows conflict. The projections are solved
    exactly, all at once, in the Gramian (see :class:`UPGradWeighting`).

    The two properties are exact with ``reg_eps=0``. The default ``reg_eps=1e-4`` (as in TorchJD)
    projects with the Gramian ``G / trace(G) + reg_eps·I``, which keeps every projection
    well-posed but bounds the conflict only by ``(J d)_j ≥ −reg_eps·trace(G)·w_j`` (``w`` the
    weights) and makes rows much smaller than the others count slightly less than linearly.

    Args:
        pref_vector: The preference weights ``[m]``. Defaults to ``1/m`` each.
        norm_eps: Below this trace, the Gramian is treated as zero. Defaults to ``1e-4``.
        reg_eps: The multiple of the identity added to the trace-normalised Gramian. Defaults
            to ``1e-4``.
        solver: The solver of the default projector; only ``"active_set"`` exists.
        projector: A custom :class:`~torchjd.linalg.DualConeProjector`.

    Example:
        >>> import torch
        >>> UPGrad()(torch.tensor([[-1.0, 1.0], [2.0, 4.0]]))
        tensor([0.5000, 2.5000])
    """

    weighting_class = UPGradWeighting
