"""Whether the call of an aggregator or weighting may skip ``nn.Module``'s machinery.

An aggregation after a garbage collection (as in a training loop) pays for every Python frame
that it enters, a few microseconds each when caches are cold: the checks, ``nn.Module.__call__``
and the context managers of three nested modules add up to ~100-200 µs, as much as the
arithmetic for a few objectives. Where nothing can observe the difference (no hooks, and no
subclass that redefines a step of the call), a lean path runs the same computations directly.
"""

from __future__ import annotations


def defined_only_by(cls: type, name: str, definers: tuple[type, ...]) -> bool:
    """Whether ``name`` is defined, along ``cls``'s MRO, by classes of ``definers`` only: for a
    method whose definitions each call ``super()``, calling it runs only code the caller knows.
    """
    return all(klass in definers for klass in cls.__mro__ if name in vars(klass))
