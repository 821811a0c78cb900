"""The autogram engine: the Gramian of the Jacobian of a tensor, from one backward pass."""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from torchjd.linalg._matrix import add_gram_

from ._batching import AmbiguousBatchDimError, Batching
from ._call import Call
from ._gramian_shape import generalize, rows_to_output
from ._hooks import CURRENT_PASS, CallLog, ModuleHooks
from ._modules import (
    SAMPLE_MIXING_TYPES,
    collect_modules,
    needs_no_hooks,
    parametrization_modules,
)
from ._registry import rule_for


def _remove(handles: list[RemovableHandle]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()


class Engine:
    """Computes the Gramian of the Jacobian of a tensor with respect to the parameters of modules.

    The differentiated parameters are the trainable parameters (``requires_grad``) of the given
    modules and of all their submodules, each counted once (for ``model.modules()``, all the
    parameters of ``model``). ``compute_gramian(output)`` returns ``G = J Jᵀ``, where ``J`` is the
    Jacobian of ``output`` with respect to these parameters, without ever forming ``J``: forward
    hooks record each module call (its inputs and a handle on its outputs); one backward pass,
    from ``output`` to the recorded module outputs (no parameter gradient is computed), gives the
    output gradients; closed-form rules (``Linear``, ``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``,
    ``Embedding``, ``LayerNorm``, ``GroupNorm``, ``InstanceNorm*``, ``RMSNorm``,
    ``MultiheadAttention``, ``RNN``, ``LSTM``, ``GRU``) or, for any other module, a
    back-propagation
    through the call's own recorded graph, turn them into per-objective parameter gradients.
    Every use of a parameter counts (tied weights, a module called several times, one
    parameter shared by two modules, a child's parameter read by a parent that does not call
    the child): the contributions of all uses are summed before taking products. No forward
    pass is ever run again, so dropout and other randomness are fine.

    The typical use is Gramian-based Jacobian descent: compute the Gramian of the losses, turn
    it into weights with a weighting (``UPGradWeighting()``, say), and call
    ``losses.backward(weights)``. This is a step of Jacobian descent with the matching
    aggregator (``UPGrad()``), without ever forming the Jacobian.

    Args:
        modules: The modules whose parameters (and whose submodules' parameters) are
            differentiated: modules, or iterables of modules such as ``model.modules()``.
        batch_dim: The batch dimension of the differentiated tensor, if each element of the
            batch is processed independently (then every hooked module must receive and return
            tensors batched along a dimension of the same size, each sample processed
            independently); ``None`` otherwise. With a ``batch_dim``, one backward pass of the
            sum over the batch gives every per-sample gradient; without, every entry of the
            output is back-propagated (vectorised), which costs more but assumes nothing (models
            with ``BatchNorm`` need it). Modules that mix the samples of a batch
            (``BatchNorm*``, ``SyncBatchNorm``) are refused when ``batch_dim`` is set.

    The hooks stay on the modules until :meth:`close` is called, the engine is used as a context
    manager and exits, or the engine is garbage-collected. Records of a forward pass live as long
    as its autograd graph: a forward pass without ``compute_gramian`` leaves nothing behind once
    its outputs are dropped, and a record whose graph does not reach the differentiated tensor
    is ignored.

    With a ``batch_dim``, the batch dimension of the tensors of each hooked module is found by
    its size: a module's layout fixes it where it can (``batch_first`` of RNNs, attention and
    transformer layers; dimension 0 of convolutions and ``GroupNorm``); elsewhere it is the only
    dimension of the batch size. When several have that size, the ``batch_first`` attribute of
    the nearest enclosing module that has one decides for ``[sequence, batch, ...]`` tensors
    (so a model may declare ``self.batch_first``); otherwise one more backward pass, of the
    samples of even and of odd index apart, shows which dimension holds the samples. A
    ``ValueError`` is raised if that cannot be told, or if a tensor has no dimension of the
    batch size.
    Every part of the model between the hooked modules and ``output`` must keep the samples
    apart (no statistics over the batch): this cannot be checked and is the caller's promise.

    Costs: ``Linear`` and (transposed) convolutions use, per layer, the cheaper of the "ghost" form
    ``(A Aᵀ) ⊙ (Γ Γᵀ)`` and materialised per-sample gradients; ``Embedding`` joins samples on
    shared tokens; ``MultiheadAttention`` and the recurrent layers rebuild their (deterministic)
    attention or recurrence from the recorded inputs when no dropout is active and no mask is
    given (otherwise they use the generic rule). Modules without a closed-form rule (custom
    modules, free parameters, and layers whose weight is computed from other parameters, as by
    ``torch.nn.utils.parametrize`` or ``weight_norm``: the parametrization is differentiated with
    the layer) are back-propagated once per objective, which is exact but slower: wrapping a
    free parameter into a small module of its own keeps that work small.

    Mixed precision: under ``torch.autocast``, the Gramian has the dtype of ``output`` (float32
    for losses) and the closed-form rules multiply in that dtype, so that the Gramian of losses
    scaled by a ``GradScaler`` does not overflow float16 where autograd's does not; it matches
    autograd's to the precision of the half dtype. When it does overflow, a weighting refuses
    it: ``examples/mixed_precision.py`` shows how the step is then skipped.

    Limitations: a use of a differentiated parameter is seen only inside the forward pass of a
    given module; a parameter used outside of every given module's forward (in the loss, say),
    or read directly by a parent module that also calls the child that owns it, is missed. So
    is a dependence between samples outside the given modules. To turn these into errors, the
    first Gramian is checked against one ordinary backward pass (``vᵀ G v = ‖∇(v · output)‖²``
    for a random ``v``): a ``ValueError`` names the likely causes.

    For a linear model ``o_i = w · x_i``, the gradient of ``o_i`` is ``x_i``, so ``G = X Xᵀ``:

    >>> import torch
    >>> from torch.nn import Linear
    >>> model = Linear(2, 1, bias=False)
    >>> engine = Engine(model, batch_dim=0)
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> engine.compute_gramian(model(x).squeeze(dim=1))
    tensor([[ 5., 11.],
            [11., 25.]])
    """

    def __init__(self, *modules: nn.Module | Iterable[nn.Module], batch_dim: int | None) -> None:
        if batch_dim is not None and (
            isinstance(batch_dim, bool) or not isinstance(batch_dim, int)
        ):
            raise TypeError(
                f"Parameter `batch_dim` should be an int or None. Found type "
                f"{type(batch_dim).__name__}."
            )
        all_modules = collect_modules(modules)
        if batch_dim is not None:
            for module in all_modules:
                if isinstance(module, SAMPLE_MIXING_TYPES):
                    raise ValueError(
                        f"Parameter `batch_dim` is {batch_dim}, but the modules include a "
                        f"{type(module).__name__}: batch normalization mixes the samples of a "
                        "batch (batch statistics), so the gradient of one sample's loss depends "
                        "on the other samples and the per-sample Gramian would be wrong. Replace "
                        "it by GroupNorm, LayerNorm or InstanceNorm, or use `batch_dim=None`."
                    )
        self._batch_dim = batch_dim
        self._validated = False
        self._log = CallLog()
        self._params = {id(p): p for m in all_modules for p in m.parameters()}
        self._handles: list[RemovableHandle] = []
        computing_parametrizations = parametrization_modules(all_modules)
        for module in all_modules:
            if (
                next(module.parameters(), None) is None
                or id(module) in computing_parametrizations
                or needs_no_hooks(module)
            ):
                continue
            hooks = ModuleHooks(self._log, module, rule_for(module))
            self._handles.append(module.register_forward_pre_hook(hooks.pre, with_kwargs=True))
            self._handles.append(
                module.register_forward_hook(hooks.post, with_kwargs=True, always_call=True)
            )
        self._finalizer = weakref.finalize(self, _remove, self._handles)

    def close(self) -> None:
        """Remove the hooks from the modules. The engine can no longer compute Gramians."""
        self._finalizer()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def compute_gramian(self, output: Tensor) -> Tensor:
        """Compute the (generalized) Gramian of the Jacobian of ``output``.

        For an ``output`` of shape ``[m1, ..., mk]``, the Jacobian ``J`` with respect to the
        ``n`` differentiated parameters has shape ``[m1, ..., mk, n]`` and the returned
        generalized Gramian has shape ``[m1, ..., mk, mk, ..., m1]``: its entry
        ``[i1, ..., ik, jk, ..., j1]`` is the inner product of the gradients of
        ``output[i1, ..., ik]`` and ``output[j1, ..., jk]``. A scalar gives a scalar (the
        squared norm of its gradient), a vector ``[m]`` the usual ``[m, m]`` Gramian, a matrix
        ``[B, T]`` (one loss per sample and task) a ``[B, T, T, B]`` Gramian; use
        ``Flattening(weighting)`` for the weights of such outputs. No ``.grad`` is filled and
        the graph of ``output`` is kept, for the ``backward`` that follows.

        Args:
            output: The tensor to differentiate, computed (after the engine was created) by the
                hooked modules. With a ``batch_dim``, it must have that dimension.
        """
        if not isinstance(output, Tensor):
            raise TypeError(
                f"Parameter `output` should be a torch.Tensor. Found type {type(output).__name__}."
            )
        if not self._finalizer.alive:
            raise RuntimeError("This Engine was closed: its hooks were removed. Create a new one.")
        shape = tuple(output.shape)
        batching, grad_outputs, n_rows = self._plan(output)
        gramian = output.new_zeros(n_rows, n_rows)
        if output.requires_grad and output.numel() > 0:
            # The rules read recorded tensors that require grad: the Gramian itself is a
            # constant (no graph of its own, like the weights computed from it).
            with torch.no_grad():
                n_reached, coarsest_eps = self._accumulate(
                    gramian, output, grad_outputs, self._log.live_calls(), batching
                )
            if n_reached == 0:
                self._check_independent(output)
            elif not self._validated:
                self._validate(output, gramian, coarsest_eps)
        return generalize(gramian, shape, self._batch_dim)

    def _validate(self, output: Tensor, gramian: Tensor, coarsest_eps: float) -> None:
        """Check, on the first Gramian, that ``vᵀ G v = ‖∇ (v · output)‖²`` for a random ``v``.

        Both are ``‖Σ_i v_i J_i‖²``. A use of a parameter that the hooks did not see, or samples
        that are not independent although ``batch_dim`` says so, break the equality: one
        ordinary backward pass, on the first call only, turns these silent errors into a
        ``ValueError`` (the structure of a model rarely changes from one step to the next).
        ``coarsest_eps`` is the machine epsilon of the least precise dtype that the backward
        pass went through (bfloat16 under autocast, say).
        """
        generator = torch.Generator().manual_seed(0)
        v = torch.randn(gramian.shape[0], generator=generator, dtype=torch.float64)
        v = v.to(device=output.device)
        weights = rows_to_output(v, tuple(output.shape), self._batch_dim)
        params = [p for p in self._params.values() if p.requires_grad]
        directional = (output * weights.to(output.dtype)).sum()
        grads = torch.autograd.grad(directional, params, retain_graph=True, allow_unused=True)
        expected = sum(
            (g.double().square().sum() for g in grads if g is not None),
            start=torch.zeros((), dtype=torch.float64, device=output.device),
        )
        g64 = gramian.double()
        actual = v @ g64 @ v
        scale = (v.abs() * g64.diagonal().clamp(min=0.0).sqrt()).sum().square()
        # Two backward passes through an ill-conditioned part (a LayerNorm of nearly constant
        # features, say) round differently: in float64, by 3e-13 of the scale in a fuzzed model
        # whose Gramian matched autograd's to 1e-16. A missed use of a parameter shows at the
        # order of its contribution, far above √eps.
        eps = torch.finfo(gramian.dtype).eps
        # In half precision (a model in bfloat16, or autocast), the two passes round apart by
        # a fraction of eps of that dtype (measured over the test zoo under autocast, 5 seeds:
        # at most 0.36 eps of the scale): 20 eps leaves a wide margin, and a missed use of a
        # parameter larger than that still shows.
        tolerance = max(1e3 * eps, eps**0.5, 20 * coarsest_eps) * scale
        if bool((actual - expected).abs() > tolerance + torch.finfo(torch.float64).tiny):
            raise ValueError(
                "The Gramian does not match the gradients of the output (for a random "
                f"combination v of its entries, vᵀGv = {actual.item():.6g} but the squared norm "
                f"of the gradient of v·output is {expected.item():.6g}): a differentiated "
                "parameter is used outside the forward pass of the given modules (in the loss, "
                "say, or read by a parent module that also calls its owner), or, with "
                "`batch_dim`, the samples are not independent (e.g. a BatchNorm outside the "
                "given modules, or statistics over the batch in the loss). Use "
                "`batch_dim=None` in the latter case."
            )
        self._validated = True

    def _check_independent(self, output: Tensor) -> None:
        """Raise if ``output`` depends on the parameters though no hooked call was recorded.

        This happens when the forward pass ran before the engine was created (or with the hooks
        removed): a zero Gramian would then be silently wrong. One ordinary backward pass, only
        in this unusual case, tells the two apart.
        """
        params = [p for p in self._params.values() if p.requires_grad]
        if not params:
            return
        grads = torch.autograd.grad(output.sum(), params, retain_graph=True, allow_unused=True)
        if any(g is not None for g in grads):
            raise ValueError(
                "Parameter `output` depends on the parameters of the engine's modules, but none "
                "of their calls was recorded: the forward pass ran before the Engine was created "
                "(or after it was closed). Create the Engine before the forward pass."
            )

    def _plan(self, output: Tensor) -> tuple[Batching, Tensor, int]:
        """The sample structure and the objective rows to back-propagate: ``[rows, *shape]``."""
        shape = tuple(output.shape)
        if self._batch_dim is None:
            size = output.numel()
            rows = torch.eye(size, dtype=output.dtype, device=output.device)
            return Batching(None, 0), rows.reshape(size, *shape), size
        dim = self._batch_dim
        if not -len(shape) <= dim < len(shape):
            raise ValueError(
                f"Parameter `batch_dim` is {dim}, but `output` has shape {list(shape)}, which "
                f"has no dimension {dim}. Use the index of the batch dimension of `output`, or "
                "`batch_dim=None`."
            )
        dim %= len(shape)
        rest = shape[:dim] + shape[dim + 1 :]
        n_rest = math.prod(rest)
        eye = torch.eye(n_rest, dtype=output.dtype, device=output.device).reshape(n_rest, *rest)
        rows = eye.unsqueeze(dim + 1).expand(n_rest, *shape)
        return Batching(shape[dim], dim), rows, n_rest * shape[dim]

    def _accumulate(
        self,
        gramian: Tensor,
        output: Tensor,
        grad_outputs: Tensor,
        calls: list[Call],
        batching: Batching,
    ) -> tuple[int, float]:
        """Add the Gramian of ``output`` to ``gramian``; return the number of calls reached and
        the machine epsilon of the least precise dtype of their output gradients.
        """
        if not calls:
            return 0, 0.0
        edges = [edge for call in calls for edge in call.output_edges]
        single_row = grad_outputs.shape[0] == 1
        token = object()
        CURRENT_PASS[0] = token
        try:
            grads = torch.autograd.grad(
                output,
                edges,
                grad_outputs=grad_outputs[0] if single_row else grad_outputs,
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=not single_row,
            )
        finally:
            CURRENT_PASS[0] = None
        # Gradients with respect to gradient edges can be zeros instead of None for outputs that
        # the output does not depend on: the anchors' backward tells which were reached.
        reached: list[tuple[Call, list[Tensor | None]]] = []
        coarsest_eps = 0.0
        start = 0
        for call in calls:
            stop = start + len(call.output_edges)
            if call.reached_by is token:
                call_grads: list[Tensor | None] = []
                for g, hit in zip(grads[start:stop], call.reached_outputs, strict=True):
                    if g is None or not hit:
                        call_grads.append(None)
                        continue
                    coarsest_eps = max(coarsest_eps, torch.finfo(g.dtype).eps)
                    # The rules compute in the dtype of the output gradients. Under autocast,
                    # those are float16 or bfloat16 while the Gramian (in the output's dtype,
                    # float32 for a loss) is finer: promoting them keeps the rules' products
                    # (xᵀ g, per-sample sums of squares) from overflowing float16, as they
                    # would with losses scaled by a GradScaler.
                    g = g.to(torch.promote_types(g.dtype, gramian.dtype))
                    call_grads.append(g.unsqueeze(0) if single_row else g)
                if any(g is not None for g in call_grads):
                    reached.append((call, call_grads))
            start = stop
        if batching.size is not None and batching.size > 1:
            batching = replace(batching, resolver=_Prober(output, calls, batching).resolve)
        uses = Counter(id(p) for call, _ in reached for p in call.params)
        shared: dict[int, Tensor] = {}
        n_rows = gramian.shape[0]
        for call, call_grads in reached:
            call.check_inputs_unchanged()
            try:
                if all(uses[id(p)] == 1 for p in call.params):
                    contribution = call.rule.gramian(call, call_grads, batching)
                    if contribution is not None:
                        gramian += contribution
                        continue
                jacobians = call.rule.jacobians(call, call_grads, batching)
            except AmbiguousBatchDimError:
                # Gradients that are zero at every sample (behind a dead ReLU, say) tell the
                # probes nothing, but then the call contributes nothing either.
                if any(g is not None and bool(g.any()) for g in call_grads):
                    raise
                continue
            for param, jacobian in jacobians:
                flat = jacobian.reshape(n_rows, -1).to(gramian.dtype)
                if uses[id(param)] == 1:
                    add_gram_(gramian, flat)
                else:
                    previous = shared.get(id(param))
                    shared[id(param)] = flat if previous is None else previous + flat
        for flat in shared.values():
            gramian.addmm_(flat, flat.T)
        return len(reached), coarsest_eps


class _Prober:
    """Tells which of several dimensions of the batch size holds the samples, from the graph.

    It back-propagates the samples of even index and those of odd index of the output, apart
    (once, when first needed): under the per-sample assumption, the gradient of each probe at a
    call's output then vanishes at the indices of the other parity along the true batch
    dimension. A candidate dimension is kept if both probes vanish there (and one of them does
    not vanish at its own indices); the answer is accepted only if exactly one candidate is
    kept. (With all the samples in the two probes, a sample whose gradient is zero, such as a
    padding example, takes no information away from the others.)
    """

    def __init__(self, output: Tensor, calls: list[Call], batching: Batching) -> None:
        self._output = output
        self._calls = calls
        self._dim = batching.preferred_dim
        self._size = batching.n_slots
        self._grads: dict[tuple[int, int], Tensor | None] | None = None

    def _probe(self) -> dict[tuple[int, int], Tensor | None]:
        edges = [edge for call in self._calls for edge in call.output_edges]
        rows = torch.zeros(
            2, *self._output.shape, dtype=self._output.dtype, device=self._output.device
        )
        rows[0].index_fill_(self._dim, _parity(0, self._size, self._output.device), 1.0)
        rows[1].index_fill_(self._dim, _parity(1, self._size, self._output.device), 1.0)
        grads = torch.autograd.grad(
            self._output,
            edges,
            grad_outputs=rows,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
        keys = [(id(call), i) for call in self._calls for i in range(len(call.output_edges))]
        return dict(zip(keys, grads, strict=True))

    def resolve(self, call: object, output_index: int, candidates: list[int]) -> int | None:
        if self._grads is None:
            self._grads = self._probe()
        grad = self._grads.get((id(call), output_index))
        if grad is None:
            return None
        kept = []
        for dim in candidates:
            front = grad.movedim(dim + 1, 1)  # [2, B, ...]
            even, odd = front[0], front[1]
            outside = bool(even[1::2].any()) or bool(odd[0::2].any())
            inside = bool(even[0::2].any()) or bool(odd[1::2].any())
            if inside and not outside:
                kept.append(dim)
        return kept[0] if len(kept) == 1 else None


def _parity(parity: int, size: int, device: torch.device) -> Tensor:
    """The indices ``parity, parity + 2, ...`` below ``size``."""
    return torch.arange(parity, size, 2, device=device)
