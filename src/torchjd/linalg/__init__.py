"""Linear-algebra building blocks: phantom matrix types and the dual-cone projectors."""

from ._dual_cone import DualConeProjector
from ._matrix import Matrix, PSDMatrix
from ._projector import ActiveSetProjector

__all__ = ["ActiveSetProjector", "DualConeProjector", "Matrix", "PSDMatrix"]
