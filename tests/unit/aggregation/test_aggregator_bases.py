from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from settings import DEVICE, DTYPE
from torchjd.aggregation import (
    Aggregator,
    Constant,
    GramianWeightedAggregator,
    Mean,
    MeanWeighting,
    Sum,
    UPGrad,
    UPGradWeighting,
    WeightedAggregator,
)
from torchjd.aggregation._utils.checks import _all_finite_on_host
from utils.tensors import tensor_

NAN = float("nan")
INF = float("inf")


@pytest.mark.device_assert
@pytest.mark.parametrize(
    "aggregator", [Mean(), Sum(), Constant(torch.tensor([1.0, 0.0])), UPGrad()]
)
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_entry_names_the_matrix(aggregator: Aggregator, bad: float) -> None:
    """Also when the entry's weight is 0, and for aggregators that check their result only."""
    J = tensor_([[1.0, 2.0], [3.0, bad]])
    with pytest.raises(ValueError, match="Parameter `matrix` should only contain finite values"):
        aggregator(J)


@pytest.mark.device_assert
def test_overflow_is_not_reported_as_a_bad_entry() -> None:
    J = tensor_([[3e38, 1.0], [3e38, 1.0]], dtype=torch.float32)
    with pytest.raises(ValueError, match="not finite although `matrix` is: its values are too"):
        Sum()(J)


@pytest.mark.device_assert
def test_weighting_called_directly_checks_values() -> None:
    """The full check is skipped only inside an aggregator that checks its result."""
    with pytest.raises(ValueError, match="`matrix` should only contain finite values"):
        MeanWeighting()(tensor_([[1.0, NAN]]))
    with pytest.raises(ValueError, match="`gramian` should only contain finite values"):
        UPGradWeighting()(tensor_([[1.0, NAN], [NAN, 1.0]]))
    assert MeanWeighting()(tensor_([[1.0, 2.0]])).tolist() == [1.0]


def test_shape_only_weightings_do_not_read_values() -> None:
    assert not MeanWeighting.reads_values
    assert UPGradWeighting.reads_values


class _BrokenWeighting(UPGradWeighting):
    def forward(self, stat: torch.Tensor, /) -> torch.Tensor:
        return torch.full((stat.shape[0],), NAN, dtype=stat.dtype, device=stat.device)


@pytest.mark.device_assert
def test_non_finite_weights_from_a_finite_gramian_are_an_error() -> None:
    aggregator = GramianWeightedAggregator(_BrokenWeighting())
    with pytest.raises(RuntimeError, match="returned non-finite weights from a finite Gramian"):
        aggregator(tensor_([[1.0, 2.0], [3.0, 4.0]]))


@pytest.mark.parametrize("aggregator", [Mean(), Sum()], ids=str)
def test_shape_only_shortcut_follows_the_shape_and_dtype(aggregator: Aggregator) -> None:
    """Mean and Sum reuse the weights of the last shape: a new shape or dtype gets new ones."""
    for m, dtype in [(2, DTYPE), (3, DTYPE), (3, torch.float64), (2, DTYPE)]:
        matrix = torch.arange(float(m * 4), device=DEVICE, dtype=dtype).reshape(m, 4)
        result = aggregator(matrix)
        assert result.dtype == dtype
        expected = matrix.mean(dim=0) if isinstance(aggregator, Mean) else matrix.sum(dim=0)
        assert_close(result, expected)


@pytest.mark.parametrize("aggregator", [Mean(), Sum()], ids=str)
def test_shape_only_shortcut_still_runs_the_weighting_hooks(aggregator: WeightedAggregator) -> None:
    """A hook on the weighting sees (and may change) the weights: the shortcut is not taken."""
    matrix = tensor_([[1.0, 2.0], [3.0, 4.0]])
    aggregator(matrix)  # caches the weights of this shape
    seen: list[Tensor] = []

    def hook(_module: nn.Module, _args: object, output: Tensor) -> Tensor:
        seen.append(output)
        return tensor_([1.0, 0.0])

    handle = aggregator.weighting.register_forward_hook(hook)
    try:
        assert_close(aggregator(matrix), tensor_([1.0, 2.0]))
    finally:
        handle.remove()
    assert len(seen) == 1


_BAD_AFTER_A_FIRST_CALL: list[tuple[list[object], type[Exception] | None, str | None]] = [
    ([[1.0, 2.0], [3.0, NAN]], ValueError, "`matrix` should only contain finite values"),
    ([[1.0, 2.0]], None, None),  # another shape: new weights
    ([[1, 2], [3, 4]], TypeError, "floating-point dtype"),
    ([[[1.0]], [[2.0]]], ValueError, "dimension 2"),
    ([[], []], ValueError, "at least one row and one column"),
]


