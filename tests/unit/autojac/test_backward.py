"""``backward``: both forms (aggregate into ``.grad``, or store ``.jac``), against autograd."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

import torchjd
import torchjd.autojac
from torchjd.aggregation import MGDA, Aggregator, Mean, Sum, TrimmedMean, UPGrad
from torchjd.autojac import backward, jac_to_grad
from utils.tensors import randn_, tensor_, zeros_

from ._zoo import CASES, Case, grad_of, jac_of, reference_jacobians


def _example() -> tuple[Tensor, list[Tensor]]:
    param = tensor_([1.0, 2.0], requires_grad=True)
    y1 = tensor_([-1.0, 1.0]) @ param
    y2 = (param**2).sum()
    return param, [y1, y2]


def test_api_example_aggregate_form() -> None:
    param, ys = _example()
    backward(ys, UPGrad())
    assert_close(param.grad, tensor_([0.5, 2.5]))


def test_api_example_aggregator_keyword() -> None:
    param, ys = _example()
    backward(ys, aggregator=UPGrad())
    assert_close(param.grad, tensor_([0.5, 2.5]))


def test_api_example_jac_form() -> None:
    param, ys = _example()
    backward(ys)
    assert_close(jac_of(param), tensor_([[-1.0, 1.0], [2.0, 4.0]]))
    assert param.grad is None
    assert_close(jac_to_grad([param], UPGrad()), tensor_([0.5, 0.5]))
    assert_close(param.grad, tensor_([0.5, 2.5]))


def test_top_level_is_autojac() -> None:
    assert torchjd.backward is backward
    assert "backward" in torchjd.__all__


def test_old_flavour_is_detected_by_signature() -> None:
    """Benchmarks detect the 0.8 form by an `A` (or `aggregator`) parameter."""
    params = list(inspect.signature(backward).parameters)
    assert params[:5] == ["tensors", "A", "inputs", "retain_graph", "parallel_chunk_size"]
    assert "aggregator" in params


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
def test_jacobian_matches_autograd_rows(make: Callable[[], Case], chunk: int | None) -> None:
    case = make()
    expected = reference_jacobians(case.objectives(), case.params)
    for param in case.params:
        param.grad = None
    backward(case.objectives(), inputs=case.params, parallel_chunk_size=chunk)
    for param, jacobian in zip(case.params, expected, strict=True):
        assert_close(jac_of(param), jacobian)
        assert param.grad is None


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_mean_equals_mean_of_losses_backward(make: Callable[[], Case], chunk: int | None) -> None:
    case = make()
    torch.autograd.backward(torch.cat([o.flatten() for o in case.objectives()]).mean())
    expected = [p.grad for p in case.params]
    for param in case.params:
        param.grad = None
    backward(case.objectives(), A=Mean(), inputs=case.params, parallel_chunk_size=chunk)
    for param, grad in zip(case.params, expected, strict=True):
        if grad is None:  # unused parameter: autograd leaves `.grad` alone, and so does autojac
            assert param.grad is None
        else:
            assert_close(param.grad, grad)


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_default_inputs_are_the_leaves_requiring_grad(make: Callable[[], Case]) -> None:
    case = make()
    objectives = case.objectives()
    backward(objectives)
    reached = [p for p in case.params if hasattr(p, "jac")]
    expected = reference_jacobians(case.objectives(), reached)
    for param, jacobian in zip(reached, expected, strict=True):
        assert_close(jac_of(param), jacobian)
    if make.__name__ == "unused_param":
        assert len(reached) == len(case.params) - 1
    else:
        assert len(reached) == len(case.params)


@pytest.mark.parametrize("A", [UPGrad(), MGDA(), Mean(), TrimmedMean(0)], ids=str)
@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
def test_aggregation_equals_aggregator_of_concatenated_jacobian(
    A: Aggregator, chunk: int | None
) -> None:
    case = CASES[2]()  # shared trunk and heads: conflicting objectives
    jacobians = reference_jacobians(case.objectives(), case.params)
    matrix = torch.cat([j.reshape(j.shape[0], -1) for j in jacobians], dim=1)
    expected = A(matrix)
    backward(case.objectives(), A, inputs=case.params, parallel_chunk_size=chunk)
    update = torch.cat([grad_of(p).flatten() for p in case.params if p.grad is not None])
    assert_close(update, expected, rtol=1e-4, atol=1e-6)


def test_gramian_path_ignores_hooks_only_when_equivalent() -> None:
    """With a hook on the aggregator, the Jacobian is concatenated so that the hook sees it."""
    param, ys = _example()
    seen: list[Tensor] = []
    A = UPGrad()
    A.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    backward(ys, A)
    assert_close(seen[0], tensor_([[-1.0, 1.0], [2.0, 4.0]]))
    assert_close(param.grad, tensor_([0.5, 2.5]))


def test_gramian_weighting_hooks_run_in_gramian_path() -> None:
    _param, ys = _example()
    weights: list[Tensor] = []
    A = UPGrad()
    A.gramian_weighting.register_forward_hook(lambda _m, _a, out: weights.append(out))
    backward(ys, A)
    assert_close(weights[0], tensor_([0.5, 0.5]))


def test_accumulates_into_existing_grad() -> None:
    param, ys = _example()
    param.grad = tensor_([10.0, 20.0])
    backward(ys, UPGrad())
    assert_close(param.grad, tensor_([10.5, 22.5]))


def test_accumulates_into_existing_jac() -> None:
    param, ys = _example()
    backward(ys, retain_graph=True)
    backward(ys)
    assert_close(jac_of(param), 2 * tensor_([[-1.0, 1.0], [2.0, 4.0]]))


def test_jac_with_different_rows_cannot_accumulate() -> None:
    _param, ys = _example()
    backward(ys, retain_graph=True)
    with pytest.raises(
        ValueError, match=r"`.jac` field of `inputs\[0\]` should have shape \(1, 2\)"
    ):
        backward(ys[0])


@pytest.mark.parametrize("A", [Sum(), UPGrad(), None], ids=str)
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_retain_graph_false_frees_the_graph(A: Aggregator | None, chunk: int | None) -> None:
    case = CASES[0]()
    objectives = case.objectives()
    backward(objectives, A, parallel_chunk_size=chunk)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        backward(objectives, A, parallel_chunk_size=chunk)


@pytest.mark.parametrize("A", [Sum(), UPGrad()], ids=str)
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_retain_graph_true_keeps_the_graph(A: Aggregator, chunk: int | None) -> None:
    case = CASES[0]()
    objectives = case.objectives()
    backward(objectives, A, retain_graph=True, parallel_chunk_size=chunk)
    first = [grad_of(p).clone() for p in case.params if p.grad is not None]
    backward(objectives, A, parallel_chunk_size=chunk)
    for param, grad in zip(case.params, first, strict=True):
        assert_close(param.grad, 2 * grad)


def test_jac_tensors_pull_back_a_given_jacobian() -> None:
    x = tensor_([1.0, 2.0], requires_grad=True)
    h = x**2
    backward(h, jac_tensors=tensor_([[1.0, 1.0], [1.0, -1.0]]), inputs=[x])
    assert_close(jac_of(x), tensor_([[2.0, 4.0], [2.0, -4.0]]))


def test_unused_input_gets_zero_jac_and_keeps_its_grad() -> None:
    param, ys = _example()
    other = tensor_([3.0], requires_grad=True)
    backward(ys, inputs=[param, other])
    assert_close(jac_of(other), zeros_(2, 1))
    param2, ys2 = _example()
    backward(ys2, UPGrad(), inputs=[param2, other])
    assert other.grad is None  # as `torch.autograd.backward(inputs=[...])` does
    assert_close(param2.grad, tensor_([0.5, 2.5]))


def test_repeated_inputs_count_once() -> None:
    param, ys = _example()
    backward(ys, UPGrad(), inputs=[param, param])
    assert_close(param.grad, tensor_([0.5, 2.5]))


def test_inputs_may_be_a_generator() -> None:
    layer = torch.nn.Linear(3, 2).to(randn_(1).device, randn_(1).dtype)
    losses = layer(randn_(4, 3)).sum(dim=1)
    backward(losses, Mean(), inputs=layer.parameters())
    assert layer.weight.grad is not None
    assert layer.bias.grad is not None


def test_grad_keeps_the_dtype_of_each_parameter() -> None:
    low = torch.tensor([1.0, 2.0], dtype=torch.bfloat16, requires_grad=True)
    high = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    y1 = low.float().sum() + high.float().sum()
    y2 = (low.float() ** 2).sum() - high.float().sum()
    backward([y1, y2], UPGrad())
    assert low.grad is not None
    assert low.grad.dtype == torch.bfloat16
    assert high.grad is not None
    assert high.grad.dtype == torch.float64


def test_non_leaf_input_that_retains_grad() -> None:
    x = tensor_([1.0, 2.0], requires_grad=True)
    h = 2 * x
    h.retain_grad()
    backward([h.sum(), (h**2).sum()], Mean(), inputs=[h], parallel_chunk_size=1)
    assert_close(h.grad, 0.5 * (1 + 2 * h.detach()))


# --- the vmap fallback ---------------------------------------------------------------------------


class _NoVmap(torch.autograd.Function):
    """Doubles its input; its backward reads the gradient as a Python list, which vmap rejects."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        return 2 * x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        values = grad.tolist()  # fails on a batched tensor
        return 2 * torch.tensor(values, dtype=grad.dtype, device=grad.device)


