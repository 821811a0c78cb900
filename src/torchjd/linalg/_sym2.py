"""The eigendecomposition and pseudo-inverse of a symmetric 2×2 matrix, in Python floats.

Two objectives are the most common multi-task set-up. For them, a weighting of the ``[2, 2]``
Gramian costs a handful of flops, while each tensor operation (an ``eigh`` or a ``pinv`` above
all) costs tens of microseconds: read once with ``tolist()``, the Gramian is decomposed here in
closed form by one Jacobi rotation, which is exact to float64 rounding (the rotation is computed
in the stable form of Golub & Van Loan, *Matrix Computations*, §8.5.2).
"""

from __future__ import annotations

import math

Vector2 = tuple[float, float]


def eigh2(a: float, b: float, c: float) -> tuple[Vector2, tuple[Vector2, Vector2]]:
    """Return the eigenvalues (ascending) and the unit eigenvectors of ``[[a, b], [b, c]]``."""
    if b == 0.0:
        if a <= c:
            return (a, c), ((1.0, 0.0), (0.0, 1.0))
        return (c, a), ((0.0, 1.0), (1.0, 0.0))
    tau = (c - a) / (2.0 * b)
    t = math.copysign(1.0, tau) / (abs(tau) + math.sqrt(1.0 + tau * tau))
    cos = 1.0 / math.sqrt(1.0 + t * t)
    sin = t * cos
    # The rotation [[cos, sin], [-sin, cos]] diagonalises the matrix into diag(a - tb, c + tb).
    low, high = a - t * b, c + t * b
    first, second = (cos, -sin), (sin, cos)
    if low <= high:
        return (low, high), (first, second)
    return (high, low), (second, first)


def pinv2(a: float, b: float, c: float, rtol: float) -> tuple[float, float, float]:
    """The Moore–Penrose pseudo-inverse of ``[[a, b], [b, c]]`` as ``(p, q, r)`` for
    ``[[p, q], [q, r]]``: eigenvalues of absolute value at most ``rtol`` times the largest one are
    treated as zero (the convention of ``torch.linalg.pinv``).
    """
    values, vectors = eigh2(a, b, c)
    cutoff = rtol * max(abs(values[0]), abs(values[1]))
    p = q = r = 0.0
    for value, (x, y) in zip(values, vectors, strict=True):
        if abs(value) > cutoff:
            p += x * x / value
            q += x * y / value
            r += y * y / value
    return p, q, r
