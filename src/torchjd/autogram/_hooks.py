"""Forward hooks that record each call of a hooked module, tied to the lifetime of its graph."""

from __future__ import annotations

import weakref
from typing import Protocol, cast

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx
from torch.autograd.graph import get_gradient_edge
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from ._call import Call, Frame, Rule

#: The token of the Gramian pass in progress, if any (a list: shared with autograd's threads).
CURRENT_PASS: list[object | None] = [None]


class _AnchorCtx(Protocol):
    call: Call


class _CutCtx(Protocol):
    frame: Frame


class _OutputAnchor(torch.autograd.Function):
    """Identity on a call's outputs whose graph node owns the call's record.

    The record lives exactly as long as the autograd graph of the call: once the graph is
    freed, the engine's weak reference to the record dies with it, so no state accumulates.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, call: Call, *outputs: Tensor) -> tuple[Tensor, ...]:
        cast(_AnchorCtx, ctx).call = call
        # Outputs that receive no gradient get None (not zeros): it tells which are reached.
        ctx.set_materialize_grads(False)
        return tuple(output.detach() for output in outputs)

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        current = CURRENT_PASS[0]
        if current is not None:
            call = cast(_AnchorCtx, ctx).call
            call.reached_by = current
            call.reached_outputs = tuple(g is not None for g in grads)
        return (None, *grads)


class _InputCut(torch.autograd.Function):
    """Identity on a call's inputs that stops gradients while the call itself is differentiated."""

    @staticmethod
    def forward(ctx: FunctionCtx, frame: Frame, *inputs: Tensor) -> tuple[Tensor, ...]:
        cast(_CutCtx, ctx).frame = frame
        return tuple(tensor.detach() for tensor in inputs)

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        if cast(_CutCtx, ctx).frame.cut:
            return (None,) * (len(grads) + 1)
        return (None, *grads)


def _split(tree: object) -> tuple[list[object], TreeSpec | None, list[int]]:
    """The leaves of a pytree, its spec (``None`` for a lone tensor) and the grad leaves."""
    if isinstance(tree, Tensor):  # The common case, without the cost of a pytree.
        return [tree], None, [0] if tree.requires_grad else []
    leaves, spec = tree_flatten(tree)
    indices = [i for i, x in enumerate(leaves) if isinstance(x, Tensor) and x.requires_grad]
    return leaves, spec, indices


def _join(leaves: list[object], spec: TreeSpec | None) -> object:
    return leaves[0] if spec is None else tree_unflatten(leaves, spec)


class CallLog:
    """The state shared by the hooks of one engine: frames in progress and live call records.

    It holds no reference to the engine, so that the engine can be garbage-collected (which
    removes the hooks).
    """

    def __init__(self) -> None:
        self.stack: list[Frame] = []
        self._calls: list[weakref.ReferenceType[Call]] = []
        self._prune_at = 64

    def add(self, call: Call) -> None:
        self._calls.append(weakref.ref(call))
        if len(self._calls) >= self._prune_at:
            self.live_calls()
            self._prune_at = max(64, 2 * len(self._calls))

    def live_calls(self) -> list[Call]:
        """The records whose graph is still alive (and forget the others), in call order."""
        calls = [call for ref in self._calls if (call := ref()) is not None]
        self._calls = [weakref.ref(call) for call in calls]
        return calls

    def n_records(self) -> int:
        """The number of (live or dead) references held, for tests of bounded state."""
        return len(self._calls)


class ModuleHooks:
    """The pre-hook and forward hook of one module."""

    def __init__(self, log: CallLog, module: nn.Module, rule: Rule) -> None:
        self.log = log
        self.rule = rule
        self.params = tuple(module.parameters())
        self.param_ids = frozenset(id(p) for p in self.params)

    def pre(
        self, module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> tuple[tuple[object, ...], dict[str, object]] | None:
        stack = self.log.stack
        frame = Frame(module, stack[-1] if stack else None)
        stack.append(frame)
        if not (self.rule.needs_input_cut and torch.is_grad_enabled()):
            return None
        if not kwargs and all(isinstance(a, Tensor) for a in args):
            leaves: list[object] = list(args)
            spec = None
            indices = [i for i, a in enumerate(args) if cast(Tensor, a).requires_grad]
        else:
            leaves, spec, indices = _split((args, kwargs))
        if not indices:
            return None
        cut: tuple[Tensor, ...] = _InputCut.apply(  # type: ignore[no-untyped-call]
            frame, *[leaves[i] for i in indices]
        )
        for i, tensor in zip(indices, cut, strict=True):
            leaves[i] = tensor
        if spec is None:
            return tuple(leaves), kwargs
        new_args, new_kwargs = tree_unflatten(leaves, spec)
        return tuple(new_args), dict(new_kwargs)

    def post(
        self,
        module: nn.Module,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        output: object,
    ) -> object:
        stack = self.log.stack
        if stack and stack[-1].module is module:  # the usual case: calls are well nested
            frame = stack.pop()
        else:
            position = next(
                (i for i in range(len(stack) - 1, -1, -1) if stack[i].module is module), None
            )
            if position is None:  # Our pre-hook did not run (another pre-hook raised).
                return None
            frame = stack[position]
            del stack[position:]
        if stack:
            stack[-1].covered.update(self.param_ids)
        if not torch.is_grad_enabled():
            return None
        covered = frame.covered
        params = tuple(p for p in self.params if p.requires_grad and id(p) not in covered)
        if not params:
            return None
        leaves, spec, indices = _split(output)
        if not indices:
            return None
        outputs = [cast(Tensor, leaves[i]) for i in indices]
        call = Call(
            module=module,
            rule=self.rule,
            params=params,
            frame=frame,
            inputs=self.rule.inputs(args, kwargs),
            output_edges=tuple(get_gradient_edge(t) for t in outputs),
            output_shapes=tuple(t.shape for t in outputs),
            options=self.rule.options(module, args, kwargs),
        )
        anchored: tuple[Tensor, ...] = _OutputAnchor.apply(call, *outputs)  # type: ignore[no-untyped-call]
        for i, tensor in zip(indices, anchored, strict=True):
            leaves[i] = tensor
        self.log.add(call)
        return _join(leaves, spec)
