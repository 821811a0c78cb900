"""TorchJD: Jacobian descent with PyTorch.

The library is organised in sub-packages:

- :mod:`torchjd.aggregation`: aggregators (a Jacobian ``[m, n]`` to one update ``[n]``) and
  weightings (a Jacobian or its Gramian to weights ``[m]``).
- :mod:`torchjd.linalg`: the linear-algebra building blocks (matrix types, dual-cone projectors).
"""

__all__: list[str] = []
