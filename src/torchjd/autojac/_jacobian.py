"""The rows of a Jacobian, computed as vector-Jacobian products batched with ``torch.vmap``.

The Jacobian of ``outputs`` with respect to ``inputs`` is pulled back from an initial Jacobian
(the *seeds*): each row of the result is ``seed_row · ∂outputs/∂inputs``. Rows are computed in
chunks of ``parallel_chunk_size`` (by default, see ``_chunking.py``); a chunk of several rows is
one call of ``torch.autograd.grad`` under ``torch.vmap``, a single row is a plain call.

The result is kept as row blocks (one per call), never concatenated here: the consumers (the
Gramian, the aggregation, ``.jac``) either work block by block or copy each block once.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

import torch
from torch import Tensor

from torchjd._vmap import vmap_fallback_allowed

from ._chunking import default_chunk_size, plan

_Grads = list[Tensor | None]


class Seeds:
    """The initial Jacobian ``[m, *output.shape]`` of each output.

    Args:
        outputs: The tensors to differentiate.
        given: The user's initial Jacobians (``jac_tensors``), or ``None`` for the identity: one
            row per element of the outputs, in order, each output flattened row-major.
    """

    def __init__(self, outputs: Sequence[Tensor], given: Sequence[Tensor] | None = None) -> None:
        self.outputs = list(outputs)
        self.given = None if given is None else list(given)
        if self.given is not None:
            self.rows = self.given[0].shape[0] if self.given else 0
        else:
            self.numels = [t.numel() for t in self.outputs]
            self.offsets = [sum(self.numels[:i]) for i in range(len(self.numels))]
            self.rows = sum(self.numels)

    def chunk(self, start: int, stop: int) -> tuple[list[Tensor], list[Tensor]]:
        """Return the outputs that rows ``start:stop`` involve, and their seeds ``[c, *shape]``."""
        if self.given is not None:
            return self.outputs, [seed[start:stop] for seed in self.given]
        outputs: list[Tensor] = []
        seeds: list[Tensor] = []
        for output, offset, numel in zip(self.outputs, self.offsets, self.numels, strict=True):
            if max(start, offset) >= min(stop, offset + numel):
                continue  # no row of this chunk seeds this output: leave its graph alone
            seed = torch.zeros((stop - start, numel), dtype=output.dtype, device=output.device)
            # Row k of the chunk is row start + k of the identity: a one at column
            # start + k - offset, i.e. on the diagonal of offset start - offset.
            seed.diagonal(start - offset).fill_(1)
            outputs.append(output)
            seeds.append(seed.view(stop - start, *output.shape))
        return outputs, seeds

    def combine(self, weights: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The outputs and the gradients ``Σ_k weights[k] · seed_k`` to pull back, so that one
        vector-Jacobian product gives ``weights @ J``.
        """
        outputs: list[Tensor] = []
        grads: list[Tensor] = []
        if self.given is not None:
            for output, seed in zip(self.outputs, self.given, strict=True):
                outputs.append(output)
                grads.append(torch.tensordot(weights.to(seed.dtype), seed, dims=1))
            return outputs, grads
        for output, offset, numel in zip(self.outputs, self.offsets, self.numels, strict=True):
            if numel == 0:
                continue
            outputs.append(output)
            grads.append(weights[offset : offset + numel].to(output.dtype).view(output.shape))
        return outputs, grads


def weighted_vjp(
    seeds: Seeds, weights: Tensor, inputs: list[Tensor], retain_graph: bool
) -> list[Tensor | None]:
    """``weights @ J`` for each input, as one vector-Jacobian product (``None``: unused input)."""
    outputs, grads = seeds.combine(weights)
    return list(
        torch.autograd.grad(outputs, inputs, grads, retain_graph=retain_graph, allow_unused=True)
    )


@dataclass
class Jacobian:
    """The Jacobian of some outputs with respect to ``inputs``, as row blocks.

    ``blocks[i][k]`` holds the rows ``starts[k]:starts[k + 1]`` of the Jacobian of input ``i``,
    of shape ``[c, *inputs[i].shape]``, or ``None`` where those rows are zero (the outputs do not
    depend on the input).
    """

    inputs: list[Tensor]
    rows: int
    starts: list[int]
    blocks: list[list[Tensor | None]]

    def stops(self) -> list[int]:
        """The end row of each block."""
        return [*self.starts[1:], self.rows]

    def is_used(self, i: int) -> bool:
        """Whether some output depends on input ``i``."""
        return any(block is not None for block in self.blocks[i])

    def full(self, i: int) -> Tensor:
        """The Jacobian ``[m, *shape]`` of input ``i``; its blocks are released."""
        input = self.inputs[i]
        parts = [
            torch.zeros((stop - start, *input.shape), dtype=input.dtype, device=input.device)
            if block is None
            else block
            for block, start, stop in zip(self.blocks[i], self.starts, self.stops(), strict=True)
        ]
        self.blocks[i] = []
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return torch.zeros((0, *input.shape), dtype=input.dtype, device=input.device)
        return torch.cat(parts)

    @staticmethod
    def of_matrices(inputs: list[Tensor], matrices: list[Tensor]) -> Jacobian:
        """Wrap one full Jacobian ``[m, *shape]`` per input (``m >= 1``)."""
        rows = matrices[0].shape[0]
        return Jacobian(inputs, rows, [0], [[matrix] for matrix in matrices])


