"""The record that a forward hook leaves for one call of a hooked module."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge

from ._batching import Batching


class Frame:
    """One call of a hooked module in progress, from its pre-hook to its forward hook.

    ``covered`` collects the ids of the parameters whose uses inside this call are already
    accounted for by nested hooked calls. ``cut`` is set while a rule differentiates the call's
    own graph: the cut nodes at the call's inputs then stop the gradients, so that uses of the
    parameters before the call (accounted for by other calls) are not counted twice.
    ``parent`` is the frame of the hooked call that encloses this one, if any.
    """

    __slots__ = ("covered", "cut", "module", "parent")

    def __init__(self, module: nn.Module, parent: Frame | None = None) -> None:
        self.module = module
        self.parent = parent
        self.covered: set[int] = set()
        self.cut = False

    def enclosing_batch_first(self) -> bool | None:
        """The ``batch_first`` attribute of the nearest enclosing module that has one, if any."""
        frame = self.parent
        while frame is not None:
            layout = getattr(frame.module, "batch_first", None)
            if isinstance(layout, bool):
                return layout
            frame = frame.parent
        return None


@dataclass(eq=False)
class Call:
    """What a rule needs, after the forward pass, to differentiate one call of a module.

    Attributes:
        module: The module that was called.
        rule: The rule that computes the per-objective gradients of ``params``.
        params: The trainable parameters whose uses in this call this record accounts for.
        frame: The frame of the call (identifies the cut nodes at its inputs).
        inputs: The tensors the rule reads (for closed-form rules, the module's input).
        output_edges: The gradient edges of the module's outputs that require grad, taken
            before any later in-place operation.
        outputs_shapes: The shapes of those outputs.
        options: What else the rule noted about the call (see :meth:`Rule.options`).
    """

    module: nn.Module
    rule: Rule
    params: tuple[nn.Parameter, ...]
    frame: Frame
    inputs: tuple[Tensor, ...]
    output_edges: tuple[GradientEdge, ...]
    output_shapes: tuple[torch.Size, ...]
    options: dict[str, object] = field(default_factory=dict)
    input_versions: tuple[int, ...] = field(init=False)
    #: The Gramian pass that last back-propagated through the call's outputs, and which
    #: outputs received a gradient in it (set by the anchor node's backward).
    reached_by: object = None
    reached_outputs: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        self.input_versions = tuple(t._version for t in self.inputs)

    @property
    def enclosing_batch_first(self) -> bool | None:
        """The ``batch_first`` attribute of the nearest enclosing call's module that has one
        (e.g. the transformer layer around a Linear), if any.

        Read when a rule needs it rather than at every forward pass: looking an attribute up on a
        module that lacks it raises (and catches) an ``AttributeError``.
        """
        return self.frame.enclosing_batch_first()

    def check_inputs_unchanged(self) -> None:
        """Raise if an input that the rule reads was modified in place after the call."""
        for tensor, version in zip(self.inputs, self.input_versions, strict=True):
            if tensor._version != version:
                raise RuntimeError(
                    f"An input of a {type(self.module).__name__} module was modified in place "
                    "after the module's forward pass, so the Gramian cannot be computed from it. "
                    "Avoid in-place operations on the inputs of hooked modules (e.g. use "
                    "`ReLU(inplace=False)`)."
                )


class Rule(ABC):
    """Computes, from a recorded call and its output gradients, per-objective parameter gradients.

    A rule is given, for each output of the call, the gradient of every objective row with
    respect to that output (shape ``[rows, *output.shape]``; ``None`` if the output does not
    reach the differentiated tensor). With a ``batch_dim``, each row is the gradient of the sum
    over the batch of one row of objectives; samples are told apart along the batch dimension
    of the call's tensors, which every rule places on a *sample axis*.
    """

    #: Whether the call's inputs must be wrapped in cut nodes (rules that differentiate the
    #: module's own graph need them, closed-form rules do not).
    needs_input_cut: bool = False

    def accepts(self, module: nn.Module) -> bool:
        """Whether this rule can handle every call of ``module`` (options, overridden forward)."""
        return True

    def param_names(self, module: nn.Module) -> tuple[str, ...]:
        """The attributes of ``module`` that the rule's formula reads as its parameters."""
        return ("weight", "bias")

    def handled_params(self, module: nn.Module) -> tuple[nn.Parameter, ...]:
        """The parameters whose uses inside a call of ``module`` the rule accounts for.

        For a closed-form rule, the attributes of :meth:`param_names` that are parameters
        registered on the module itself. An attribute computed from other parameters (by
        ``torch.nn.utils.parametrize``, or by the forward pre-hook of the older
        ``torch.nn.utils.weight_norm``) is not one: those parameters are then left unhandled,
        which hands the module to the generic rule (see ``rule_for``).
        """
        registered = module._parameters
        return tuple(
            p for name in self.param_names(module) if (p := registered.get(name)) is not None
        )

    def inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
        """The tensors of the call that the rule will read (kept until the Gramian is computed)."""
        return ()

    def options(
        self, module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> dict[str, object]:
        """Facts about the call, taken at forward time, that the rule needs later."""
        return {}

    def gramian(self, call: Call, grads: list[Tensor | None], batching: Batching) -> Tensor | None:
        """The ``[rows·slots, rows·slots]`` Gramian of all of ``call.params`` together, or None.

        Called instead of :meth:`jacobians` when no parameter of the call is used elsewhere, so
        that a rule can use a form that never builds the gradients; ``None`` means "use
        :meth:`jacobians`".
        """
        return None

    @abstractmethod
    def jacobians(
        self, call: Call, grads: list[Tensor | None], batching: Batching
    ) -> list[tuple[nn.Parameter, Tensor]]:
        """Return, for each parameter of ``call.params``, its per-objective gradients.

        Each tensor has shape ``[rows, batching.n_slots, *param.shape]``: the gradient, for each
        objective row and each sample, of the objective of that sample.
        """
