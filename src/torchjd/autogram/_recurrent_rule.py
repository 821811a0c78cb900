"""Closed-form rule of ``RNN``, ``LSTM`` and ``GRU``: their weights are Linear maps over time.

At each step, ``W_ih`` maps the input and ``W_hh`` the previous hidden state to the gates' pre-
activations. The rule rebuilds the recurrence from the recorded inputs (detached from
everything else), back-propagates the module's output gradients through it to those pre-
activations, and applies the Linear formulas with time as the position axis. Rebuilding is
exact only when the module is deterministic: calls with dropout between layers in training
mode, packed sequences or projections (``proj_size``) go to the generic rule instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._batching import Batching
from ._call import Call, Rule
from ._generic_rule import GenericRule
from ._gram import linear_gramian, linear_jacobian, sum_gramian
from ._linear_rules import selected

_GENERIC = GenericRule()


def _cell(
    module: nn.RNNBase, gates_x: Tensor, gates_h: Tensor, state: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """One step of the cell, from the two pre-activations; returns the new state."""
    if isinstance(module, nn.LSTM):
        i, f, g, o = (gates_x + gates_h).chunk(4, dim=-1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if isinstance(module, nn.GRU):
        x_r, x_z, x_n = gates_x.chunk(3, dim=-1)
        h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return ((1 - z) * n + z * state[0],)
    activation = torch.tanh if module.nonlinearity == "tanh" else torch.relu
    return (activation(gates_x + gates_h),)


class _Trace:
    """The factors of one layer and direction: inputs, previous states and their gradients."""

    def __init__(self, suffix: str, inputs: Tensor, gates_x: Tensor) -> None:
        self.suffix = suffix
        self.inputs = inputs  # [B, T, in]
        self.gates_x = gates_x  # [B, T, G·H]
        self.previous: list[Tensor] = []  # T × [B, H]
        self.gates_h: list[Tensor] = []  # T × [B, G·H]


class RecurrentRule(Rule):
    """Gramian of ``weight_ih``, ``weight_hh`` and biases of every layer and direction."""

    needs_input_cut = True  # For the calls handed to the generic rule.

    def accepts(self, module: nn.Module) -> bool:
        # Exact types only: a subclass may change the recurrence.
        return type(module) in (nn.RNN, nn.LSTM, nn.GRU) and getattr(module, "proj_size", 0) == 0

    def param_names(self, module: nn.Module) -> tuple[str, ...]:
        names: list[str] = getattr(module, "_flat_weights_names", [])
        return tuple(names)

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        first = args[0] if args else kwargs.get("input")
        if not isinstance(first, Tensor):  # A PackedSequence: the generic rule handles it.
            return ()
        state = args[1] if len(args) > 1 else kwargs.get("hx")
        states = state if isinstance(state, tuple) else (state,)
        return (first, *(t for t in states if isinstance(t, Tensor)))

    def options(
        self, module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> dict[str, object]:
        first = args[0] if args else kwargs.get("input")
        random = module.training and float(getattr(module, "dropout", 0.0)) > 0.0
        return {"rebuild": isinstance(first, Tensor) and not random}

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        traces = self._traces(call, grads, batching)
        if traces is None:
            return _GENERIC.jacobians(call, grads, batching)
        module = call.module
        pairs: list[tuple[Tensor | None, Tensor]] = []
        for suffix, x, gx, h, gh in traces:
            pairs.append((getattr(module, "weight_ih" + suffix), linear_jacobian(x, gx)))
            pairs.append((getattr(module, "weight_hh" + suffix), linear_jacobian(h, gh)))
            if module.bias:
                pairs.append((getattr(module, "bias_ih" + suffix), gx.sum(dim=2)))
                pairs.append((getattr(module, "bias_hh" + suffix), gh.sum(dim=2)))
        return selected(call, *pairs)

    def gramian(self, call: Call, grads: list[Tensor | None], batching: Batching) -> Tensor | None:
        traces = self._traces(call, grads, batching)
        if traces is None:
            return None
        module = call.module
        ids = {id(p) for p in call.params}
        rows, slots = traces[0][2].shape[:2]
        gramian = traces[0][2].new_zeros(rows * slots, rows * slots)
        for suffix, x, gx, h, gh in traces:
            if id(getattr(module, "weight_ih" + suffix)) in ids:
                gramian += linear_gramian(x, gx)
            if id(getattr(module, "weight_hh" + suffix)) in ids:
                gramian += linear_gramian(h, gh)
            if module.bias and id(getattr(module, "bias_ih" + suffix)) in ids:
                gramian += sum_gramian(gx)
            if module.bias and id(getattr(module, "bias_hh" + suffix)) in ids:
                gramian += sum_gramian(gh)
        return gramian

    @staticmethod
    def _traces(
        call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[str, Tensor, Tensor, Tensor, Tensor]] | None:
        """Per layer and direction: ``x [S, T, in]``, ``Γx [R, S, T, G·H]``, ``h [S, T, H]``,
        ``Γh [R, S, T, G·H]``; ``None`` if the call cannot be rebuilt.
        """
        module = call.module
        if not isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)) or not call.options.get("rebuild"):
            return None
        if len(grads) != (3 if isinstance(module, nn.LSTM) else 2):
            return None
        if not call.inputs:
            return None
        grad = next(g for g in grads if g is not None)
        dtype = grad.dtype
        x = call.inputs[0].detach().to(dtype)
        batched = x.ndim == 3
        if not batched:
            x = x.unsqueeze(1)  # [T, 1, in]
        elif module.batch_first:
            x = x.transpose(0, 1)
        x = x.transpose(0, 1)  # [B, T, in]
        batch, steps = x.shape[:2]
        n_dirs = 2 if module.bidirectional else 1
        hidden = module.hidden_size
        n_states = 2 if isinstance(module, nn.LSTM) else 1
        given = [t.detach().to(dtype) for t in call.inputs[1:]]
        if given and not batched:
            given = [t.unsqueeze(1) for t in given]
        if given and len(given) != n_states:
            return None
        initial = given or [x.new_zeros(module.num_layers * n_dirs, batch, hidden)] * n_states
        traces: list[_Trace] = []
        with torch.enable_grad():
            layer_input = x
            finals: list[list[Tensor]] = [[] for _ in range(n_states)]
            for layer in range(module.num_layers):
                outputs = []
                for direction in range(n_dirs):
                    suffix = f"_l{layer}" + ("_reverse" if direction else "")
                    # Local copies that require grad, so that the rebuilt graph exists; only the
                    # pre-activations are differentiated.
                    w_ih, w_hh, b_ih, b_hh = (
                        None
                        if (p := getattr(module, name + suffix, None)) is None
                        else p.detach().to(dtype).requires_grad_()
                        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                    )
                    if w_ih is None or w_hh is None:
                        return None
                    inputs = layer_input.detach()
                    gates_x = F.linear(layer_input, w_ih, b_ih)
                    trace = _Trace(suffix, inputs, gates_x)
                    index = layer * n_dirs + direction
                    state = tuple(s[index] for s in initial)
                    order = range(steps - 1, -1, -1) if direction else range(steps)
                    step_outputs: list[Tensor] = [x.new_empty(0)] * steps
                    for t in order:
                        trace.previous.append(state[0].detach())
                        gates_h = F.linear(state[0], w_hh, b_hh)
                        trace.gates_h.append(gates_h)
                        state = _cell(module, gates_x[:, t], gates_h, state)
                        step_outputs[t] = state[0]
                    if direction:  # Store the reverse direction's factors in time order.
                        trace.previous.reverse()
                        trace.gates_h.reverse()
                    outputs.append(torch.stack(step_outputs, dim=1))
                    for k in range(n_states):
                        finals[k].append(state[k])
                    traces.append(trace)
                layer_input = torch.cat(outputs, dim=2)
            out = layer_input  # [B, T, D·H]
            rebuilt = [out, *[torch.stack(f) for f in finals]]
            targets: list[Tensor] = []
            grad_outputs: list[Tensor] = []
            rows = grad.shape[0]
            for tensor, g in zip(rebuilt, grads, strict=False):
                if g is None:
                    continue
                g = g if batched else g.unsqueeze(2)
                if tensor is out and not (batched and module.batch_first):
                    g = g.transpose(1, 2)  # [R, T, B, D·H] -> [R, B, T, D·H]
                targets.append(tensor)
                grad_outputs.append(g)
            leaves = [t.gates_x for t in traces] + [g for t in traces for g in t.gates_h]
            single = rows == 1
            local = torch.autograd.grad(
                targets,
                leaves,
                grad_outputs=[g[0] for g in grad_outputs] if single else grad_outputs,
                is_grads_batched=not single,
                allow_unused=True,
            )
        local = tuple(
            torch.zeros_like(leaf).unsqueeze(0).expand(rows, *leaf.shape)
            if g is None
            else g.unsqueeze(0)
            if single
            else g
            for g, leaf in zip(local, leaves, strict=True)
        )
        dim = batching.sample_dim(x.shape, module, known=0)
        slots = batching.n_slots

        def front(t: Tensor) -> Tensor:
            return batching.front(t, dim).reshape(slots, -1, t.shape[-1])

        def front_grad(g: Tensor) -> Tensor:
            return batching.front_grad(g, dim).reshape(rows, slots, -1, g.shape[-1])

        result = []
        n = len(traces)
        for i, trace in enumerate(traces):
            g_x = local[i]
            g_h = torch.stack(list(local[n + i * steps : n + (i + 1) * steps]), dim=2)
            previous = torch.stack(trace.previous, dim=1)
            result.append(
                (
                    trace.suffix,
                    front(trace.inputs),
                    front_grad(g_x),
                    front(previous),
                    front_grad(g_h),
                )
            )
        return result
