"""Whether forward hooks would observe a module's call (then no shortcut may skip it)."""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as _module


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward hooks or pre-hooks of its own."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def has_global_forward_hooks() -> bool:
    """Whether hooks registered for every module (``register_module_forward_hook``) exist."""
    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)


def is_observed(module: nn.Module) -> bool:
    """Whether any forward hook would see a call of ``module``."""
    return has_forward_hooks(module) or has_global_forward_hooks()


def calls_forward_directly(module: nn.Module) -> bool:
    """Whether calling ``module`` only runs its ``forward``: it has no hooks of any kind, and no
    hooks are registered for every module (the condition of ``nn.Module``'s own fast path).
    """
    return not (
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )
