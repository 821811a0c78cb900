"""TorchJD: Jacobian descent with PyTorch.

The library is organised in sub-packages:

- :mod:`torchjd.aggregation`: aggregators (a Jacobian ``[m, n]`` to one update ``[n]``) and
  weightings (a Jacobian or its Gramian to weights ``[m]``).
- :mod:`torchjd.linalg`: the linear-algebra building blocks (matrix types, dual-cone projectors).
- :mod:`torchjd.autojac`: the Jacobian of several objectives (:func:`~torchjd.autojac.backward`,
  :func:`~torchjd.autojac.mtl_backward`, :func:`~torchjd.autojac.jac`) and its aggregation into
  ``.grad`` (:func:`~torchjd.autojac.jac_to_grad`).

:func:`backward` and :func:`mtl_backward` are also available here, as in the README's examples.

:class:`Stateful` marks the aggregators and weightings that keep a state across calls.
"""

from ._stateful import Stateful
from .autojac import backward, mtl_backward

__all__ = ["Stateful", "backward", "mtl_backward"]