def compute_jacobian(
    seeds: Seeds,
    inputs: list[Tensor],
    retain_graph: bool,
    parallel_chunk_size: int | None,
) -> Jacobian:
    """Pull the ``seeds`` back to ``inputs`` (distinct tensors that require grad).

    Every call but the last retains the graph; the last one frees it unless ``retain_graph``.
    The rows of a chunk are computed under ``torch.vmap`` with the graph retained, and the very
    last row alone (without vmap) when the graph must be freed: if vmap fails for a reason of the
    model (an operation without batching rule, for example), the graph is then still intact, and
    the remaining rows are computed one by one, with one warning.
    """
    m = seeds.rows
    if m == 0 or not inputs:
        return Jacobian(inputs, m, [0], [[None] for _ in inputs])
    # torch.autograd.grad also feeds the `.grad` of the non-leaf tensors that retain it: keep
    # those of the inputs as they were.
    retained = [(t, t.grad) for t in inputs if not t.is_leaf and t.retains_grad]
    computer = _RowComputer(seeds, inputs)
    try:
        chunk_size = parallel_chunk_size or default_chunk_size(seeds.outputs, m, inputs[0].device)
        for kind, start, stop in plan(m, chunk_size, retain_graph):
            if kind == "rows":
                computer.rows(start, stop, free_at_end=(stop == m and not retain_graph))
            else:
                first = computer.batched(start, stop)
                if first is not None:  # vmap failed: every remaining row is computed alone
                    computer.rows(start, m, free_at_end=not retain_graph, first=first)
                    break
    finally:
        for tensor, grad in retained:
            tensor.grad = grad
    return Jacobian(inputs, m, computer.starts, computer.blocks)


class _RowComputer:
    """Computes row blocks and collects them, input by input."""

    def __init__(self, seeds: Seeds, inputs: list[Tensor]) -> None:
        self.seeds = seeds
        self.inputs = inputs
        self.starts: list[int] = []
        self.blocks: list[list[Tensor | None]] = [[] for _ in inputs]

    def _add_block(self, start: int, grads: _Grads) -> None:
        self.starts.append(start)
        for blocks, grad in zip(self.blocks, grads, strict=True):
            blocks.append(grad)

    def _row(self, row: int, retain_graph: bool) -> _Grads:
        outputs, seeds = self.seeds.chunk(row, row + 1)
        grads = torch.autograd.grad(
            outputs,
            self.inputs,
            [seed[0] for seed in seeds],
            retain_graph=retain_graph,
            allow_unused=True,
        )
        return list(grads)

    def rows(self, start: int, stop: int, free_at_end: bool, first: _Grads | None = None) -> None:
        """Compute the rows ``start:stop`` one by one, into one block (``first``: row ``start``,
        if already computed).
        """

        def row(index: int) -> _Grads:
            if index == start and first is not None:
                return first
            return self._row(index, retain_graph=not (free_at_end and index == stop - 1))

        if stop - start == 1:
            self._add_block(start, [None if g is None else g.unsqueeze(0) for g in row(start)])
            return
        buffers: _Grads = [None] * len(self.inputs)
        # The buffers are not zero-filled (a memset of the whole block, then overwritten): each
        # row is written, and the rows where an input got no gradient (it may depend on some
        # outputs only) are zeroed at the end.
        unwritten: list[list[int]] = [[] for _ in self.inputs]
        for index in range(start, stop):
            for i, grad in enumerate(row(index)):
                buffer = buffers[i]
                if grad is None:
                    unwritten[i].append(index - start)
                    continue
                if buffer is None:
                    buffer = grad.new_empty((stop - start, *grad.shape))
                    buffers[i] = buffer
                buffer[index - start].copy_(grad)
        for buffer, rows in zip(buffers, unwritten, strict=True):
            if buffer is not None:
                for position in rows:
                    buffer[position].zero_()
        self._add_block(start, buffers)

    def batched(self, start: int, stop: int) -> _Grads | None:
        """Compute the rows ``start:stop`` under vmap (the graph is retained).

        If vmap fails, return the row ``start`` computed without vmap instead (and warn).
        """
        outputs, seeds = self.seeds.chunk(start, stop)
        unused: list[int] = []

        def vjp(*grad_outputs: Tensor) -> tuple[Tensor, ...]:
            grads = torch.autograd.grad(
                outputs, self.inputs, grad_outputs, retain_graph=True, allow_unused=True
            )
            unused[:] = [i for i, grad in enumerate(grads) if grad is None]
            return tuple(grad for grad in grads if grad is not None)

        try:
            with vmap_fallback_allowed():
                results = iter(torch.vmap(vjp)(*seeds))
        except Exception as error:
            # Not necessarily vmap's fault: one plain row tells. If it fails too, its error is
            # the one to report; if it works, vmap was the problem.
            first = self._row(start, retain_graph=True)
            _warn_fallback(error)
            return first
        skipped = set(unused)
        self._add_block(
            start, [None if i in skipped else next(results) for i in range(len(self.inputs))]
        )
        return None


def _warn_fallback(error: Exception) -> None:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    warnings.warn(
        "The Jacobian could not be computed with torch.vmap "
        f"({type(error).__name__}: {reason}). Its rows are computed one by one instead, which "
        "is slower. Pass `parallel_chunk_size=1` to skip the attempt (and this warning).",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside ``torchjd``, for a warning issued by the
    function that calls this one.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame: FrameType | None = sys._getframe(2)  # the warning's stacklevel 2: its caller
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back
        level += 1
    return level
