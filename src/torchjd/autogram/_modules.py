"""Which modules an engine covers, and which of them it refuses with a ``batch_dim``."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.nn.utils.parametrize import is_parametrized

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


def parametrization_modules(modules: list[nn.Module]) -> set[int]:
    """The ids of the modules that compute the parametrized tensors of ``modules``.

    ``torch.nn.utils.parametrize`` moves a parametrized parameter into a ``parametrizations``
    child of its owner, whose modules compute the tensor (from the original parameters) when
    the owner reads it, so inside the owner's forward pass. They are not hooked: the tensor they
    return holds no sample, and the owner's call accounts for the original parameters (its
    generic rule back-propagates through the parametrization).
    """
    found: set[int] = set()
    for module in modules:
        parametrizations = module._modules.get("parametrizations")
        if isinstance(parametrizations, nn.ModuleDict) and is_parametrized(module):
            found.update(id(child) for child in parametrizations.modules())
    return found


# PyTorch's containers: their forward (Sequential's) only calls their children.
_CONTAINER_TYPES: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def needs_no_hooks(module: nn.Module) -> bool:
    """Whether every use of ``module``'s parameters is inside calls of its children (which are
    hooked themselves), so that hooking ``module`` would record nothing.

    True for the containers of PyTorch (exactly ``Sequential``, ``ModuleList`` and ``ModuleDict``,
    not subclasses, which may override ``forward``) without parameters of their own. Hooks on a
    module cost tens of microseconds per call (measured: 20-40 µs per forward pass of the
    benchmark's MLP for its ``Sequential``). One that declares ``batch_first`` is still hooked,
    as the layout hint of the modules it calls.
    """
    return (
        type(module) in _CONTAINER_TYPES
        and not module._parameters
        and "batch_first" not in vars(module)
    )
