from __future__ import annotations

import re
from typing import cast

import pytest
import torch
from torch import Tensor, nn

from torchjd.aggregation import (
    Flattening,
    GeneralizedWeighting,
    MeanWeighting,
    MGDAWeighting,
    PCGradWeighting,
    SumWeighting,
    Weighting,
)
from torchjd.linalg import PSDMatrix
from utils.tensors import ones_, randn_, tensor_


class _DiagonalWeighting(Weighting[PSDMatrix]):
    """Returns the diagonal of its input (the squared norms): it pins the order of the weights."""

    def forward(self, stat: PSDMatrix, /) -> Tensor:
        return stat.diagonal()


class _RecordingWeighting(Weighting[PSDMatrix]):
    """Records its input and returns ``1/M``."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[Tensor] = []

    def forward(self, stat: PSDMatrix, /) -> Tensor:
        self.inputs.append(stat)
        return torch.full(
            (stat.shape[0],), 1.0 / stat.shape[0], dtype=stat.dtype, device=stat.device
        )


def _generalized_gramian(jacobian: Tensor) -> Tensor:
    """``G[i1, i2, j2, j1] = ⟨J[i1, i2], J[j1, j2]⟩`` for a Jacobian ``[a, b, n]``."""
    return torch.einsum("ijk,pqk->ijqp", jacobian, jacobian)


def test_reference_value() -> None:
    result = Flattening(MeanWeighting())(ones_(2, 3, 3, 2))
    torch.testing.assert_close(result, torch.full_like(result, 1.0 / 6.0))
    assert result.shape == (2, 3)


def test_flattened_gramian_is_the_gramian_of_the_flattened_jacobian() -> None:
    jacobian = randn_(3, 4, 5)
    weighting = _RecordingWeighting()
    Flattening(weighting)(_generalized_gramian(jacobian))
    flat = jacobian.reshape(12, 5)
    torch.testing.assert_close(weighting.inputs[0], flat @ flat.T)


@pytest.mark.parametrize("weighting", [MeanWeighting(), SumWeighting(), MGDAWeighting()])
def test_weights_are_those_of_the_flattened_gramian(weighting: Weighting[PSDMatrix]) -> None:
    jacobian = randn_(2, 3, 4)
    flat = jacobian.reshape(6, 4)
    result = Flattening(weighting)(_generalized_gramian(jacobian))
    expected = weighting(cast(PSDMatrix, flat @ flat.T)).reshape(2, 3)
    torch.testing.assert_close(result, expected)


def test_weights_follow_the_row_major_order_of_the_output() -> None:
    jacobian = randn_(2, 3, 4)
    result = Flattening(_DiagonalWeighting())(_generalized_gramian(jacobian))
    torch.testing.assert_close(result, (jacobian**2).sum(dim=-1))


def test_random_weighting_with_the_same_seed() -> None:
    jacobian = randn_(3, 2, 5) - 0.5
    flat = jacobian.reshape(6, 5)
    torch.manual_seed(1)
    result = Flattening(PCGradWeighting())(_generalized_gramian(jacobian))
    torch.manual_seed(1)
    expected = PCGradWeighting()(flat @ flat.T).reshape(3, 2)
    torch.testing.assert_close(result, expected)


def test_three_dimensional_output() -> None:
    jacobian = randn_(2, 3, 4, 5)
    gramian = torch.einsum("abck,defk->abcfed", jacobian, jacobian)  # [2, 3, 4, 4, 3, 2]
    result = Flattening(_DiagonalWeighting())(gramian)
    torch.testing.assert_close(result, (jacobian**2).sum(dim=-1))
    weighting = _RecordingWeighting()
    Flattening(weighting)(gramian)
    flat = jacobian.reshape(24, 5)
    torch.testing.assert_close(weighting.inputs[0], flat @ flat.T)


def test_matrix_gramian_is_unchanged() -> None:
    jacobian = randn_(4, 3)
    gramian = jacobian @ jacobian.T
    weighting = _RecordingWeighting()
    result = Flattening(weighting)(gramian)
    assert torch.equal(weighting.inputs[0], gramian)
    assert result.shape == (4,)


def test_scalar_output_gives_a_scalar_weight() -> None:
    result = Flattening(MeanWeighting())(tensor_(5.0))
    assert result.shape == ()
    torch.testing.assert_close(result, tensor_(1.0))


@pytest.mark.parametrize("shape", [(3,), (2, 3, 2), (2, 3), (2, 3, 2, 3), (1, 2, 2, 2)])
def test_shape_should_be_a_palindrome_of_even_length(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"`generalized_gramian`.*" + re.escape(f"{shape}")):
        Flattening(MeanWeighting())(ones_(*shape))


def test_input_should_be_a_tensor() -> None:
    with pytest.raises(TypeError, match="`generalized_gramian`"):
        Flattening(MeanWeighting())([[1.0]])  # type: ignore[arg-type]


def test_generalized_weighting_is_abstract_and_validates_for_subclasses() -> None:
    with pytest.raises(TypeError):
        GeneralizedWeighting()  # type: ignore[abstract]

    class Ones(GeneralizedWeighting):
        def forward(self, generalized_gramian: Tensor, /) -> Tensor:
            shape = generalized_gramian.shape[: generalized_gramian.ndim // 2]
            return torch.ones(shape, device=generalized_gramian.device)

    assert Ones()(ones_(2, 3, 3, 2)).shape == (2, 3)
    with pytest.raises(ValueError, match="`generalized_gramian`"):
        Ones()(ones_(2, 3, 2, 3))


def test_is_a_module_and_runs_hooks() -> None:
    flattening = Flattening(MeanWeighting())
    assert isinstance(flattening, nn.Module)
    assert flattening.weighting in list(flattening.children())
    calls: list[Tensor] = []
    flattening.register_forward_hook(lambda module, args, output: calls.append(output))
    result = flattening(ones_(2, 2))
    assert len(calls) == 1
    assert torch.equal(calls[0], result)


def test_keeps_the_graph_of_a_differentiable_weighting() -> None:
    jacobian = randn_(2, 3, 4, requires_grad=True)
    result = Flattening(_DiagonalWeighting())(_generalized_gramian(jacobian))
    (gradient,) = torch.autograd.grad(result.sum(), jacobian)
    torch.testing.assert_close(gradient, 2.0 * jacobian.detach())
