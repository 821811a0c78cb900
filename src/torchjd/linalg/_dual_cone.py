"""The abstract dual-cone projector used by UPGrad and DualProj."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor


class DualConeProjector(ABC):
    r"""Solves the dual-cone projection problems of UPGrad and DualProj in Gram form.

    For each weight vector ``u`` (a row of ``U``), a projector returns the ``v`` solving

    .. math:: \min_{v} v^\top G v \quad \text{s.t.} \quad v \geq u

    (element-wise). If ``G = J Jᵀ``, then ``Jᵀ v`` is the projection of ``Jᵀ u`` onto the dual
    cone ``{x : J x ≥ 0}`` of the rows of ``J`` (Proposition 1 of *Jacobian Descent For
    Multi-Objective Optimization*).
    """

    @abstractmethod
    def __call__(self, U: Tensor, G: Tensor) -> Tensor:
        """Project every row of ``U`` (shape ``[..., m]``) with the Gramian ``G`` (``[m, m]``).

        Returns a tensor of the shape of ``U``.
        """


class ProjectionError(RuntimeError):
    """Raised when a dual-cone projection does not converge or has no unique solution."""
