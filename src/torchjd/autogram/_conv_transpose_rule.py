"""Closed-form rule of ``ConvTranspose1d/2d/3d``: the adjoint of a convolution.

``y = convT(x, W)`` is the adjoint, in its input, of ``u ↦ conv(u, W)``, so the gradient of
``⟨Γ, y⟩`` with respect to ``W`` is the weight gradient of a convolution whose input is ``Γ``
and whose output gradient is ``x``: the unfolded output gradients play the part of the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._batching import Batching
from ._call import Call, Rule
from ._conv_rule import unfold
from ._generic_rule import GenericRule
from ._gram import linear_gramian, linear_jacobian
from ._linear_rules import first_input, only_grad, selected

_GENERIC = GenericRule()
_TYPES: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ConvTransposeRule(Rule):
    """Per-sample gradients of a transposed convolution from unfolded output gradients."""

    needs_input_cut = True  # For the calls handed to the generic rule (see ``_factors``).

    def accepts(self, module: nn.Module) -> bool:
        return any(
            isinstance(module, kind) and type(module).forward is kind.forward for kind in _TYPES
        )

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        return first_input(args, kwargs)

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        factors = self._factors(call, grads, batching)
        if factors is None:
            return _GENERIC.jacobians(call, grads, batching)
        module, x, u, g_sum = factors
        rows, slots, groups = u.shape[0], u.shape[1], module.groups
        # [R, S, G, (C_out/G)·Πk, C_in/G] -> weight [C_in, C_out/G, *k]
        per_group = [linear_jacobian(x[:, group], u[:, :, group]) for group in range(groups)]
        weight = torch.stack(per_group, dim=2).transpose(3, 4)
        pairs: list[tuple[Tensor | None, Tensor]] = [
            (module.weight, weight.reshape(rows, slots, *module.weight.shape))
        ]
        if module.bias is not None:
            pairs.append((module.bias, g_sum))
        return selected(call, *pairs)

    def gramian(self, call: Call, grads: list[Tensor | None], batching: Batching) -> Tensor | None:
        factors = self._factors(call, grads, batching)
        if factors is None:
            return None
        module, x, u, g_sum = factors
        rows, slots = u.shape[:2]
        ids = {id(p) for p in call.params}
        gramian = u.new_zeros(rows * slots, rows * slots)
        if id(module.weight) in ids:
            for group in range(module.groups):
                gramian += linear_gramian(x[:, group], u[:, :, group])
        if module.bias is not None and id(module.bias) in ids:
            sums = g_sum.reshape(rows * slots, -1)
            gramian += sums @ sums.T
        return gramian

    @staticmethod
    def _factors(
        call: Call, grads: list[Tensor | None], batching: Batching
    ) -> tuple[nn.modules.conv._ConvTransposeNd, Tensor, Tensor, Tensor] | None:
        """Inputs ``[S, G, N, C_in/G]``, unfolded output gradients ``[R, S, G, N, (C_out/G)·Πk]``
        and per-sample bias gradients ``[R, S, C_out]``; ``None`` if the geometry does not
        match (an ``output_size`` that needs more than the stride's output padding).
        """
        module = call.module
        if not isinstance(module, nn.modules.conv._ConvTransposeNd):
            raise TypeError(f"ConvTransposeRule got a {type(module).__name__}.")
        grad = only_grad(grads)
        (x,) = call.inputs
        n_spatial = len(module.kernel_size)
        batched = x.ndim == n_spatial + 2
        dim = batching.sample_dim(x.shape, module, known=0 if batched else x.ndim)
        rows, slots, groups = grad.shape[0], batching.n_slots, module.groups
        images = x.to(grad.dtype) if batched else x.to(grad.dtype).unsqueeze(0)
        g = batching.front_grad(grad, dim) if batched else grad.unsqueeze(1)
        g = g.reshape(rows * images.shape[0], *grad.shape[-(n_spatial + 1) :])
        patches = unfold(g, module)  # [R·n_images, C_out·Πk, L]
        positions = images.shape[2:].numel()
        if patches.shape[-1] != positions:
            return None
        c_in, c_out = module.in_channels, module.out_channels
        u = patches.reshape(rows, slots, -1, groups, patches.shape[1] // groups, positions)
        u = u.permute(0, 1, 3, 2, 5, 4).reshape(rows, slots, groups, -1, u.shape[4])
        a = images.reshape(slots, -1, groups, c_in // groups, positions)
        a = a.permute(0, 2, 1, 4, 3).reshape(slots, groups, -1, c_in // groups)
        g_sum = g.reshape(rows, slots, -1, c_out, g.shape[2:].numel()).sum(dim=(2, 4))
        return module, a, u, g_sum
