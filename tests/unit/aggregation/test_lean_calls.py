"""The lean call path of Gramian-weighted aggregators (no hooks, no redefined steps) computes
exactly what the generic path does, and every departure from the plain case takes the generic
path."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from settings import DTYPE
from torchjd.aggregation import (
    GramianWeightedAggregator,
    MGDAWeighting,
    UPGrad,
    UPGradWeighting,
)
from torchjd.aggregation import _aggregator_bases as bases
from torchjd.linalg import Matrix
from utils.tensors import randn_

from ._registry import AGGREGATORS, AggregatorInfo

GRAMIAN_BASED = [info for info in AGGREGATORS if info.gramian_based]


@pytest.mark.parametrize("info", GRAMIAN_BASED, ids=lambda info: info.id)
@pytest.mark.parametrize("m", [1, 2, 5, 12])
def test_lean_path_equals_the_generic_path(info: AggregatorInfo, m: int) -> None:
    if m < info.min_rows or (info.max_rows is not None and m > info.max_rows):
        m = info.min_rows
    J = randn_(m, 16)  # (full row rank: the unregularised variants need it)
    lean = info.make(m)
    generic = info.make(m)
    # A hook (that changes nothing) on the aggregator sends its calls down the generic path.
    generic.register_forward_hook(lambda *_: None)
    if info.random:
        torch.manual_seed(0)
    expected = generic(J)
    if info.random:
        torch.manual_seed(0)
    assert_close(lean(J), expected, atol=0.0, rtol=0.0)


def test_plain_call_skips_the_module_machinery(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    original = bases._ThroughGramian.forward

    def spy(self: bases._ThroughGramian, stat: Matrix, /) -> Tensor:
        seen.append("generic")
        return original(self, stat)

    monkeypatch.setattr(bases._ThroughGramian, "forward", spy)
    aggregator = UPGrad()
    J = torch.randn(3, 4, dtype=DTYPE)  # (the lean path is for CPU matrices only)
    aggregator(J)
    assert seen == []
    with torch.no_grad():  # (still lean)
        aggregator(J)
    assert seen == []
    aggregator(J.to(torch.bfloat16))  # half precision: the generic path
    assert seen == ["generic"]
    seen.clear()
    handle = aggregator.gramian_weighting.register_forward_pre_hook(lambda *_: None)
    aggregator(J)
    handle.remove()
    assert seen == ["generic"]


class _OwnForward(GramianWeightedAggregator):
    def forward(self, matrix: Matrix, /) -> Tensor:
        return 2 * super().forward(matrix)


class _OwnCall(MGDAWeighting):
    def __call__(self, stat: Tensor, /) -> Tensor:
        return torch.zeros_like(super().__call__(stat))


class _OwnCheck(MGDAWeighting):
    def _check_input(self, stat: Tensor) -> None:
        raise ValueError("checked")


def test_redefined_steps_take_the_generic_path() -> None:
    J = randn_(3, 4)
    plain = GramianWeightedAggregator(MGDAWeighting())(J)
    assert_close(_OwnForward(MGDAWeighting())(J), 2 * plain)
    assert_close(GramianWeightedAggregator(_OwnCall())(J), torch.zeros_like(plain))
    with pytest.raises(ValueError, match="checked"):
        GramianWeightedAggregator(_OwnCheck())(J)
    assert not bases._has_the_generic_steps(_OwnForward, MGDAWeighting)
    assert not bases._has_the_generic_steps(GramianWeightedAggregator, _OwnCall)
    assert not bases._has_the_generic_steps(GramianWeightedAggregator, _OwnCheck)


@pytest.mark.parametrize("where", ["aggregator", "through", "weighting"])
def test_hooks_anywhere_take_the_generic_path(where: str) -> None:
    aggregator = UPGrad()
    J = randn_(3, 4)
    expected = aggregator(J)
    module = {
        "aggregator": aggregator,
        "through": aggregator.weighting,
        "weighting": aggregator.gramian_weighting,
    }[where]
    seen: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, output: seen.append(output))
    try:
        assert_close(aggregator(J), expected, atol=0.0, rtol=0.0)
    finally:
        handle.remove()
    assert len(seen) == 1


def test_lean_path_keeps_the_graph_of_a_differentiable_aggregator() -> None:
    """MGDA is differentiable: gradients through the Gramian and the weights are those of the
    generic path."""
    J = randn_(3, 4).requires_grad_()
    lean = GramianWeightedAggregator(MGDAWeighting())
    generic = GramianWeightedAggregator(MGDAWeighting())
    generic.register_forward_hook(lambda *_: None)
    (grad_lean,) = torch.autograd.grad(lean(J).square().sum(), [J])
    (grad_generic,) = torch.autograd.grad(generic(J).square().sum(), [J])
    assert_close(grad_lean, grad_generic, atol=0.0, rtol=0.0)


def test_half_precision_matrix_takes_the_generic_path() -> None:
    J = randn_(3, 4).to(torch.bfloat16)
    result = UPGrad()(J)
    assert result.dtype == torch.bfloat16
    expected = UPGradWeighting()(J.float() @ J.float().T).to(torch.bfloat16) @ J
    assert_close(result, expected)
