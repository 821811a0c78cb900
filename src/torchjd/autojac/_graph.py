"""Discovery of the leaves of an autograd graph, the default inputs of the autojac functions."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from torch import Tensor
from torch.autograd.graph import Node


def graph_leaves(
    roots: Iterable[Tensor],
    stop_at: Iterable[Tensor] = (),
    excluded: Iterable[Tensor] = (),
) -> list[Tensor]:
    """Return the leaf tensors that require grad in the graph of ``roots``.

    The graph is walked breadth-first from the ``grad_fn`` of each root, in the order of the
    roots, visiting each node once; a leaf is listed when its ``AccumulateGrad`` node is first
    reached. This fixes a deterministic order (that of PyTorch's own traversal of the graph).

    Args:
        roots: The tensors whose graph is walked.
        stop_at: Tensors whose ``grad_fn`` is not walked through (nor are they listed).
        excluded: Leaves not to list.
    """
    # The node objects themselves are kept (not their ids): a wrapper of a C++ node that is freed
    # could see its id reused by another one during the walk.
    stop_nodes = {t.grad_fn for t in stop_at if t.grad_fn is not None}
    skip = {id(t) for t in stop_at} | {id(t) for t in excluded}
    queue: deque[Node] = deque(t.grad_fn for t in roots if t.grad_fn is not None)
    visited: set[Node] = set()
    leaves: list[Tensor] = []
    while queue:
        node = queue.popleft()
        if node in visited or node in stop_nodes:
            continue
        visited.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            if id(variable) not in skip:
                leaves.append(variable)
            continue
        for next_node, _ in node.next_functions:
            if next_node is not None:
                queue.append(next_node)
    return leaves
