"""The rule of every other module: differentiate the call's own part of the autograd graph."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge

from torchjd._vmap import vmap_fallback_allowed

from ._batching import Batching
from ._call import Call, Rule


def known_output_batch_dims(module: nn.Module, shapes: Sequence[torch.Size]) -> list[int | None]:
    """The batch dimension of each output of ``module`` where its layout fixes it.

    ``None`` means "infer it from the sizes". RNNs return their hidden states batched along
    dimension 1, whatever ``batch_first`` says; MultiheadAttention returns its attention weights
    batch first.
    """
    batch_first = bool(getattr(module, "batch_first", False))
    sequence_dim = 0 if batch_first else 1
    if isinstance(module, nn.RNNBase):
        return [
            (sequence_dim if i == 0 else 1) if len(shape) == 3 else None
            for i, shape in enumerate(shapes)
        ]
    if isinstance(module, nn.MultiheadAttention):
        return [
            (sequence_dim if i == 0 else 0) if len(shape) >= 3 else None
            for i, shape in enumerate(shapes)
        ]
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return [sequence_dim if len(shape) == 3 else None for shape in shapes]
    return [None for _ in shapes]


def per_sample(grad: Tensor, dim: int | None, batching: Batching) -> Tensor:
    """Split ``grad`` (``[rows, *shape]``) into one gradient per sample: ``[rows·slots, *shape]``.

    Row ``(r, i)`` keeps the entries of sample ``i`` along ``dim`` and zeros elsewhere: under
    the per-sample assumption, this is the gradient of the objective ``(r, i)`` alone.
    """
    if dim is None:
        return grad
    size = batching.n_slots
    front = grad.movedim(dim + 1, 1)  # [rows, B, *rest]
    eye = torch.eye(size, dtype=grad.dtype, device=grad.device)
    mask = eye.reshape(1, size, size, *([1] * (front.ndim - 2)))
    split = (front.unsqueeze(1) * mask).movedim(2, dim + 2)  # [rows, B (objective), *shape]
    return split.reshape(-1, *grad.shape[1:])


class GenericRule(Rule):
    """Exact for any module: gradients of the call's outputs with respect to its parameters.

    The output gradients of each objective (separated per sample when there is a batch
    dimension) are back-propagated through the part of the autograd graph recorded during the
    call: the cut nodes at the call's inputs stop them there, so that earlier uses of the same
    parameters (accounted for by their own calls) are not counted twice. Nothing is run again:
    dropout masks and other random or stateful computations are those of the forward pass.
    The cost is one back-propagation through the module per objective (vectorised), so modules
    with closed-form rules are preferred when they exist.
    """

    needs_input_cut = True

    def handled_params(self, module: nn.Module) -> tuple[nn.Parameter, ...]:
        return tuple(module.parameters())

    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        known = known_output_batch_dims(call.module, call.output_shapes)
        outputs = []
        grad_outputs = []
        rows = 0
        for index, (edge, shape, dim, grad) in enumerate(
            zip(call.output_edges, call.output_shapes, known, grads, strict=True)
        ):
            if grad is None:
                continue
            layout = call.enclosing_batch_first
            sample_dim = batching.sample_dim(
                shape,
                call.module,
                known=dim,
                # In a [sequence, batch, feature] layout, the last dimension is never the batch.
                n_feature_dims=1 if layout is not None and len(shape) == 3 else 0,
                enclosing_batch_first=layout,
                call=call,
                output_index=index,
            )
            outputs.append(edge)
            grad_outputs.append(per_sample(grad, sample_dim, batching))
            rows = grad.shape[0]
        slots = batching.n_slots
        call.frame.cut = True
        try:
            jacobians = _batched_grads(outputs, list(call.params), grad_outputs, call.module)
        finally:
            call.frame.cut = False
        return [
            (param, jac.reshape(rows, slots, *param.shape))
            for param, jac in zip(call.params, jacobians, strict=True)
            if jac is not None  # A parameter unused in this call contributes nothing.
        ]


def _batched_grads(
    outputs: list[GradientEdge],
    params: list[nn.Parameter],
    grad_outputs: list[Tensor],
    module: nn.Module,
) -> Sequence[Tensor | None]:
    """The vector-Jacobian products of ``outputs`` with each row of ``grad_outputs``, stacked.

    Under ``torch.vmap`` if it can; otherwise (a backward formula without batching rule and no
    fallback, such as cuDNN's RNN backward) row by row, with a warning.
    """
    try:
        with vmap_fallback_allowed():
            return torch.autograd.grad(
                outputs,
                inputs=params,
                grad_outputs=grad_outputs,
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=True,
            )
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        warnings.warn(
            f"The Gramian of a {type(module).__name__} could not be computed with torch.vmap "
            f"({reason}). Its rows are back-propagated one by one instead, which is slower.",
            UserWarning,
            stacklevel=2,
        )
    rows = [
        torch.autograd.grad(
            outputs,
            inputs=params,
            grad_outputs=[grad[row] for grad in grad_outputs],
            retain_graph=True,
            allow_unused=True,
        )
        for row in range(grad_outputs[0].shape[0])
    ]
    return [
        None if row_grads[0] is None else torch.stack(list(row_grads))
        for row_grads in zip(*rows, strict=True)
    ]
