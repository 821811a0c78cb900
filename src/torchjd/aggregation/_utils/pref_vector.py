"""Turn an optional preference vector into the weighting that produces it."""

from __future__ import annotations

from torch import Tensor

from torchjd.aggregation._constant import ConstantWeighting
from torchjd.aggregation._weighting_bases import Weighting
from torchjd.linalg import Matrix


class _PrefVectorWeighting(ConstantWeighting):
    """A constant weighting whose errors name the ``pref_vector`` parameter."""

    _param_name = "pref_vector"


def pref_vector_to_weighting(
    pref_vector: Tensor | None, default: Weighting[Matrix]
) -> Weighting[Matrix]:
    """Return ``default`` when there is no preference vector, else a constant weighting."""
    if pref_vector is None:
        return default
    return _PrefVectorWeighting(pref_vector)
