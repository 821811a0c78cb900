"""How the rows of a Jacobian are grouped into backward calls.

A chunk of several rows is one backward call under ``torch.vmap``, which makes each operation of
the backward pass as many times larger. On accelerators that is what keeps them busy: every row
goes in one call. On the CPU it pays only while a row's operations are small, so that their fixed
cost dominates; once a row's tensors are large, the batched ones no longer fit in cache and some
batching rules copy or loop (convolutions, group norm, max pooling, attention), and rows one by
one are faster. Measured on 2 cores, IWRM steps with UPGrad, one row at a time against chunks of
16 rows:

- a 10-32-32-1 MLP, 256 rows (largest tensor 8,192 entries): 28 ms against 16 ms;
- a CNN on 8×8 images, 32 and 64 rows (18,432 and 73,728): 17 / 12 ms and 64 / 53 ms;
- the benchmark's MLP, 16 to 128 rows (65,536): within 7% either way;
- the benchmark's transformer, 16 rows (131,072): 57 / 72 ms; 128 rows: 2.3 / 7.0 s;
- the benchmark's CNN with group norms on 28×28 images, 16 rows (200,704): 22 / 40 ms;
  128 rows: 0.71 / 3.6 s.

Hence the default on the CPU: chunks of 16 rows while no tensor of the graph has more than
``MAX_BATCHED_NUMEL`` entries, else one row at a time (which also holds the least memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._graph import walk

# Rows per batched call on the CPU when the tensors are small: more rows gain little there and
# hold more memory (all 128 rows of the benchmark's MLP at once: 73 ms, by 16: 67 ms).
CPU_CHUNK_SIZE = 16
MAX_BATCHED_NUMEL = 100_000


def default_chunk_size(outputs: Sequence[Tensor], rows: int, device: torch.device) -> int:
    """The number of rows per backward call when ``parallel_chunk_size`` is ``None``."""
    if device.type != "cpu":
        return max(rows, 1)
    largest = largest_numel(outputs, MAX_BATCHED_NUMEL)
    if largest is not None and largest > MAX_BATCHED_NUMEL:
        return 1
    return CPU_CHUNK_SIZE


def largest_numel(outputs: Sequence[Tensor], limit: int) -> int | None:
    """The number of entries of the largest gradient that flows into a node of the graph of
    ``outputs`` (the walk stops at the first one above ``limit``), or ``None`` if the graph does
    not tell (a version of torch without ``Node._input_metadata``, or a nested tensor).
    """
    largest = 0
    try:
        for node in walk(outputs):
            for metadata in node._input_metadata:  # one per output of the forward operation
                largest = max(largest, int(math.prod(metadata.shape)))
                if largest > limit:
                    return largest
    except (AttributeError, RuntimeError, TypeError):
        return None
    return largest


def plan(m: int, chunk_size: int, retain_graph: bool) -> list[tuple[str, int, int]]:
    """Split the rows into ``("vmap", start, stop)`` and ``("rows", start, stop)`` segments.

    The very last row is computed alone, without vmap, when the graph must be freed (see
    ``compute_jacobian``).
    """
    segments: list[tuple[str, int, int]] = []

    def add(kind: str, start: int, stop: int) -> None:
        if kind == "rows" and segments and segments[-1][0] == "rows":
            segments[-1] = ("rows", segments[-1][1], stop)  # one buffer for consecutive rows
        else:
            segments.append((kind, start, stop))

    for start in range(0, m, chunk_size):
        stop = min(start + chunk_size, m)
        batched_stop = stop - 1 if stop == m and not retain_graph else stop
        if batched_stop - start >= 2:
            add("vmap", start, batched_stop)
            if batched_stop < stop:
                add("rows", batched_stop, stop)
        else:
            add("rows", start, stop)
    return segments
