"""Closed-form rule of ``Conv1d/2d/3d``: a Linear layer on the unfolded input (im2col)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._batching import Batching
from ._call import Call, Rule
from ._gram import linear_gramian
from ._linear_rules import first_input, only_grad, selected

_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _paddings(module: nn.modules.conv._ConvNd) -> list[tuple[int, int]]:
    """The ``(before, after)`` padding of each spatial dimension, as the convolution applies it."""
    kernel, dilation = module.kernel_size, module.dilation
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return [(0, 0)] * len(kernel)
        # "same": the total padding dilation·(k − 1), the extra unit (if odd) after.
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return [(total // 2, total - total // 2) for total in totals]
    return [(p, p) for p in module.padding]


def unfold(x: Tensor, module: nn.modules.conv._ConvNd) -> Tensor:
    """Unfold ``x`` of shape ``[N, C, *spatial]`` into ``[N, C·Πk, L]`` patches (``L`` outputs).

    Works in any number of spatial dimensions, with any stride, padding (and padding mode) and
    dilation. The patch order ``(channel, k1, k2, ...)`` is the row-major order of the
    flattened ``weight[o]``.
    """
    n_spatial = len(module.kernel_size)
    pad: list[int] = []
    for before, after in reversed(_paddings(module)):
        pad += [before, after]
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    for i, (k, s, d) in enumerate(
        zip(module.kernel_size, module.stride, module.dilation, strict=True)
    ):
        x = x.unfold(2 + i, d * (k - 1) + 1, s)
        if d > 1:
            x = x[..., ::d]
    # x: [N, C, *out, *kernel] -> [N, C, *kernel, *out]
    kernel_dims = range(2 + n_spatial, 2 + 2 * n_spatial)
    x = x.permute(0, 1, *kernel_dims, *range(2, 2 + n_spatial))
    n, c = x.shape[:2]
    return x.reshape(n, c * math.prod(module.kernel_size), -1)


class ConvRule(Rule):
    """Per-sample gradients of a convolution from its unfolded input and its output gradients."""

    def accepts(self, module: nn.Module) -> bool:
        return any(
            isinstance(module, kind) and type(module).forward is kind.forward
            for kind in _CONV_TYPES
        )

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        return first_input(args, kwargs)

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        module, a, g = self._factors(call, grads, batching)
        rows, slots = g.shape[:2]
        weight = torch.einsum("rsgot,sgtc->rsgoc", g, a)
        pairs: list[tuple[Tensor | None, Tensor]] = [
            (module.weight, weight.reshape(rows, slots, *module.weight.shape))
        ]
        if module.bias is not None:
            pairs.append((module.bias, g.sum(dim=4).reshape(rows, slots, module.out_channels)))
        return selected(call, *pairs)

    def gramian(self, call: Call, grads: list[Tensor | None], batching: Batching) -> Tensor | None:
        module, a, g = self._factors(call, grads, batching)
        ids = {id(p) for p in call.params}
        rows, slots = g.shape[:2]
        gramian = g.new_zeros(rows * slots, rows * slots)
        if id(module.weight) in ids:
            for group in range(module.groups):  # Groups have disjoint weights: Gramians add up.
                gramian += linear_gramian(a[:, group], g[:, :, group].transpose(2, 3))
        if module.bias is not None and id(module.bias) in ids:
            sums = g.sum(dim=4).reshape(rows * slots, module.out_channels)
            gramian += sums @ sums.T
        return gramian

    @staticmethod
    def _factors(
        call: Call, grads: list[Tensor | None], batching: Batching
    ) -> tuple[nn.modules.conv._ConvNd, Tensor, Tensor]:
        """Patches ``[S, G, N, (C/G)·Πk]`` and output gradients ``[R, S, G, O/G, N]``."""
        module = call.module
        if not isinstance(module, nn.modules.conv._ConvNd):
            raise TypeError(f"ConvRule got a {type(module).__name__}.")
        grad = only_grad(grads)
        (x,) = call.inputs
        n_spatial = len(module.kernel_size)
        batched = x.ndim == n_spatial + 2
        dim = batching.sample_dim(x.shape, module, known=0 if batched else x.ndim)
        rows, slots, groups = grad.shape[0], batching.n_slots, module.groups
        images = x.to(grad.dtype) if batched else x.to(grad.dtype).unsqueeze(0)
        patches = unfold(images, module)  # [n_images, C·Πk, L]
        positions = patches.shape[-1]
        # [slots, n, groups, (C/groups)·Πk, L] -> [slots, groups, n·L, (C/groups)·Πk]
        a = patches.reshape(slots, -1, groups, patches.shape[1] // groups, positions)
        a = a.permute(0, 2, 1, 4, 3).reshape(slots, groups, -1, a.shape[3])
        out_per_group = module.out_channels // groups
        g = batching.front_grad(grad, dim) if batched else grad.unsqueeze(1)
        g = g.reshape(rows, slots, -1, groups, out_per_group, positions)
        g = g.permute(0, 1, 3, 4, 2, 5).reshape(rows, slots, groups, out_per_group, -1)
        return module, a, g
