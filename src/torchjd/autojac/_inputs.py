"""Normalisation and validation of the arguments of the autojac functions.

Every message names the parameter, says what was expected and shows what was found, following
the template of ``torchjd.aggregation``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import Tensor

from torchjd.aggregation import Aggregator

from ._graph import graph_leaves
from ._jacobian import Seeds


def as_tensor_list(value: object, name: str) -> list[Tensor]:
    """Return ``value`` (a tensor, or a sequence of tensors) as a list, or raise a ``TypeError``."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"Parameter `{name}` should be a Tensor or a sequence of Tensors. "
            f"Found type {type(value).__name__}."
        )
    return _only_tensors(list(value), name, lambda i: f"`{name}[{i}]`")


def iterable_to_list(value: object, name: str) -> list[Tensor]:
    """Materialise an iterable of tensors (possibly a generator, or a single tensor)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"Parameter `{name}` should be an iterable of Tensors (for example "
            f"`model.parameters()`). Found type {type(value).__name__}."
        )
    return _only_tensors(list(value), name, lambda i: f"item {i}")


def _only_tensors(items: list[object], name: str, where: Callable[[int], str]) -> list[Tensor]:
    """Return ``items``, or raise a ``TypeError`` naming (with ``where``) the first non-tensor."""
    tensors: list[Tensor] = []
    for i, item in enumerate(items):
        if not isinstance(item, Tensor):
            raise TypeError(
                f"Parameter `{name}` should only contain Tensors. "
                f"Found {where(i)} of type {type(item).__name__}."
            )
        tensors.append(item)
    return tensors


def requested_inputs(inputs: object, outputs: list[Tensor], outputs_name: str) -> list[Tensor]:
    """The ``inputs`` given (checked to require grad, repeats kept), or by default the leaves of
    the graph of ``outputs`` that require grad.
    """
    if inputs is None:
        check_have_grad_fn(outputs, outputs_name, "inputs")
        return graph_leaves(outputs)
    requested = iterable_to_list(inputs, "inputs")
    check_require_grad(requested, "inputs")
    return requested


def unique(tensors: Iterable[Tensor]) -> list[Tensor]:
    """Drop repeated tensors (by identity), keeping the first occurrence of each."""
    return list({id(t): t for t in tensors}.values())


def check_unique(tensors: Sequence[Tensor], name: str) -> None:
    """Raise a ``ValueError`` if a tensor appears twice in ``tensors``."""
    first: dict[int, int] = {}
    for i, t in enumerate(tensors):
        j = first.setdefault(id(t), i)
        if j != i:
            raise ValueError(
                f"Parameter `{name}` should contain unique tensors. "
                f"Found `{name}[{i}]` is `{name}[{j}]`."
            )


def check_not_empty(tensors: Sequence[Tensor], name: str) -> None:
    """Raise a ``ValueError`` if ``tensors`` is empty."""
    if len(tensors) == 0:
        raise ValueError(f"Parameter `{name}` should not be empty. Found an empty sequence.")


def check_require_grad(tensors: Sequence[Tensor], name: str) -> None:
    """Raise a ``ValueError`` unless every tensor requires grad (it can be differentiated)."""
    for i, t in enumerate(tensors):
        if not t.requires_grad:
            raise ValueError(
                f"Parameter `{name}` should only contain tensors that require grad. "
                f"Found `{name}[{i}]` with requires_grad=False."
            )


def check_have_grad_fn(tensors: Sequence[Tensor], name: str, inputs_name: str) -> None:
    """Without explicit inputs, every tensor must have a graph whose leaves can be found."""
    for i, t in enumerate(tensors):
        if t.grad_fn is None:
            raise ValueError(
                f"Parameter `{name}` should only contain tensors with a `grad_fn` when "
                f"`{inputs_name}` is None (the inputs are then the leaves of their graph). "
                f"Found `{name}[{i}]` without `grad_fn`: pass `{inputs_name}` explicitly."
            )


def check_can_store(tensors: Sequence[Tensor], name: str, field: str) -> None:
    """Check that a ``.grad`` or ``.jac`` can be stored on each tensor, as autograd requires."""
    for i, t in enumerate(tensors):
        if not (t.requires_grad and (t.is_leaf or t.retains_grad)):
            raise ValueError(
                f"Parameter `{name}` should only contain tensors whose `.{field}` can be "
                "populated, i.e. satisfying `tensor.requires_grad and (tensor.is_leaf or "
                f"tensor.retains_grad)`. Found `{name}[{i}]` with "
                f"requires_grad={t.requires_grad}, is_leaf={t.is_leaf}, "
                f"retains_grad={t.retains_grad}."
            )


def check_chunk_size(value: object) -> int | None:
    """Return ``parallel_chunk_size`` if it is ``None`` or a positive integer, else raise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            "Parameter `parallel_chunk_size` should be None or a positive integer. "
            f"Found parallel_chunk_size={value!r} of type {type(value).__name__}."
        )
    if value <= 0:
        raise ValueError(
            "Parameter `parallel_chunk_size` should be None or a positive integer. "
            f"Found parallel_chunk_size={value!r}."
        )
    return value


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a bool, else raise a ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(
            f"Parameter `{name}` should be a bool. Found {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    return value


def resolve_aggregator(A: object, aggregator: object, inputs_hint: str) -> Aggregator | None:
    """Merge the two spellings of the aggregator (``A``, positional, and ``aggregator=``).

    ``inputs_hint`` completes the message when something else was passed positionally in the
    place of ``A`` (as the 0.9+ signatures, which have no aggregator, would suggest).
    """
    if A is not None and aggregator is not None:
        raise TypeError(
            "Parameters `A` and `aggregator` are two names of the same parameter: pass only one. "
            f"Found A={A!r} and aggregator={aggregator!r}."
        )
    value, name = (A, "A") if A is not None else (aggregator, "aggregator")
    if value is not None and not isinstance(value, Aggregator):
        raise TypeError(
            f"Parameter `{name}` should be an Aggregator (from `torchjd.aggregation`) or None. "
            f"Found type {type(value).__name__}. {inputs_hint}"
        )
    return value


def check_jacobian_seeds(
    seeds: object, outputs: Sequence[Tensor], name: str, outputs_name: str
) -> list[Tensor]:
    """Validate the initial Jacobians (``jac_tensors``/``jac_outputs``) ``[k, *output.shape]``."""
    items = as_tensor_list(seeds, name)
    if len(items) != len(outputs):
        raise ValueError(
            f"Parameter `{name}` should have the same length as `{outputs_name}`. "
            f"Found lengths {len(items)} and {len(outputs)}."
        )
    for i, (seed, output) in enumerate(zip(items, outputs, strict=True)):
        if seed.ndim == 0 or seed.shape[1:] != output.shape:
            raise ValueError(
                f"Parameter `{name}` should contain one Jacobian of shape [k, *{outputs_name}[i]"
                f".shape] per tensor. Found `{name}[{i}]` of shape {tuple(seed.shape)} but "
                f"`{outputs_name}[{i}]` of shape {tuple(output.shape)}."
            )
    rows = {seed.shape[0] for seed in items}
    if len(rows) > 1:
        raise ValueError(
            f"Parameter `{name}` should contain Jacobians with the same number of rows. "
            f"Found numbers of rows {[seed.shape[0] for seed in items]}."
        )
    return items


def checked_seeds(
    outputs: object, jacobians: object, name: str, jacobians_name: str
) -> tuple[list[Tensor], Seeds]:
    """Validate the tensors to differentiate (``name``) and their optional initial Jacobians
    (``jacobians_name``); return the tensors as a list and the seeds of their Jacobian.
    """
    output_list = as_tensor_list(outputs, name)
    check_not_empty(output_list, name)
    check_unique(output_list, name)
    check_require_grad(output_list, name)
    seeds = None
    if jacobians is not None:
        seeds = check_jacobian_seeds(jacobians, output_list, jacobians_name, name)
    return output_list, Seeds(output_list, seeds)
