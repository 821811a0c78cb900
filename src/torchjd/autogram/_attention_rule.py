"""Closed-form rule of ``MultiheadAttention``: its four projections are Linear maps.

The attention core has no parameters; what is needed are the gradients at the outputs of the
input projections and at the input of the output projection. The rule rebuilds the module's
computation from the recorded inputs (detached from everything else), back-propagates the
module's output gradients through it, and applies the Linear formulas. Rebuilding is exact only
when the module is deterministic: calls with attention dropout in training mode, masks or the
attention weights used downstream go to the generic rule instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._batching import Batching
from ._call import Call, Rule
from ._generic_rule import GenericRule
from ._gram import linear_gramian, linear_jacobian, sum_gramian
from ._linear_rules import selected

_GENERIC = GenericRule()
_INPUT_NAMES = ("query", "key", "value")
_OPTION_NAMES = ("key_padding_mask", "attn_mask")


class _Factors:
    """Inputs ``[S, N, d]`` and output gradients ``[R, S, N, p]`` of the four projections."""

    def __init__(
        self, inputs: list[Tensor], grads: list[Tensor], attended: Tensor, out_grad: Tensor
    ) -> None:
        self.inputs = inputs
        self.grads = grads
        self.attended = attended
        self.out_grad = out_grad


class AttentionRule(Rule):
    """Gramian of ``in_proj_weight``/``in_proj_bias`` and ``out_proj`` of a MultiheadAttention."""

    needs_input_cut = True  # For the calls handed to the generic rule.

    def accepts(self, module: nn.Module) -> bool:
        return (
            isinstance(module, nn.MultiheadAttention)
            and type(module).forward is nn.MultiheadAttention.forward
            and module._qkv_same_embed_dim
            and module.bias_k is None
            and module.bias_v is None
            and not module.add_zero_attn
        )

    def handled_params(self, module: nn.Module) -> tuple[nn.Parameter, ...]:
        # Registered parameters only, as in `Rule.handled_params` (so not a parametrized
        # `out_proj.weight`).
        own = (module._parameters.get(name) for name in ("in_proj_weight", "in_proj_bias"))
        out_proj = module.get_submodule("out_proj")
        projection = (out_proj._parameters.get(name) for name in ("weight", "bias"))
        return tuple(p for p in (*own, *projection) if p is not None)

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        values = [
            args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(_INPUT_NAMES)
        ]
        return tuple(v for v in values if isinstance(v, Tensor))

    def options(
        self, module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> dict[str, object]:
        masked = any(kwargs.get(name) is not None for name in _OPTION_NAMES) or len(args) > 3
        dropout = float(getattr(module, "dropout", 0.0))
        random = module.training and dropout > 0.0
        return {"rebuild": not (masked or random or bool(kwargs.get("is_causal", False)))}

    def _rebuildable(self, call: Call, grads: list[Tensor | None]) -> bool:
        return (
            bool(call.options.get("rebuild"))
            and len(call.inputs) == 3
            and grads[0] is not None
            and all(g is None for g in grads[1:])
        )

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        if not self._rebuildable(call, grads):
            return _GENERIC.jacobians(call, grads, batching)
        module, f = self._factors(call, grads, batching)
        in_weight = torch.cat(
            [linear_jacobian(x, g) for x, g in zip(f.inputs, f.grads, strict=True)], dim=2
        )
        in_bias = torch.cat([g.sum(dim=2) for g in f.grads], dim=2)
        return selected(
            call,
            (module.in_proj_weight, in_weight),
            (module.in_proj_bias, in_bias),
            (module.out_proj.weight, linear_jacobian(f.attended, f.out_grad)),
            (module.out_proj.bias, f.out_grad.sum(dim=2)),
        )

    def gramian(self, call: Call, grads: list[Tensor | None], batching: Batching) -> Tensor | None:
        if not self._rebuildable(call, grads):
            return None
        module, f = self._factors(call, grads, batching)
        ids = {id(p) for p in call.params}
        rows, slots = f.out_grad.shape[:2]
        gramian = f.out_grad.new_zeros(rows * slots, rows * slots)
        # A bias is counted with its weight when both are differentiated (see linear_gramian).
        in_bias = module.in_proj_bias is not None and id(module.in_proj_bias) in ids
        if id(module.in_proj_weight) in ids:
            for x, g in zip(f.inputs, f.grads, strict=True):
                gramian += linear_gramian(x, g, bias=in_bias)
        elif in_bias:
            for g in f.grads:
                gramian += sum_gramian(g)
        out_bias = module.out_proj.bias is not None and id(module.out_proj.bias) in ids
        if id(module.out_proj.weight) in ids:
            gramian += linear_gramian(f.attended, f.out_grad, bias=out_bias)
        elif out_bias:
            gramian += sum_gramian(f.out_grad)
        return gramian

    @staticmethod
    def _factors(
        call: Call, grads: list[Tensor | None], batching: Batching
    ) -> tuple[nn.MultiheadAttention, _Factors]:
        module = call.module
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"AttentionRule got a {type(module).__name__}.")
        grad = grads[0]
        if grad is None:
            raise RuntimeError("AttentionRule was called without an output gradient.")
        rows, slots = grad.shape[0], batching.n_slots
        batched = call.inputs[0].ndim == 3
        sequence_first = batched and not module.batch_first

        def local(t: Tensor) -> Tensor:  # [N, L, E]
            if not batched:
                return t.unsqueeze(0)
            return t.transpose(0, 1) if sequence_first else t

        # The attention is rebuilt in the dtype of the output gradient, which the engine has
        # promoted to the Gramian's: under autocast, the recorded inputs and the parameters
        # can each have another one.
        dtype = grad.dtype

        def constant(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().to(dtype)

        inputs = [local(t.detach().to(dtype)) for t in call.inputs]
        size, heads = module.embed_dim, module.num_heads
        head_dim = size // heads
        weight = module.in_proj_weight.detach().to(dtype)
        bias = constant(module.in_proj_bias)
        with torch.enable_grad():
            projected = [
                F.linear(
                    x,
                    weight[i * size : (i + 1) * size],
                    None if bias is None else bias[i * size : (i + 1) * size],
                )
                .detach()
                .requires_grad_()
                for i, x in enumerate(inputs)
            ]
            q, k, v = (t.reshape(*t.shape[:-1], heads, head_dim).transpose(1, 2) for t in projected)
            scores = torch.softmax((q / math.sqrt(head_dim)) @ k.transpose(-2, -1), dim=-1)
            attended = (scores @ v).transpose(1, 2).flatten(start_dim=2)
            out_proj = module.out_proj
            out_weight = out_proj.weight.detach().to(dtype)
            out = F.linear(attended, out_weight, constant(out_proj.bias))
            out_grad = grad.transpose(1, 2) if sequence_first else grad
            out_grad = out_grad if batched else out_grad.unsqueeze(1)
            single = rows == 1
            local_grads = torch.autograd.grad(
                out,
                projected,
                grad_outputs=out_grad[0] if single else out_grad,
                is_grads_batched=not single,
            )
        if single:
            local_grads = tuple(g.unsqueeze(0) for g in local_grads)
        dims = [batching.sample_dim(x.shape, module, known=0) for x in inputs]

        def front(x: Tensor, dim: int | None) -> Tensor:
            return batching.front(x, dim).reshape(slots, -1, x.shape[-1])

        def front_grad(g: Tensor, dim: int | None) -> Tensor:
            return batching.front_grad(g, dim).reshape(rows, slots, -1, g.shape[-1])

        factors = _Factors(
            inputs=[front(x, d) for x, d in zip(inputs, dims, strict=True)],
            grads=[front_grad(g, d) for g, d in zip(local_grads, dims, strict=True)],
            attended=front(attended.detach(), dims[0]),
            out_grad=front_grad(out_grad, dims[0]),
        )
        return module, factors
