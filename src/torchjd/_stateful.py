"""The mixin of the objects whose outputs depend on their previous calls."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Stateful(ABC):
    """Marks an object (an aggregator, a weighting) that keeps an internal state across calls.

    The output of such an object depends on the inputs of its previous calls, not only on the
    current one: for instance an exponential moving average, a step counter or cached weights.
    Call :meth:`reset` to restore the state it had when it was built, for instance between two
    trainings or when the objectives change.
    """

    @abstractmethod
    def reset(self) -> None:
        """Restore the initial state, as right after construction."""
