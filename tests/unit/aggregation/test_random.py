from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from settings import DEVICE, DTYPE
from torchjd.aggregation import Random, RandomWeighting
from torchjd.linalg import Matrix
from utils.tensors import randn_, tensor_


def _matrix(x: Tensor) -> Matrix:
    return cast(Matrix, x)


J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]


@pytest.mark.skipif(DEVICE.type != "cpu", reason="The reference draws are those of the CPU RNG.")
def test_reference_values() -> None:
    J = tensor_(J_BASE)
    torch.manual_seed(0)
    assert_close(Random()(J), tensor_([-2.6229, 1.0, 1.0]), atol=1e-4, rtol=0)
    torch.manual_seed(0)
    assert_close(RandomWeighting()(_matrix(J @ J.T)), tensor_([0.8623, 0.1377]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("m", [1, 2, 5, 17])
def test_matches_numpy_softmax_of_the_same_draw(m: int) -> None:
    matrix = randn_(m, 4)
    torch.manual_seed(3)
    weights = RandomWeighting()(_matrix(matrix))
    torch.manual_seed(3)
    z = torch.randn(m, dtype=DTYPE, device=DEVICE).cpu().double().numpy()
    expected = np.exp(z) / np.exp(z).sum()
    assert weights.dtype == DTYPE
    assert weights.device == matrix.device
    assert_close(weights.cpu().double(), torch.from_numpy(expected), atol=1e-6, rtol=1e-5)


def test_weights_are_on_the_simplex_and_change_between_calls() -> None:
    weighting = RandomWeighting()
    matrix = randn_(6, 3)
    first = weighting(_matrix(matrix))
    second = weighting(_matrix(matrix))
    assert bool((first > 0).all())
    assert_close(first.sum(), tensor_(1.0))
    assert not torch.equal(first, second)


def test_aggregation_is_the_weighted_sum_of_the_rows() -> None:
    J = randn_(5, 7)
    torch.manual_seed(11)
    result = Random()(J)
    torch.manual_seed(11)
    weights = RandomWeighting()(_matrix(J))
    expected = sum(weights[i] * J[i] for i in range(J.shape[0]))
    assert_close(result, expected)


def test_generator_gives_reproducible_draws_and_leaves_global_rng_alone() -> None:
    J = randn_(4, 3)
    state = torch.get_rng_state()
    first = Random(generator=torch.Generator(DEVICE).manual_seed(5))(J)
    second = Random(generator=torch.Generator(DEVICE).manual_seed(5))(J)
    other = Random(generator=torch.Generator(DEVICE).manual_seed(6))(J)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_generator_draw_matches_direct_draw() -> None:
    G = randn_(3, 3)
    weights = RandomWeighting(generator=torch.Generator(DEVICE).manual_seed(9))(_matrix(G))
    z = torch.randn(3, generator=torch.Generator(DEVICE).manual_seed(9), dtype=DTYPE, device=DEVICE)
    assert_close(weights, torch.exp(z) / torch.exp(z).sum())


def test_generator_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Random(torch.Generator())  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RandomWeighting(torch.Generator())  # type: ignore[call-arg]


def test_invalid_generator_type() -> None:
    with pytest.raises(TypeError, match="generator"):
        Random(generator=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        RandomWeighting(generator="seed")  # type: ignore[arg-type]


def test_output_is_differentiable_with_respect_to_the_matrix() -> None:
    J = randn_(3, 4).requires_grad_()
    torch.manual_seed(2)
    torch.autograd.backward(Random()(J).sum())
    torch.manual_seed(2)
    weights = RandomWeighting()(_matrix(J.detach()))
    assert J.grad is not None
    assert_close(J.grad, weights.unsqueeze(1).expand(3, 4))


def test_repr_and_str() -> None:
    assert repr(Random()) == "Random()"
    assert str(Random()) == "Random"
    assert repr(RandomWeighting()) == "RandomWeighting()"
    generator = torch.Generator()
    assert repr(Random(generator=generator)) == f"Random(generator={generator!r})"
