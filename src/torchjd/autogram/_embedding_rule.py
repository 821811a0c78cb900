"""Closed-form rule of ``Embedding``: rows of per-sample gradients are sums of output gradients."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchjd.linalg._matrix import gram

from ._batching import Batching
from ._call import Call, Rule
from ._linear_rules import first_input, only_grad, selected


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
            return gram(dense.reshape(n_objectives, -1))
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
        # A scatter-add on the flattened matrix: half the time of `index_put_` with two index
        # tensors and `accumulate=True` (978 blocks of 12 × 12 into 129 × 129: 0.95 -> 0.46 ms).
        flat_target = (target.unsqueeze(2) * size + target.unsqueeze(1)).reshape(-1)
        full = gs.new_zeros(size * size).scatter_add_(0, flat_target, blocks.reshape(-1))
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
            indices.shape, module, enclosing_batch_first=call.enclosing_batch_first, call=call
        )
        rows, slots = grad.shape[0], batching.n_slots
        index = batching.front(indices, dim).reshape(slots, -1)
        gs = batching.front_grad(grad, dim).reshape(rows, slots, -1, module.embedding_dim)
        if module.padding_idx is not None:
            gs = gs * (index != module.padding_idx).unsqueeze(-1).to(gs.dtype)
        return index, gs
