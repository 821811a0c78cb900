"""Walks of an autograd graph: its leaves (the default inputs of the autojac functions) and any
other look at its nodes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from torch import Tensor
from torch.autograd.graph import Node


def walk(roots: Iterable[Tensor], stop_at: Iterable[Node] = ()) -> Iterator[Node]:
    """Yield each node of the graph of ``roots`` once, breadth-first from the ``grad_fn`` of
    each root, in the order of the roots (that of PyTorch's own traversal of the graph). The
    nodes of ``stop_at`` are neither yielded nor walked through.
    """
    # The node objects themselves are kept (not their ids): a wrapper of a C++ node that is freed
    # could see its id reused by another one during the walk.
    stop_nodes = set(stop_at)
    queue: deque[Node] = deque(t.grad_fn for t in roots if t.grad_fn is not None)
    visited: set[Node] = set()
    while queue:
        node = queue.popleft()
        if node in visited or node in stop_nodes:
            continue
        visited.add(node)
        yield node
        for next_node, _ in node.next_functions:
            if next_node is not None:
                queue.append(next_node)


def graph_leaves(
    roots: Iterable[Tensor],
    stop_at: Iterable[Tensor] = (),
    excluded: Iterable[Tensor] = (),
) -> list[Tensor]:
    """Return the leaf tensors that require grad in the graph of ``roots``, each listed when its
    ``AccumulateGrad`` node is first reached by :func:`walk` (a deterministic order).

    Args:
        roots: The tensors whose graph is walked.
        stop_at: Tensors whose ``grad_fn`` is not walked through (nor are they listed).
        excluded: Leaves not to list.
    """
    stop_nodes = [t.grad_fn for t in stop_at if t.grad_fn is not None]
    skip = {id(t) for t in stop_at} | {id(t) for t in excluded}
    leaves: list[Tensor] = []
    for node in walk(roots, stop_nodes):
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor) and id(variable) not in skip:
            leaves.append(variable)
    return leaves
