"""TorchJD: Jacobian descent with PyTorch.

The library is organised in sub-packages:

- :mod:`torchjd.aggregation`: aggregators (a Jacobian ``[m, n]`` to one update ``[n]``) and
  weightings (a Jacobian or its Gramian to weights ``[m]``).
- :mod:`torchjd.linalg`: the linear-algebra building blocks (matrix types, dual-cone projectors).

:class:`Stateful` marks the aggregators and weightings that keep a state across calls.
"""

from ._stateful import Stateful

__all__ = ["Stateful"]