@pytest.mark.device_assert
@pytest.mark.parametrize(
    ("aggregator", "bad", "error", "match"),
    [(Mean(), *case) for case in _BAD_AFTER_A_FIRST_CALL]
    + [(Sum(), *case) for case in _BAD_AFTER_A_FIRST_CALL]
    # Only a sum overflows: (3e38 + 3e38) / 2 is rounded after the division of each term.
    + [(Sum(), [[3e38, 1.0], [3e38, 1.0]], ValueError, "not finite although `matrix` is")],
)
def test_shape_only_fast_call_after_a_first_call(
    aggregator: Aggregator, bad: list[object], error: type[Exception] | None, match: str | None
) -> None:
    """Once the weights of a shape are cached, the lean call path checks what the generic one
    does, with the same messages."""
    good = tensor_([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float32)
    aggregator(good)
    matrix = torch.tensor(bad, device=DEVICE) if bad != [[], []] else good[:, :0]
    if matrix.is_floating_point():
        matrix = matrix.to(torch.float32)
    if error is None:
        expected = matrix.mean(dim=0) if isinstance(aggregator, Mean) else matrix.sum(dim=0)
        assert_close(aggregator(matrix), expected)
    else:
        with pytest.raises(error, match=match):
            aggregator(matrix)
    scale = 0.5 if isinstance(aggregator, Mean) else 1.0
    assert_close(aggregator(good), tensor_([2.0, 3.0], dtype=torch.float32) * 2 * scale)


@pytest.mark.parametrize("aggregator", [Mean(), Sum()], ids=str)
@pytest.mark.parametrize("where", ["aggregator", "global"])
def test_shape_only_fast_call_runs_the_hooks_and_keeps_the_graph(
    aggregator: WeightedAggregator, where: str
) -> None:
    """Hooks of every kind on the aggregator, or registered for every module, take the generic
    path, which runs them; autograd sees the product on either path."""
    matrix = tensor_([[1.0, 2.0], [3.0, 4.0]])
    expected = aggregator(matrix)  # caches the weights of this shape
    weight = 0.5 if isinstance(aggregator, Mean) else 1.0
    seen: list[str] = []

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, *_: object) -> None:
            if module is aggregator:
                seen.append(name)

        return hook

    if where == "aggregator":
        handles = [
            aggregator.register_forward_pre_hook(record("pre")),
            aggregator.register_forward_hook(record("post")),
            aggregator.register_full_backward_hook(record("backward")),
        ]
    else:
        handles = [
            nn.modules.module.register_module_forward_pre_hook(record("pre")),
            nn.modules.module.register_module_forward_hook(record("post")),
            nn.modules.module.register_module_full_backward_hook(record("backward")),
        ]
    try:
        leaf = matrix.clone().requires_grad_()
        result = aggregator(leaf)
        torch.autograd.backward(result.sum())
    finally:
        for handle in handles:
            handle.remove()
    assert_close(result, expected)
    assert seen == ["pre", "post", "backward"]
    assert leaf.grad is not None
    assert_close(leaf.grad, torch.full_like(matrix, weight))
    leaf.grad = None
    torch.autograd.backward(aggregator(leaf).sum())  # no hook left: the lean path
    assert_close(leaf.grad, torch.full_like(matrix, weight))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (torch.tensor([True, False]), True),
        (torch.tensor([1, 2**62]), True),
        (torch.tensor([1e30, 3e38]), True),  # x·x overflows: the exact check decides
        (torch.tensor([1.0, NAN]), False),
        (torch.tensor([1.0, -INF], dtype=torch.float16), False),
        (torch.tensor([1 + 1j, 2j]), True),
        (torch.tensor([complex(NAN, 0.0), 2j]), False),
    ],
)
def test_finite_check_of_any_dtype(values: Tensor, expected: bool) -> None:
    assert _all_finite_on_host(values) is expected


@pytest.mark.parametrize("size", [65, 1000, 8192, 8193, 20000])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["vector", "strided", "matrix", "requires_grad"])
def test_finite_check_beyond_the_host_read(size: int, dtype: torch.dtype, layout: str) -> None:
    """Above 64 entries the check goes through a sum of squares (a dot product, or a matrix
    product beyond 8192 entries): every layout and dtype tells finite values, huge ones (whose
    squares overflow), NaN and inf apart, wherever the bad entry is."""
    finite_max = torch.finfo(dtype).max

    def build(last: float) -> Tensor:
        values = torch.ones(2 * size, dtype=dtype)
        values[-2] = last
        if layout == "strided":
            return values[::2]  # the bad entry at index size - 1, a non-contiguous vector
        values = values[size:]
        if layout == "matrix" and size % 5 == 0:
            return values.reshape(5, -1)
        if layout == "requires_grad":
            return values.clone().requires_grad_()
        return values

    assert _all_finite_on_host(build(1.0)) is True
    assert _all_finite_on_host(build(finite_max)) is True
    assert _all_finite_on_host(build(NAN)) is False
    assert _all_finite_on_host(build(-INF)) is False
