"""The default grouping of a Jacobian's rows into backward calls (``_chunking.py``)."""

from __future__ import annotations

import warnings
from typing import cast

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from settings import DEVICE
from torchjd.autojac import jac
from torchjd.autojac._chunking import (
    CPU_CHUNK_SIZE,
    MAX_BATCHED_NUMEL,
    default_chunk_size,
    largest_numel,
    plan,
)
from utils.tensors import randn_

from ._zoo import reference_jacobians
from .test_backward import no_vmap


def test_largest_numel_of_a_small_graph() -> None:
    x = randn_(4, 3, requires_grad=True)
    y = (x @ randn_(3, 5)).relu().sum(dim=1)
    assert largest_numel([y], 10**9) == 20  # the [4, 5] product


def test_largest_numel_stops_at_the_first_tensor_above_the_limit() -> None:
    x = randn_(4, 3, requires_grad=True)
    y = ((x @ randn_(3, 1000)) @ randn_(1000, 50)).sum(dim=1)
    assert largest_numel([y], 10**9) == 4000  # the [4, 1000] product, deeper in the graph
    assert largest_numel([y], 100) == 200  # the walk stopped at the [4, 50] product


def test_largest_numel_of_leaves_is_zero() -> None:
    assert largest_numel([randn_(3, requires_grad=True)], 10) == 0


class _OpaqueNode:
    """A graph node that does not expose the shapes of its gradients."""

    next_functions: tuple[()] = ()


class _OpaqueOutput:
    grad_fn = _OpaqueNode()


def test_largest_numel_is_unknown_without_metadata() -> None:
    assert largest_numel([cast(Tensor, _OpaqueOutput())], 10) is None
    # Then the CPU batches rows, as when every tensor is small.
    output = cast(Tensor, _OpaqueOutput())
    assert default_chunk_size([output], 40, torch.device("cpu")) == CPU_CHUNK_SIZE


def test_default_chunk_size() -> None:
    x = randn_(2, 3, requires_grad=True)
    small = (x @ randn_(3, MAX_BATCHED_NUMEL // 2)).sum(dim=1)
    large = (x @ randn_(3, MAX_BATCHED_NUMEL // 2 + 1)).sum(dim=1)
    cpu = torch.device("cpu")
    assert default_chunk_size([small], 40, cpu) == CPU_CHUNK_SIZE
    assert default_chunk_size([large], 40, cpu) == 1
    assert default_chunk_size([large], 40, torch.device("cuda")) == 40  # every row at once


@pytest.mark.parametrize(
    ("m", "chunk", "retain_graph", "expected"),
    [
        (5, 16, False, [("vmap", 0, 4), ("rows", 4, 5)]),
        (5, 16, True, [("vmap", 0, 5)]),
        (5, 1, False, [("rows", 0, 5)]),
        (2, 16, False, [("rows", 0, 2)]),  # a chunk of one row is a plain call
        (40, 16, False, [("vmap", 0, 16), ("vmap", 16, 32), ("vmap", 32, 39), ("rows", 39, 40)]),
        (33, 16, False, [("vmap", 0, 16), ("vmap", 16, 32), ("rows", 32, 33)]),
    ],
)
def test_plan(m: int, chunk: int, retain_graph: bool, expected: list[tuple[str, int, int]]) -> None:
    assert plan(m, chunk, retain_graph) == expected


@pytest.mark.skipif(DEVICE.type != "cpu", reason="accelerators batch every row")
def test_large_tensors_take_one_row_at_a_time() -> None:
    """With a tensor above the limit, no vmap is tried: an operation that vmap rejects gives no
    warning, and the Jacobian is exact.
    """
    w = randn_(3, 3, requires_grad=True)
    x = randn_(4, 3)
    scale = randn_(MAX_BATCHED_NUMEL // 4 + 1, 1, 1)

    def objectives() -> list[Tensor]:
        hidden = no_vmap(torch.tanh(x @ w))
        return [(scale * hidden).sum(dim=0).square().sum(dim=1)]  # via a [N, 4, 3] tensor

    expected = reference_jacobians(objectives(), [w])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (result,) = jac(objectives(), [w])
    assert_close(result, expected[0])
