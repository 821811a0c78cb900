"""Closed-form rules of the layers that act on each position: Linear, Embedding, the norms."""

from __future__ import annotations

import math

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
        gramian = linear_gramian(xs, gs) if id(module.weight) in ids else None
        if module.bias is not None and id(module.bias) in ids:
            bias_gramian = sum_gramian(gs)
            gramian = bias_gramian if gramian is None else gramian + bias_gramian
        return gramian

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
        )
        rows, slots = grad.shape[0], batching.n_slots
        xs = batching.front(x, dim).reshape(slots, -1, module.in_features).to(grad.dtype)
        gs = batching.front_grad(grad, dim).reshape(rows, slots, -1, module.out_features)
        return xs, gs


class EmbeddingRule(Rule):
    """Row ``v`` of ``J_E`` is the sum of the output gradients at the positions of token ``v``."""

    def accepts(self, module: nn.Module) -> bool:
        return (
            type(module).forward is nn.Embedding.forward
            and isinstance(module, nn.Embedding)
            and not module.scale_grad_by_freq
        )

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        return first_input(args, kwargs)

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        module = call.module
        if not isinstance(module, nn.Embedding):
            raise TypeError(f"EmbeddingRule got a {type(module).__name__}.")
        index, gs = self._factors(module, call, grads, batching)
        rows, slots = gs.shape[:2]
        n_tokens, width = module.num_embeddings, module.embedding_dim
        # Scatter each position's gradient to the row (sample, token) of its own sample.
        offsets = torch.arange(slots, device=index.device).unsqueeze(1) * n_tokens
        flat_index = (index + offsets).reshape(-1)
        jac = gs.new_zeros(rows, slots * n_tokens, width)
        jac.index_add_(1, flat_index, gs.reshape(rows, -1, width))
        return selected(call, (module.weight, jac.reshape(rows, slots, n_tokens, width)))

    def gramian(self, call: Call, grads: list[Tensor | None], batching: Batching) -> Tensor | None:
        """Join the samples on their shared tokens; never builds the ``[V, p]`` gradients.

        ``⟨J_i, J_j⟩ = Σ_v r_iv · r_jv`` where ``r_iv`` sums the output gradients of sample ``i``
        at the positions of token ``v``. Only tokens shared by two samples couple them, so the
        pairs ``(sample, token)`` are grouped by token and each group contributes its own small
        Gram block (padded to the largest group), unless a dense product over the tokens in the
        batch is cheaper.
        """
        module = call.module
        if not isinstance(module, nn.Embedding):
            raise TypeError(f"EmbeddingRule got a {type(module).__name__}.")
        index, gs = self._factors(module, call, grads, batching)
        rows, slots, _, width = gs.shape
        n_tokens = module.num_embeddings
        device = index.device
        keys = (torch.arange(slots, device=device).unsqueeze(1) * n_tokens + index).reshape(-1)
        pair_keys, inverse = torch.unique(keys, return_inverse=True)
        n_pairs = pair_keys.numel()
        sums = gs.new_zeros(rows, n_pairs, width)
        sums.index_add_(1, inverse, gs.reshape(rows, -1, width))
        samples, tokens = pair_keys // n_tokens, pair_keys % n_tokens
        order = torch.argsort(tokens, stable=True)
        _, counts = torch.unique_consecutive(tokens[order], return_counts=True)
        n_groups = counts.numel()
        group = torch.repeat_interleave(torch.arange(n_groups, device=device), counts)
        n_objectives = rows * slots
        largest = int(counts.max())
        if largest >= slots:  # Padded blocks would cost as much as the dense product.
            dense = gs.new_zeros(rows, slots, n_groups, width)
            dense[:, samples[order], group] = sums[:, order]
            flat = dense.reshape(n_objectives, -1)
            return flat @ flat.T
        starts = torch.cumsum(counts, dim=0) - counts
        position = torch.arange(n_pairs, device=device) - starts[group]
        table = torch.full((n_groups, largest), n_pairs, device=device, dtype=torch.long)
        table[group, position] = order
        padded = torch.cat([sums, sums.new_zeros(rows, 1, width)], dim=1)[:, table]
        blocks_of = padded.permute(1, 0, 2, 3).reshape(n_groups, rows * largest, width)
        blocks = blocks_of @ blocks_of.transpose(1, 2)
        # Objective (r, s) -> r·(S + 1) + s; padding entries go to the extra slot s = S.
        slot_of = torch.cat([samples, samples.new_full((1,), slots)])[table]
        row_offsets = torch.arange(rows, device=device).reshape(1, rows, 1) * (slots + 1)
        target = (row_offsets + slot_of.unsqueeze(1)).reshape(n_groups, rows * largest)
        size = rows * (slots + 1)
        full = gs.new_zeros(size, size)
        full.index_put_(
            (target.unsqueeze(2).expand_as(blocks), target.unsqueeze(1).expand_as(blocks)),
            blocks,
            accumulate=True,
        )
        full = full.reshape(rows, slots + 1, rows, slots + 1)[:, :slots, :, :slots]
        return full.reshape(n_objectives, n_objectives)

    @staticmethod
    def _factors(
        module: nn.Embedding, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> tuple[Tensor, Tensor]:
        """Indices ``[S, N]`` and output gradients ``[R, S, N, p]`` (zero at padding)."""
        grad = only_grad(grads)
        (indices,) = call.inputs
        dim = batching.sample_dim(
            indices.shape, module, enclosing_batch_first=call.enclosing_batch_first
        )
        rows, slots = grad.shape[0], batching.n_slots
        index = batching.front(indices, dim).reshape(slots, -1)
        gs = batching.front_grad(grad, dim).reshape(rows, slots, -1, module.embedding_dim)
        if module.padding_idx is not None:
            gs = gs * (index != module.padding_idx).unsqueeze(-1).to(gs.dtype)
        return index, gs


class AffineNormRule(Rule):
    """``y = x̂ ⊙ γ + β`` with ``x̂`` recomputed from the input: ``J_γ = Σ g ⊙ x̂``, ``J_β = Σ g``.

    Covers ``LayerNorm``, ``GroupNorm`` and ``RMSNorm`` (where the module's forward is not
    overridden). The normalisation is recomputed from the recorded input; it is deterministic,
    so this is not a second run of anything random.
    """

    def accepts(self, module: nn.Module) -> bool:
        return any(
            isinstance(module, kind) and type(module).forward is kind.forward
            for kind in _NORM_TYPES
        )

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        return first_input(args, kwargs)

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
        if isinstance(module, nn.GroupNorm):
            dim = batching.sample_dim(x.shape, module, known=0)
            normalized = F.group_norm(x, module.num_groups, eps=module.eps)
            channels, positions = module.num_channels, math.prod(x.shape[2:])
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
            )
            size = math.prod(shape)
            xs = batching.front(normalized, dim).reshape(slots, -1, size)
            gs = batching.front_grad(grad, dim).reshape(rows, slots, -1, size)
            jac_weight = torch.einsum("rsnd,snd->rsd", gs, xs).reshape(rows, slots, *shape)
            jac_bias = gs.sum(dim=2).reshape(rows, slots, *shape)
        pairs: list[tuple[Tensor | None, Tensor]] = [(weight, jac_weight), (bias, jac_bias)]
        return selected(call, *pairs)


_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
