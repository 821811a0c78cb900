from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from torchjd.aggregation import Aggregator

from ._accumulation import accumulate_grad, store_jacobians
from ._backward import aggregate, check_aggregable
from ._graph import graph_leaves
from ._inputs import (
    as_tensor_list,
    check_bool,
    check_can_store,
    check_chunk_size,
    check_not_empty,
    check_require_grad,
    check_unique,
    iterable_to_list,
    resolve_aggregator,
    unique,
)
from ._jacobian import Jacobian, Seeds, compute_jacobian, user_stacklevel


def mtl_backward(
    losses: Sequence[Tensor],
    features: Sequence[Tensor] | Tensor,
    A: Aggregator | None = None,
    tasks_params: Sequence[Iterable[Tensor]] | None = None,
    shared_params: Iterable[Tensor] | None = None,
    retain_graph: bool = False,
    parallel_chunk_size: int | None = None,
    *,
    aggregator: Aggregator | None = None,
    grad_tensors: Sequence[Tensor] | None = None,
) -> None:
    r"""Backward pass of multi-task learning: the task-specific parameters get the gradient of
    their task's loss, the shared parameters the aggregated Jacobian of all the losses.

    The model is a shared part computing ``features``, followed by one head per task computing
    its loss. For each task ``i``, the gradient of ``losses[i]`` with respect to
    ``tasks_params[i]`` is accumulated into their ``.grad`` (a parameter of several tasks gets
    the sum), and its gradient with respect to the features is kept. These ``n_tasks`` feature
    gradients, stacked, are pulled back through the shared part to the Jacobian ``[n_tasks,
    n_shared]`` of the losses with respect to ``shared_params``, which is then:

    - with an aggregator ``A`` (the form of TorchJD 0.8): aggregated and **accumulated** into the
      ``.grad`` of ``shared_params``;
    - without (the form of TorchJD 0.9+): accumulated into their ``.jac`` field, for
      :func:`jac_to_grad`.

    A Jacobian with a NaN or infinite entry gives NaN in every entry of the shared parameters'
    update, as in :func:`backward` (what ``torch.amp.GradScaler`` needs to skip the step).

    Args:
        losses: The loss of each task; scalars unless ``grad_tensors`` is given.
        features: The last shared representation(s), from which every head computes its loss.
        A: The aggregator. ``None`` to store the Jacobians in ``.jac`` instead.
        tasks_params: The parameters of each task (one iterable per loss). Defaults, for each
            task, to the leaves of the graph of its loss that require grad, not reached through
            ``features`` and not in ``shared_params``.
        shared_params: The parameters of the shared part. Defaults to the leaves of the graph
            of ``features`` that require grad (in the breadth-first order of :func:`backward`).
        retain_graph: Keep the graph of the shared part after the call, so that it can be
            differentiated again. (The heads' part, differentiated before it, is kept in any case
            and freed with the losses.)
        parallel_chunk_size: The number of rows (tasks) pulled back through the shared part in
            one batched (``torch.vmap``) call; see :func:`backward`.
        aggregator: Another name for ``A``.
        grad_tensors: The gradient to pull back from each loss (same shape as the loss), as in
            ``torch.autograd.backward``; required for non-scalar losses.

    Example:
        >>> import torch
        >>> from torch.nn import Linear
        >>> from torchjd import mtl_backward
        >>> from torchjd.aggregation import UPGrad
        >>>
        >>> _ = torch.manual_seed(0)
        >>> shared, head1, head2 = Linear(3, 2), Linear(2, 1), Linear(2, 1)
        >>> features = shared(torch.randn(4, 3))
        >>> loss1 = head1(features).square().mean()
        >>> loss2 = head2(features).abs().mean()
        >>> mtl_backward(losses=[loss1, loss2], features=features, A=UPGrad())
        >>> shared.weight.grad.shape, head1.weight.grad.shape
        (torch.Size([2, 3]), torch.Size([1, 2]))
    """
    resolved = resolve_aggregator(
        A,
        aggregator,
        "To pass `tasks_params`, use the keyword: `mtl_backward(losses, features, "
        "tasks_params=...)`.",
    )
    chunk_size = check_chunk_size(parallel_chunk_size)
    retain = check_bool(retain_graph, "retain_graph")
    loss_list = as_tensor_list(losses, "losses")
    check_not_empty(loss_list, "losses")
    check_unique(loss_list, "losses")
    check_require_grad(loss_list, "losses")
    feature_list = as_tensor_list(features, "features")
    check_not_empty(feature_list, "features")
    check_unique(feature_list, "features")
    check_require_grad(feature_list, "features")
    loss_seeds = _loss_seeds(loss_list, grad_tensors)

    if shared_params is None:
        shared = graph_leaves(feature_list)
    else:
        shared = unique(iterable_to_list(shared_params, "shared_params"))
    tasks = _tasks_params(tasks_params, loss_list, feature_list, shared)
    check_require_grad(shared, "shared_params")
    check_can_store(shared, "shared_params", "grad" if resolved is not None else "jac")
    for i, task in enumerate(tasks):
        check_require_grad(task, f"tasks_params[{i}]")
        check_can_store(task, f"tasks_params[{i}]", "grad")
    if resolved is not None:
        check_aggregable(len(loss_list), shared, "losses", "shared_params")

    # The gradient of each loss with respect to its task's parameters and to the features. The
    # graph is kept: the shared part is differentiated afterwards.
    feature_grads: list[list[Tensor | None]] = []
    for loss, seed, task in zip(loss_list, loss_seeds, tasks, strict=True):
        grads = torch.autograd.grad(
            loss, [*task, *feature_list], seed, retain_graph=True, allow_unused=True
        )
        for param, grad in zip(task, grads, strict=False):
            if grad is not None:
                accumulate_grad(param, grad)
        feature_grads.append(list(grads[len(task) :]))

    # Stacked, the feature gradients are the initial Jacobian, one row per task, to pull back
    # through the shared part. Features that no loss depends on have a zero Jacobian: skipped.
    outputs: list[Tensor] = []
    jacobians: list[Tensor] = []
    for j, feature in enumerate(feature_list):
        rows = [grads[j] for grads in feature_grads]
        if all(row is None for row in rows):
            continue
        outputs.append(feature)
        jacobians.append(
            torch.stack([torch.zeros_like(feature) if row is None else row for row in rows])
        )
    if not outputs:  # no loss depends on the features: the Jacobian is zero
        warnings.warn(
            "None of the losses depends on `features`, so their Jacobian with respect to the "
            "shared parameters is zero (with an aggregator, the `.grad` of the shared parameters "
            "is left as it was). If the losses depend on the shared parameters through other "
            "tensors (a slice or a copy of the features, say), pass those tensors as `features`.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        if resolved is None:
            zero = Jacobian(shared, len(loss_list), [0], [[None] for _ in shared])
            store_jacobians(zero, "shared_params")
        return
    seeds = Seeds(outputs, jacobians)
    if resolved is None:
        store_jacobians(compute_jacobian(seeds, shared, retain, chunk_size), "shared_params")
    else:
        aggregate(seeds, shared, resolved, retain, chunk_size)


def _loss_seeds(losses: list[Tensor], grad_tensors: object) -> list[Tensor | None]:
    if grad_tensors is None:
        for i, loss in enumerate(losses):
            if loss.numel() != 1:
                raise ValueError(
                    "Parameter `losses` should only contain scalars when `grad_tensors` is None. "
                    f"Found `losses[{i}]` of shape {tuple(loss.shape)}: pass `grad_tensors`, one "
                    "gradient per loss, with its shape."
                )
        return [None] * len(losses)
    seeds = as_tensor_list(grad_tensors, "grad_tensors")
    if len(seeds) != len(losses):
        raise ValueError(
            "Parameter `grad_tensors` should have the same length as `losses`. "
            f"Found lengths {len(seeds)} and {len(losses)}."
        )
    for i, (seed, loss) in enumerate(zip(seeds, losses, strict=True)):
        if seed.shape != loss.shape:
            raise ValueError(
                "Parameter `grad_tensors` should contain one gradient per loss, of the same "
                f"shape. Found `grad_tensors[{i}]` of shape {tuple(seed.shape)} but "
                f"`losses[{i}]` of shape {tuple(loss.shape)}."
            )
    return list(seeds)


def _tasks_params(
    tasks_params: object, losses: list[Tensor], features: list[Tensor], shared: list[Tensor]
) -> list[list[Tensor]]:
    if tasks_params is None:
        return [graph_leaves([loss], stop_at=features, excluded=shared) for loss in losses]
    if isinstance(tasks_params, (str, bytes, Tensor)) or not isinstance(tasks_params, Sequence):
        raise TypeError(
            "Parameter `tasks_params` should be a sequence with one iterable of tensors per "
            f"task. Found type {type(tasks_params).__name__}."
        )
    if len(tasks_params) != len(losses):
        raise ValueError(
            "Parameter `tasks_params` should have one item per loss. "
            f"Found {len(tasks_params)} items and {len(losses)} losses."
        )
    tasks = [
        unique(iterable_to_list(params, f"tasks_params[{i}]"))
        for i, params in enumerate(tasks_params)
    ]
    shared_ids = {id(t) for t in shared}
    for i, task in enumerate(tasks):
        for param in task:
            if id(param) in shared_ids:
                raise ValueError(
                    "Parameter `tasks_params` should share no tensor with `shared_params`. "
                    f"Found a tensor of shape {tuple(param.shape)} in both `tasks_params[{i}]` "
                    "and `shared_params`."
                )
    return tasks
