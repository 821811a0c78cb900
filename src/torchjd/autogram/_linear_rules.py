"""Closed-form rules of Linear layers and of the affine parameters of norms (per position)."""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._batching import Batching
from ._call import Call, Rule
from ._gram import linear_gramian, linear_jacobian, sum_gramian


def first_input(args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
    """The module's first argument (positional or ``input=``), as the rule's only input."""
    value = args[0] if args else kwargs.get("input")
    if not isinstance(value, Tensor):
        raise TypeError(
            f"A hooked module expected a tensor as first input. Found type {type(value).__name__}."
        )
    return (value,)


def selected(call: Call, *pairs: tuple[Tensor | None, Tensor]) -> list[tuple[nn.Parameter, Tensor]]:
    """Keep the ``(parameter, jacobian)`` pairs whose parameter this call accounts for."""
    ids = {id(p) for p in call.params}
    return [(p, j) for p, j in pairs if isinstance(p, nn.Parameter) and id(p) in ids]


def only_grad(grads: list[Tensor | None]) -> Tensor:
    """The gradient of a single-output call (the engine only calls rules with a gradient)."""
    (grad,) = grads
    if grad is None:
        raise RuntimeError("A rule of a single-output module was called without a gradient.")
    return grad


class LinearRule(Rule):
    """``y = x Wᵀ + b`` applied at every position: ``J_W = Σ_t g_t x_tᵀ``, ``J_b = Σ_t g_t``."""

    def accepts(self, module: nn.Module) -> bool:
        return type(module).forward is nn.Linear.forward

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        return first_input(args, kwargs)

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        module = call.module
        if not isinstance(module, nn.Linear):
            raise TypeError(f"LinearRule got a {type(module).__name__}.")
        xs, gs = self._factors(module, call, grads, batching)
        pairs: list[tuple[Tensor | None, Tensor]] = [(module.weight, linear_jacobian(xs, gs))]
        if module.bias is not None:
            pairs.append((module.bias, gs.sum(dim=2)))
        return selected(call, *pairs)

    def gramian(self, call: Call, grads: list[Tensor | None], batching: Batching) -> Tensor | None:
        module = call.module
        if not isinstance(module, nn.Linear):
            raise TypeError(f"LinearRule got a {type(module).__name__}.")
        xs, gs = self._factors(module, call, grads, batching)
        ids = {id(p) for p in call.params}
        with_bias = module.bias is not None and id(module.bias) in ids
        if id(module.weight) in ids:
            return linear_gramian(xs, gs, bias=with_bias)
        return sum_gramian(gs) if with_bias else None

    @staticmethod
    def _factors(
        module: nn.Linear, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> tuple[Tensor, Tensor]:
        """Inputs ``[S, N, d]`` and output gradients ``[R, S, N, p]`` with a sample axis."""
        grad = only_grad(grads)
        (x,) = call.inputs
        dim = batching.sample_dim(
            x.shape,
            module,
            n_feature_dims=1,
            enclosing_batch_first=call.enclosing_batch_first,
            call=call,
        )
        rows, slots = grad.shape[0], batching.n_slots
        xs = batching.front(x, dim).reshape(slots, -1, module.in_features).to(grad.dtype)
        gs = batching.front_grad(grad, dim).reshape(rows, slots, -1, module.out_features)
        return xs, gs


class AffineNormRule(Rule):
    """``y = x̂ ⊙ γ + β`` with ``x̂`` recomputed from the input: ``J_γ = Σ g ⊙ x̂``, ``J_β = Σ g``.

    Covers ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d/2d/3d`` and ``RMSNorm`` (where the
    module's forward is not overridden). The normalisation is recomputed from the recorded
    input; it is deterministic, so this is not a second run of anything random.
    """

    def accepts(self, module: nn.Module) -> bool:
        return any(
            isinstance(module, kind) and type(module).forward is kind.forward
            for kind in _NORM_TYPES
        )

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        return first_input(args, kwargs)

    def options(
        self, module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> dict[str, object]:
        # An InstanceNorm in eval mode with running statistics normalises with them: keep the
        # values of this call (a later training-mode call updates them in place).
        if isinstance(module, nn.modules.instancenorm._InstanceNorm):
            mean, var = module.running_mean, module.running_var
            if not module.training and mean is not None and var is not None:
                return {"running_stats": (mean.clone(), var.clone())}
        return {}

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        module = call.module
        grad = only_grad(grads)
        (x,) = call.inputs
        rows, slots = grad.shape[0], batching.n_slots
        x = x.to(grad.dtype)
        weight = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        if isinstance(module, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
            if isinstance(module, nn.GroupNorm):
                batched, channels = True, module.num_channels
                normalized = F.group_norm(x, module.num_groups, eps=module.eps)
            else:
                n_spatial = (
                    1
                    if isinstance(module, nn.InstanceNorm1d)
                    else 2
                    if isinstance(module, nn.InstanceNorm2d)
                    else 3
                )
                batched, channels = x.ndim == n_spatial + 2, module.num_features
                images = x if batched else x.unsqueeze(0)
                stats = cast(tuple[Tensor, Tensor] | None, call.options.get("running_stats"))
                normalized = F.instance_norm(
                    images,
                    None if stats is None else stats[0].to(grad.dtype),
                    None if stats is None else stats[1].to(grad.dtype),
                    use_input_stats=stats is None,
                    eps=module.eps,
                )
                normalized = normalized if batched else normalized.squeeze(0)
            dim = batching.sample_dim(x.shape, module, known=0 if batched else x.ndim)
            if not batched:
                normalized, grad = normalized.unsqueeze(0), grad.unsqueeze(1)
            positions = math.prod(normalized.shape[2:])
            xs = batching.front(normalized, dim).reshape(slots, -1, channels, positions)
            gs = batching.front_grad(grad, dim).reshape(rows, slots, -1, channels, positions)
            jac_weight = torch.einsum("rsncl,sncl->rsc", gs, xs)
            jac_bias = gs.sum(dim=(2, 4))
        else:
            if isinstance(module, nn.LayerNorm):
                shape = tuple(module.normalized_shape)
                normalized = F.layer_norm(x, shape, eps=module.eps)
            else:  # RMSNorm (torch >= 2.4; not named, to type-check on older versions)
                shape = tuple(getattr(module, "normalized_shape"))  # noqa: B009
                normalized = F.rms_norm(x, shape, eps=getattr(module, "eps"))  # noqa: B009
            dim = batching.sample_dim(
                x.shape,
                module,
                n_feature_dims=len(shape),
                enclosing_batch_first=call.enclosing_batch_first,
                call=call,
            )
            size = math.prod(shape)
            xs = batching.front(normalized, dim).reshape(slots, -1, size)
            gs = batching.front_grad(grad, dim).reshape(rows, slots, -1, size)
            jac_weight = torch.einsum("rsnd,snd->rsd", gs, xs).reshape(rows, slots, *shape)
            jac_bias = gs.sum(dim=2).reshape(rows, slots, *shape)
        pairs: list[tuple[Tensor | None, Tensor]] = [(weight, jac_weight), (bias, jac_bias)]
        return selected(call, *pairs)


_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