no_vmap: Callable[[Tensor], Tensor] = _NoVmap.apply


def _no_vmap_case() -> tuple[list[Tensor], Callable[[], list[Tensor]]]:
    w = randn_(3, 3, requires_grad=True)
    x = randn_(4, 3)

    def objectives() -> list[Tensor]:
        hidden = no_vmap(torch.tanh(x @ w))  # deep in the graph: nodes run before it
        return [hidden.square().sum(dim=1)]

    return [w], objectives


@pytest.mark.parametrize("chunk", [None, 2, 3])
@pytest.mark.parametrize("retain_graph", [False, True])
def test_vmap_failure_falls_back_to_rows_with_one_warning(
    chunk: int | None, retain_graph: bool
) -> None:
    params, objectives = _no_vmap_case()
    expected = reference_jacobians(objectives(), params)
    outputs = objectives()
    with pytest.warns(UserWarning, match="could not be computed with torch.vmap") as record:
        backward(outputs, inputs=params, retain_graph=retain_graph, parallel_chunk_size=chunk)
    assert len(record) == 1
    assert record[0].filename == __file__  # the warning points at the user's call
    assert_close(jac_of(params[0]), expected[0])
    if not retain_graph:
        with pytest.raises(RuntimeError, match="second time"):
            backward(outputs, inputs=params)


