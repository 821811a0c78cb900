from __future__ import annotations

import torch
from torch import Tensor

from ._aggregator_bases import WeightedAggregator
from ._weighting_bases import _MatrixWeighting


class RandomWeighting(_MatrixWeighting):
    """Draws fresh random weights at every call: ``w = softmax(z)`` with ``z ~ N(0, I_m)``.

    The weights are positive and sum to 1. Only the number of rows of the input is used, so this
    weighting also applies to a Gramian. The draw is made in the input's dtype and on its device,
    from the global random number generator unless ``generator`` is given.

    This is the random loss weighting (RLW) of Lin et al., *Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning*, TMLR 2022 (Algorithm 2, with a standard
    normal distribution).

    Args:
        generator: The random number generator used for the draw, on the input's device. Default:
            ``None``, i.e. the global generator (seed it with :func:`torch.manual_seed`).
            A generator on another device than the input makes the call fail.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> RandomWeighting()(torch.tensor([[18.0, -22.0], [-22.0, 38.0]]))
    tensor([0.8623, 0.1377])
    """

    reads_values = False

    def __init__(self, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                "Parameter `generator` should be a torch.Generator or None. "
                f"Found type {type(generator).__name__}."
            )
        self.generator = generator

    def forward(self, stat: Tensor, /) -> Tensor:
        logits = torch.randn(
            stat.shape[0], generator=self.generator, dtype=stat.dtype, device=stat.device
        )
        return torch.softmax(logits, dim=0)


class Random(WeightedAggregator):
    """Combines the rows of the matrix with random weights drawn at every call:
    ``A(J) = Jᵀ softmax(z)``, ``z ~ N(0, I_m)``.

    The update is a random convex combination of the rows (see :class:`RandomWeighting`).

    Reference: Lin et al., *Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning*, TMLR 2022.

    Args:
        generator: The random number generator used for the draw, on the input's device. Default:
            ``None``, i.e. the global generator.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> Random()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([-2.6229,  1.0000,  1.0000])
    """

    weighting: RandomWeighting

    def __init__(self, *, generator: torch.Generator | None = None) -> None:
        super().__init__(RandomWeighting(generator=generator))

    def __repr__(self) -> str:
        generator = self.weighting.generator
        arguments = "" if generator is None else f"generator={generator!r}"
        return f"{type(self).__name__}({arguments})"
