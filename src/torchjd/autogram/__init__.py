"""The autogram engine: Gramians of Jacobians without forming the Jacobians.

:class:`Engine` computes ``J Jᵀ`` for the Jacobian ``J`` of a tensor with respect to the
parameters of some modules; a Gramian weighting of :mod:`torchjd.aggregation` (for instance
``UPGradWeighting``) then turns it into the weights of a Jacobian-descent step.
"""

from ._engine import Engine

__all__ = ["Engine"]