@pytest.mark.parametrize("chunk", [None, 2])
def test_vmap_fallback_when_aggregating(chunk: int | None) -> None:
    params, objectives = _no_vmap_case()
    (jacobian,) = reference_jacobians(objectives(), params)
    expected = UPGrad()(jacobian.reshape(jacobian.shape[0], -1))
    outputs = objectives()
    with pytest.warns(UserWarning, match="could not be computed with torch.vmap") as record:
        backward(outputs, UPGrad(), inputs=params, parallel_chunk_size=chunk)
    assert len(record) == 1
    assert record[0].filename == __file__
    assert_close(grad_of(params[0]).flatten(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        backward(outputs, inputs=params, parallel_chunk_size=1)


def test_no_vmap_no_warning_with_chunk_size_one() -> None:
    params, objectives = _no_vmap_case()
    expected = reference_jacobians(objectives(), params)
    backward(objectives(), inputs=params, parallel_chunk_size=1)  # warnings are errors here
    assert_close(jac_of(params[0]), expected[0])


def test_genuine_error_is_not_hidden_by_the_fallback() -> None:
    """A graph already freed makes vmap fail, and the plain row too: its error is raised."""
    params, objectives = _no_vmap_case()
    outputs = objectives()
    backward(outputs, inputs=params) if False else None
    backward(outputs, inputs=params, parallel_chunk_size=1)
    with pytest.raises(RuntimeError, match="second time"):
        backward(outputs, inputs=params)  # no warning: the plain row fails too


# --- errors --------------------------------------------------------------------------------------


def test_errors() -> None:
    param, ys = _example()
    with pytest.raises(ValueError, match=r"Parameter `tensors` should not be empty"):
        backward([])
    with pytest.raises(ValueError, match=r"`tensors\[1\]` is `tensors\[0\]`"):
        backward([ys[0], ys[0]])
    with pytest.raises(TypeError, match=r"Parameter `tensors` should be a Tensor or a sequence"):
        backward(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`tensors\[0\]` with requires_grad=False"):
        backward([tensor_(1.0)])
    with pytest.raises(ValueError, match=r"Found parallel_chunk_size=0"):
        backward(ys, parallel_chunk_size=0)
    with pytest.raises(TypeError, match=r"parallel_chunk_size=1.5"):
        backward(ys, parallel_chunk_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Parameter `A` should be an Aggregator.*Found type list"):
        backward(ys, [param])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`A` and `aggregator` are two names"):
        backward(ys, UPGrad(), aggregator=UPGrad())
    with pytest.raises(ValueError, match=r"`tensors\[0\]` without `grad_fn`"):
        backward([param])
    frozen = tensor_([1.0])
    with pytest.raises(ValueError, match=r"`inputs\[1\]` with requires_grad=False"):
        backward(ys, inputs=[param, frozen])
    non_leaf = param * 2
    with pytest.raises(ValueError, match=r"`.grad` can be populated.*`inputs\[0\]`"):
        backward(ys, UPGrad(), inputs=[non_leaf])
    with pytest.raises(ValueError, match=r"`.jac` can be populated"):
        backward(ys, inputs=[non_leaf])
    with pytest.raises(TypeError, match=r"retain_graph"):
        backward(ys, retain_graph=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`inputs` should contain at least one element"):
        backward(ys, UPGrad(), inputs=[])


def test_jac_tensors_errors() -> None:
    _, ys = _example()
    with pytest.raises(
        ValueError,
        match=r"`jac_tensors` should have the same length as `tensors`. Found lengths 1 and 2",
    ):
        backward(ys, jac_tensors=[randn_(3)])
    with pytest.raises(ValueError, match=r"Found `jac_tensors\[1\]` of shape \(3, 2\)"):
        backward(ys, jac_tensors=[randn_(3), randn_(3, 2)])
    with pytest.raises(ValueError, match=r"same number of rows. Found numbers of rows \[3, 2\]"):
        backward(ys, jac_tensors=[randn_(3), randn_(2)])


def test_top_level_names() -> None:
    assert torchjd.__all__ == ["Stateful", "backward", "mtl_backward"]
    assert torchjd.mtl_backward is torchjd.autojac.mtl_backward
    assert torchjd.autojac.__all__ == ["backward", "jac", "jac_to_grad", "mtl_backward"]


def _many_rows_case() -> Case:
    """Enough rows (40) for the update to be computed as one more vector-Jacobian product."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(
        randn_(1).device, randn_(1).dtype
    )
    x = randn_(40, 3)
    params: list[Tensor] = list(model.parameters())
    return Case("many rows", params, lambda: [model(x).square().sum(dim=1)])


@pytest.mark.parametrize("A", [UPGrad(), MGDA()], ids=str)
@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("retain_graph", [False, True])
def test_many_rows_gramian_path(A: Aggregator, chunk: int | None, retain_graph: bool) -> None:
    case = _many_rows_case()
    jacobians = reference_jacobians(case.objectives(), case.params)
    expected = A(torch.cat([j.reshape(40, -1) for j in jacobians], dim=1))
    objectives = case.objectives()
    backward(objectives, A, parallel_chunk_size=chunk, retain_graph=retain_graph)
    update = torch.cat([grad_of(p).flatten() for p in case.params])
    assert_close(update, expected, rtol=1e-4, atol=1e-5)
    if retain_graph:
        backward(objectives, A, parallel_chunk_size=chunk)
        assert_close(torch.cat([grad_of(p).flatten() for p in case.params]), 2 * update)
    else:
        with pytest.raises(RuntimeError, match="second time"):
            backward(objectives, A, parallel_chunk_size=chunk)


def test_many_rows_vmap_fallback() -> None:
    w = randn_(3, 3, requires_grad=True)
    x = randn_(40, 3)
    outputs = [no_vmap(torch.tanh(x @ w)).square().sum(dim=1)]
    (jacobian,) = reference_jacobians(outputs, [w])
    expected = UPGrad()(jacobian.reshape(40, -1))
    with pytest.warns(UserWarning, match="could not be computed with torch.vmap") as record:
        backward(outputs, UPGrad(), inputs=[w])
    assert len(record) == 1
    assert record[0].filename == __file__
    assert_close(grad_of(w).flatten(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="second time"):
        backward(outputs, UPGrad(), inputs=[w], parallel_chunk_size=1)
