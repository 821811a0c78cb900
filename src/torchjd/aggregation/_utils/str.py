"""String helpers for the ``str`` of aggregators with a vector hyper-parameter."""

from __future__ import annotations

from torch import Tensor


def vector_to_str(vector: Tensor) -> str:
    """Format each entry with two decimals, strip trailing zeros and join with ``", "``.

    >>> import torch
    >>> vector_to_str(torch.tensor([1.0, 2.0]))
    '1., 2.'
    >>> vector_to_str(torch.tensor([0.1, 0.25]))
    '0.1, 0.25'
    """
    return ", ".join(f"{float(value):.2f}".rstrip("0") for value in vector)


def pref_suffix(pref_vector: Tensor | None) -> str:
    """Return ``"([a, b])"`` for a preference vector, or ``""`` when there is none."""
    return "" if pref_vector is None else f"([{vector_to_str(pref_vector)}])"
