"""Which modules an engine covers, and which of them it refuses with a ``batch_dim``."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

SAMPLE_MIXING_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
    nn.SyncBatchNorm,
)


def collect_modules(modules: tuple[nn.Module | Iterable[nn.Module], ...]) -> list[nn.Module]:
    """Flatten the ``modules`` arguments and add every submodule, each module once, in order."""
    found: dict[int, nn.Module] = {}
    for position, item in enumerate(modules):
        roots: Iterable[object] = [item] if isinstance(item, nn.Module) else item
        if not isinstance(roots, Iterable):
            raise TypeError(
                "Parameter `modules` should be modules or iterables of modules. Found type "
                f"{type(item).__name__} at position {position}."
            )
        for root in roots:
            if not isinstance(root, nn.Module):
                raise TypeError(
                    "Parameter `modules` should be modules or iterables of modules. Found an "
                    f"element of type {type(root).__name__} at position {position}."
                )
            for module in root.modules():
                found.setdefault(id(module), module)
    return list(found.values())
