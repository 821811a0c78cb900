"""Jacobian descent through the Jacobian: compute it, then aggregate it into ``.grad``.

- :func:`backward` and :func:`mtl_backward` compute the Jacobian of several objectives with
  respect to the parameters. With an aggregator (``A``), they aggregate it into ``.grad``
  directly (the form of TorchJD 0.8); without, they store it in each parameter's ``.jac`` field,
  and :func:`jac_to_grad` aggregates it (the form of TorchJD 0.9+).
- :func:`jac` returns Jacobians without touching any field.

The rows of a Jacobian are vector-Jacobian products, computed in batches with ``torch.vmap``
(``parallel_chunk_size`` rows at a time) or, on the CPU when the model's tensors are large, one by
one (see :func:`backward`); when vmap fails on some model, the rows are computed one by one
instead, with a warning.
"""

from ._backward import backward
from ._jac import jac
from ._jac_to_grad import jac_to_grad
from ._mtl_backward import mtl_backward

__all__ = ["backward", "jac", "jac_to_grad", "mtl_backward"]
