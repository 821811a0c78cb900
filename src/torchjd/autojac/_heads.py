"""The task-specific part of a multi-task graph (the heads, above the features), and the
gradients of every task with respect to its parameters and to the features in one engine call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import Node


@dataclass
class Heads:
    """The graph of each loss down to the features.

    ``leaves[i]``: the leaves requiring grad of task ``i`` (breadth-first order), not reached
    through the features. ``consumers[i]``: the edges ``(node, edge_index, feature_index)`` by
    which task ``i`` takes each feature. ``disjoint``: no node is in the graph of two tasks, so
    that the gradient reaching a feature through a consumer belongs to one task.
    """

    leaves: list[list[Tensor]]
    consumers: list[list[tuple[Node, int, int]]]
    disjoint: bool = True

    def owns(self, task: int, params: Sequence[Tensor]) -> bool:
        """Whether each of ``params`` is a leaf of task ``task`` only."""
        mine = {id(t) for t in self.leaves[task]}
        return all(id(p) in mine for p in params)


def walk_heads(losses: Sequence[Tensor], features: Sequence[Tensor]) -> Heads:
    """Walk the graph of each loss breadth-first, stopping at the features."""
    feature_edges = {
        (f.grad_fn, f.output_nr): j for j, f in enumerate(features) if f.grad_fn is not None
    }
    feature_leaves = {id(f): j for j, f in enumerate(features) if f.grad_fn is None}
    feature_nodes = {f.grad_fn for f in features if f.grad_fn is not None}
    heads = Heads([], [])
    owner: dict[Node, int] = {}
    for i, loss in enumerate(losses):
        leaves: list[Tensor] = []
        consumers: list[tuple[Node, int, int]] = []
        visited: set[Node] = set()
        root = loss.grad_fn
        if root is None or root in feature_nodes:
            heads.disjoint = False  # the loss is (an output of the node of) a feature
        queue: deque[Node] = deque([] if root is None or root in feature_nodes else [root])
        while queue:
            node = queue.popleft()
            if node in visited:
                continue
            visited.add(node)
            if owner.setdefault(node, i) != i:
                heads.disjoint = False
            variable = getattr(node, "variable", None)
            if isinstance(variable, Tensor):
                if id(variable) not in feature_leaves:
                    leaves.append(variable)
                continue
            for index, (next_node, output_nr) in enumerate(node.next_functions):
                if next_node is None:
                    continue
                j = feature_edges.get((next_node, output_nr))
                if j is None and feature_leaves:
                    j = feature_leaves.get(id(getattr(next_node, "variable", None)))
                if j is not None:
                    consumers.append((node, index, j))
                elif next_node not in feature_nodes:
                    queue.append(next_node)
        heads.leaves.append(leaves)
        heads.consumers.append(consumers)
    return heads


def grads_in_one_pass(
    heads: Heads,
    losses: Sequence[Tensor],
    seeds: Sequence[Tensor | None],
    tasks: Sequence[list[Tensor]],
    features: Sequence[Tensor],
) -> tuple[list[Tensor | None], list[list[Tensor | None]]]:
    """The gradients of all tasks with respect to their parameters (summed, each parameter being
    in one task's graph) and, separately, to each feature, in one call of the autograd engine.

    Hooks on the nodes that take the features catch what each one sends to a feature: as the
    heads are disjoint, that is the gradient of one task.
    """
    n = len(features)
    caught: list[list[Tensor | None]] = [[None] * n for _ in losses]
    by_node: dict[Node, list[tuple[int, int, int]]] = {}
    for i, consumers in enumerate(heads.consumers):
        for node, index, j in consumers:
            by_node.setdefault(node, []).append((i, index, j))

    def make_hook(edges: list[tuple[int, int, int]]) -> Callable[..., None]:
        def hook(grad_inputs: tuple[Tensor | None, ...], _outputs: object) -> None:
            for i, index, j in edges:
                grad = grad_inputs[index]
                if grad is None:
                    continue
                # A copy: the engine may add other contributions in place into this buffer.
                previous = caught[i][j]
                caught[i][j] = grad.clone() if previous is None else previous + grad

        return hook

    handles = [node.register_hook(make_hook(edges)) for node, edges in by_node.items()]
    params = [p for task in tasks for p in task]
    try:
        grads = torch.autograd.grad(
            list(losses),
            [*params, *features],
            [
                torch.ones_like(loss) if seed is None else seed
                for loss, seed in zip(losses, seeds, strict=True)
            ],
            retain_graph=True,
            allow_unused=True,
        )
    finally:
        for handle in handles:
            handle.remove()
    return list(grads[: len(params)]), caught
