"""Where the samples of a batch lie in the tensors that a hooked module receives and returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

#: Given a call, the index of one of its outputs and the candidate batch dimensions of that
#: output, returns the one that holds the samples, or ``None`` if that cannot be told.
Resolver = Callable[[object, int, list[int]], "int | None"]


class AmbiguousBatchDimError(ValueError):
    """Several dimensions of a tensor have the batch size, and which one holds the samples could
    not be told.
    """


@dataclass(frozen=True)
class Batching:
    """The per-sample structure declared by ``batch_dim`` for one call of ``compute_gramian``.

    Rules express per-sample quantities with a *sample axis* in front: of size ``size`` when the
    engine has a ``batch_dim``, of size 1 when it has none (the whole tensor is then one
    "sample", and the rows of the output gradients already separate every objective).

    Attributes:
        size: The batch size ``B`` (the size of the output's ``batch_dim``), or ``None`` when the
            engine was built with ``batch_dim=None``.
        preferred_dim: The engine's ``batch_dim`` (normalised), taken when a tensor has several
            dimensions of size ``B`` and no ``resolver`` is given.
        resolver: Tells, by probing the graph, which of several dimensions of size ``B`` of a
            call's output holds the samples.
    """

    size: int | None
    preferred_dim: int
    resolver: Resolver | None = None

    @property
    def n_slots(self) -> int:
        """The size of the sample axis: ``B``, or 1 without per-sample structure."""
        return 1 if self.size is None else self.size

    def sample_dim(
        self,
        shape: Sequence[int],
        module: nn.Module,
        *,
        known: int | None = None,
        n_feature_dims: int = 0,
        enclosing_batch_first: bool | None = None,
        call: object = None,
        output_index: int = 0,
    ) -> int | None:
        """Return the batch dimension of a tensor, or ``None`` if the tensor is one sample.

        Args:
            shape: The shape of a tensor received or returned by ``module``.
            module: The module, named in error messages.
            known: The batch dimension imposed by the module's layout (``batch_first`` and the
                like), if any.
            n_feature_dims: The number of trailing dimensions that are features, never batch.
            enclosing_batch_first: The ``batch_first`` of the nearest enclosing module that has
                one (a transformer layer, say), if any: for tensors of one sequence dimension,
                it decides between dimensions 0 and 1 when both have the batch size.
            call: The call whose output ``output_index`` has the same leading dimensions as the
                tensor: with a ``resolver``, it settles the remaining ambiguities.
            output_index: See ``call``.
        """
        if self.size is None or self.size == 1:
            # Without per-sample structure, or with a single sample, the whole tensor belongs to
            # the one sample slot.
            return None
        size = self.size
        shape = tuple(shape)
        where = f"{type(module).__name__} module"
        if known is not None:
            if known < len(shape) and shape[known] == size:
                return known
            raise self._not_batched(shape, where, f" along dimension {known}")
        candidates = [d for d in range(len(shape) - n_feature_dims) if shape[d] == size]
        if not candidates:
            raise self._not_batched(shape, where, "")
        if len(candidates) == 1:
            return candidates[0]
        if enclosing_batch_first is not None and len(shape) - n_feature_dims == 2:
            hinted = 0 if enclosing_batch_first else 1
            if hinted in candidates:
                return hinted
        if self.resolver is not None and call is not None:
            resolved = self.resolver(call, output_index, candidates)
            if resolved is not None:
                return resolved
        elif self.preferred_dim in candidates:
            return self.preferred_dim
        raise AmbiguousBatchDimError(
            f"A tensor of shape {list(shape)} of a {where} has several dimensions of size {size} "
            "(the size of the output's batch dimension), and which of them holds the samples "
            "could not be determined. Give the enclosing module a `batch_first` attribute, use a "
            "batch size that differs from the other dimensions, or use `batch_dim=None`."
        )

    def _not_batched(self, shape: tuple[int, ...], where: str, expected: str) -> ValueError:
        return ValueError(
            f"A tensor of shape {list(shape)} of a {where} is not batched{expected}: with "
            f"`batch_dim` set, every tensor that a hooked module receives or returns must hold "
            f"the {self.size} samples of the output's batch dimension along one of its "
            "dimensions, each sample processed independently. Use `batch_dim=None` for other "
            "models."
        )

    def front(self, tensor: Tensor, dim: int | None) -> Tensor:
        """Move the batch dimension ``dim`` of ``tensor`` to the front (add it if ``None``)."""
        return tensor.unsqueeze(0) if dim is None else tensor.movedim(dim, 0)

    def front_grad(self, grad: Tensor, dim: int | None) -> Tensor:
        """Same as :meth:`front` for a gradient with a leading dimension of objective rows."""
        return grad.unsqueeze(1) if dim is None else grad.movedim(dim + 1, 1)
