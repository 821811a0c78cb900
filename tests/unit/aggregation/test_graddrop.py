from __future__ import annotations

import pytest
import torch
from torch import Tensor

from settings import DEVICE, DTYPE
from torchjd.aggregation import GradDrop
from utils.tensors import ones_, randn_, tensor_, zeros_

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def _reference_graddrop(matrix: Tensor, leak: list[float], seed: int) -> Tensor:
    """GradDrop entry by entry in Python, with the draw ``rand(n)`` in float32 from ``seed``."""
    m, n = matrix.shape
    U = torch.rand(n, generator=_generator(seed), dtype=torch.float32, device=DEVICE).tolist()
    J = matrix.tolist()
    result = []
    for k in range(n):
        column = [J[i][k] for i in range(m)]
        purity = 0.5 * (1.0 + sum(column) / sum(abs(x) for x in column))
        total = 0.0
        for i in range(m):
            kept = (purity > U[k] and column[i] > 0) or (purity < U[k] and column[i] < 0)
            total += (leak[i] + (1.0 - leak[i]) * float(kept)) * column[i]
        result.append(total)
    return tensor_(result)


def test_reference_values() -> None:
    torch.manual_seed(0)
    torch.testing.assert_close(GradDrop()(tensor_(J_BASE)), tensor_([6.0, 2.0, 2.0]))
    torch.manual_seed(0)
    result = GradDrop(leak=tensor_([0.5, 0.5]))(tensor_(J_BASE))
    torch.testing.assert_close(result, tensor_([4.0, 2.0, 2.0]))


def test_draw_is_the_same_in_every_dtype() -> None:
    """U is drawn in float32, so a seed gives the same masks whatever the matrix's dtype."""
    for dtype in [torch.float32, torch.float64]:
        torch.manual_seed(0)
        result = GradDrop()(tensor_(J_BASE, dtype=dtype))
        torch.testing.assert_close(result, tensor_([6.0, 2.0, 2.0], dtype=dtype))


@pytest.mark.parametrize(("m", "n"), [(1, 4), (3, 7), (6, 50)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_leak", [False, True])
def test_matches_entrywise_reference(m: int, n: int, seed: int, with_leak: bool) -> None:
    matrix = randn_(m, n)
    leak = [0.1 * (i + 1) for i in range(m)] if with_leak else [0.0] * m
    aggregator = GradDrop(leak=tensor_(leak) if with_leak else None, generator=_generator(seed))
    expected = _reference_graddrop(matrix, leak, seed)
    torch.testing.assert_close(aggregator(matrix), expected)


def test_f_equal_to_one_keeps_the_positive_entries() -> None:
    matrix = randn_(5, 8)
    result = GradDrop(f=torch.ones_like)(matrix)
    torch.testing.assert_close(result, matrix.clamp(min=0).sum(dim=0))


def test_f_equal_to_minus_one_keeps_the_negative_entries() -> None:
    matrix = randn_(5, 8)
    result = GradDrop(f=lambda P: -torch.ones_like(P))(matrix)
    torch.testing.assert_close(result, matrix.clamp(max=0).sum(dim=0))


def test_f_is_applied_to_the_purity() -> None:
    matrix = tensor_([[-4.0, 1.0], [6.0, -3.0]])  # purities [0.6, 0.25]
    seen: list[Tensor] = []

    def f(P: Tensor) -> Tensor:
        seen.append(P)
        return P

    GradDrop(f=f)(matrix)
    torch.testing.assert_close(seen[0], tensor_([0.6, 0.25]))


def test_full_leak_gives_the_sum() -> None:
    matrix = randn_(4, 6)
    torch.testing.assert_close(GradDrop(leak=ones_(4))(matrix), matrix.sum(dim=0))


def test_zero_leak_is_no_leak() -> None:
    matrix = randn_(4, 6)
    without = GradDrop(generator=_generator(5))(matrix)
    with_zero = GradDrop(leak=zeros_(4), generator=_generator(5))(matrix)
    torch.testing.assert_close(without, with_zero)


def test_each_column_keeps_one_sign() -> None:
    matrix = randn_(6, 40)
    result = GradDrop()(matrix)
    positive, negative = matrix.clamp(min=0).sum(dim=0), matrix.clamp(max=0).sum(dim=0)
    assert bool(((result == positive) | (result == negative)).all())


def test_zero_column_gives_no_nan() -> None:
    matrix = tensor_([[0.0, 1.0], [0.0, -2.0]])
    result = GradDrop()(matrix)
    assert bool(torch.isfinite(result).all())
    assert float(result[0]) == 0.0
    torch.testing.assert_close(GradDrop()(zeros_(3, 4)), zeros_(4))


def test_global_rng_by_default() -> None:
    matrix = randn_(5, 30)
    torch.manual_seed(3)
    first = GradDrop()(matrix)
    torch.manual_seed(3)
    assert torch.equal(first, GradDrop()(matrix))


def test_keeps_dtype_and_device() -> None:
    result = GradDrop()(tensor_(J_BASE))
    assert result.dtype == DTYPE
    assert result.device.type == DEVICE.type


def test_non_differentiable() -> None:
    matrix = tensor_(J_BASE, requires_grad=True)
    assert not GradDrop()(matrix).requires_grad
    assert not GradDrop.differentiable


def test_leak_should_be_a_vector() -> None:
    with pytest.raises(ValueError, match="`leak`"):
        GradDrop(leak=tensor_([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="`leak`"):
        GradDrop(leak=tensor_(0.5))


def test_leak_should_be_a_tensor() -> None:
    with pytest.raises(TypeError, match="`leak`"):
        GradDrop(leak=[0.5, 0.5])  # type: ignore[arg-type]


def test_leak_should_have_one_entry_per_row() -> None:
    aggregator = GradDrop(leak=tensor_([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"`leak`.*2 entries"):
        aggregator(tensor_(J_BASE))


def test_f_should_be_callable() -> None:
    with pytest.raises(TypeError, match="`f`"):
        GradDrop(f=0.5)  # type: ignore[arg-type]


def test_representations() -> None:
    aggregator = GradDrop()
    assert repr(aggregator) == f"GradDrop(f={aggregator.f!r}, leak=None)"
    assert repr(aggregator).startswith("GradDrop(f=<function _identity at ")
    assert str(aggregator) == "GradDrop"
    leak = torch.tensor([0.1, 0.25])
    assert repr(GradDrop(leak=leak)).endswith(f", leak={leak!r})")
    assert str(GradDrop(leak=leak)) == "GradDrop([0.1, 0.25])"
    generator = torch.Generator()
    assert repr(GradDrop(generator=generator)).endswith(f", generator={generator!r})")
