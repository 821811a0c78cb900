"""``mtl_backward``: task gradients into ``.grad``, shared Jacobian aggregated or stored."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

import torchjd
from settings import DEVICE, DTYPE
from torchjd.aggregation import Aggregator, Mean, UPGrad
from torchjd.autojac import jac_to_grad, mtl_backward
from utils.tensors import randn_, tensor_

from ._zoo import grad_of, jac_of, reference_jacobians


class _Model:
    def __init__(self, n_tasks: int = 2) -> None:
        self.trunk = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DEVICE, DTYPE)
        self.heads = [nn.Linear(3, 1).to(DEVICE, DTYPE) for _ in range(n_tasks)]
        self.x = randn_(6, 4)
        self.targets = randn_(n_tasks, 6, 1)

    def forward(self) -> tuple[Tensor, list[Tensor]]:
        features = self.trunk(self.x)
        losses = [
            (head(features) - target).square().mean()
            for head, target in zip(self.heads, self.targets, strict=True)
        ]
        return features, losses

    @property
    def shared(self) -> list[Tensor]:
        return list(self.trunk.parameters())

    def task(self, i: int) -> list[Tensor]:
        return list(self.heads[i].parameters())

    def all_params(self) -> list[Tensor]:
        return [*self.shared, *(p for h in self.heads for p in h.parameters())]

    def zero_grad(self) -> None:
        for param in self.all_params():
            param.grad = None


def _expected(model: _Model, A: Aggregator) -> tuple[Tensor, list[list[Tensor]]]:
    """The aggregated shared update and the task gradients, with plain autograd."""
    _, losses = model.forward()
    jacobians = reference_jacobians(losses, model.shared)
    matrix = torch.cat([j.reshape(len(losses), -1) for j in jacobians], dim=1)
    tasks = [
        list(torch.autograd.grad(loss, model.task(i), retain_graph=True))
        for i, loss in enumerate(losses)
    ]
    return A(matrix), tasks


@pytest.mark.parametrize("chunk", [None, 1, 2])
@pytest.mark.parametrize("n_tasks", [1, 2, 3])
def test_seed_readme_form_matches_autograd(chunk: int | None, n_tasks: int) -> None:
    model = _Model(n_tasks)
    update, tasks = _expected(model, UPGrad())
    features, losses = model.forward()
    mtl_backward(
        losses=losses,
        features=features,
        tasks_params=[h.parameters() for h in model.heads],
        shared_params=model.trunk.parameters(),
        A=UPGrad(),
        parallel_chunk_size=chunk,
    )
    assert_close(torch.cat([grad_of(p).flatten() for p in model.shared]), update)
    for i, grads in enumerate(tasks):
        for param, grad in zip(model.task(i), grads, strict=True):
            assert_close(param.grad, grad)


def test_default_params_are_inferred_from_the_graph() -> None:
    model = _Model(2)
    update, tasks = _expected(model, Mean())
    features, losses = model.forward()
    mtl_backward(losses, features, Mean())  # positional, as benchmark scripts call it
    assert_close(torch.cat([grad_of(p).flatten() for p in model.shared]), update)
    for i, grads in enumerate(tasks):
        for param, grad in zip(model.task(i), grads, strict=True):
            assert_close(param.grad, grad)


def test_positional_with_shared_params_keyword() -> None:
    model = _Model(2)
    update, _ = _expected(model, UPGrad())
    features, losses = model.forward()
    mtl_backward(losses, features, UPGrad(), shared_params=model.shared)
    assert_close(torch.cat([grad_of(p).flatten() for p in model.shared]), update)


def test_mean_equals_sum_of_losses_backward() -> None:
    """With Mean, the shared update is the mean gradient; heads get their own gradient."""
    model = _Model(3)
    features, losses = model.forward()
    torch.autograd.backward(torch.stack(losses).sum())
    expected = [grad_of(p).clone() for p in model.all_params()]
    model.zero_grad()
    features, losses = model.forward()
    mtl_backward(losses, features, aggregator=Mean())
    n_shared = len(model.shared)
    for param, grad in zip(model.shared, expected[:n_shared], strict=True):
        assert_close(param.grad, grad / 3)
    for param, grad in zip(model.all_params()[n_shared:], expected[n_shared:], strict=True):
        assert_close(param.grad, grad)


def test_jac_form_then_jac_to_grad() -> None:
    model = _Model(2)
    update, _ = _expected(model, UPGrad())
    features, losses = model.forward()
    mtl_backward(losses, features)
    for param in model.shared:
        assert jac_of(param).shape == (2, *param.shape)
    for param in model.task(0):
        assert param.grad is not None
        assert not hasattr(param, "jac")
    weights = jac_to_grad(model.shared, UPGrad())
    assert weights.shape == (2,)
    assert_close(torch.cat([grad_of(p).flatten() for p in model.shared]), update)


def test_non_scalar_losses_with_grad_tensors() -> None:
    model = _Model(2)
    features = model.trunk(model.x)
    outputs = [head(features).squeeze(1) for head in model.heads]
    seeds = [randn_(6), randn_(6)]
    scalars = [(o * s).sum() for o, s in zip(outputs, seeds, strict=True)]
    expected = reference_jacobians(scalars, model.shared)
    features = model.trunk(model.x)
    outputs = [head(features).squeeze(1) for head in model.heads]
    mtl_backward(outputs, features, grad_tensors=seeds)
    for param, jacobian in zip(model.shared, expected, strict=True):
        assert_close(jac_of(param), jacobian)


def test_several_features_and_a_task_without_shared_dependency() -> None:
    w1 = randn_(3, requires_grad=True)
    w2 = randn_(3, requires_grad=True)
    head = randn_(3, requires_grad=True)
    f1 = w1 * 2
    f2 = w2.exp()
    loss1 = (f1 * head).sum()
    loss2 = head.square().sum()  # depends on no feature: a zero row
    mtl_backward([loss1, loss2], [f1, f2], tasks_params=[[head], [head]], shared_params=[w1, w2])
    assert_close(jac_of(w1), torch.stack([2 * head.detach(), torch.zeros_like(head)]))
    assert_close(jac_of(w2), torch.zeros(2, 3, device=DEVICE, dtype=DTYPE))
    assert_close(head.grad, f1.detach() + 2 * head.detach())  # sum of both tasks' gradients


def test_accumulates_into_existing_grads() -> None:
    model = _Model(2)
    update, tasks = _expected(model, UPGrad())
    for param in model.all_params():
        param.grad = torch.ones_like(param)
    features, losses = model.forward()
    mtl_backward(losses, features, UPGrad())
    assert_close(torch.cat([grad_of(p).flatten() for p in model.shared]), update + 1)
    assert_close(model.task(1)[0].grad, tasks[1][0] + 1)


def test_retain_graph() -> None:
    model = _Model(2)
    features, losses = model.forward()
    mtl_backward(losses, features, Mean(), retain_graph=True)
    mtl_backward(losses, features, Mean())
    with pytest.raises(RuntimeError, match="second time"):
        mtl_backward(losses, features, Mean())


def test_signature_of_the_old_form() -> None:
    params = list(inspect.signature(mtl_backward).parameters)
    assert params[:7] == [
        "losses",
        "features",
        "A",
        "tasks_params",
        "shared_params",
        "retain_graph",
        "parallel_chunk_size",
    ]
    assert torchjd.mtl_backward is mtl_backward


def test_errors() -> None:
    model = _Model(2)
    features, losses = model.forward()
    with pytest.raises(ValueError, match=r"Parameter `losses` should not be empty"):
        mtl_backward([], features)
    with pytest.raises(ValueError, match=r"Parameter `features` should not be empty"):
        mtl_backward(losses, [])
    with pytest.raises(ValueError, match=r"`losses\[1\]` is `losses\[0\]`"):
        mtl_backward([losses[0], losses[0]], features)
    with pytest.raises(ValueError, match=r"`features\[1\]` is `features\[0\]`"):
        mtl_backward(losses, [features, features])
    with pytest.raises(ValueError, match=r"`tasks_params` should have one item per loss. Found 1"):
        mtl_backward(losses, features, tasks_params=[model.task(0)])
    with pytest.raises(ValueError, match=r"share no tensor with `shared_params`"):
        mtl_backward(losses, features, tasks_params=[model.shared, model.task(1)])
    with pytest.raises(ValueError, match=r"only contain scalars.*`losses\[0\]` of shape \(6, 1\)"):
        mtl_backward([model.heads[0](features), losses[1]], features)
    with pytest.raises(ValueError, match=r"`grad_tensors` should have the same length"):
        mtl_backward(losses, features, grad_tensors=[tensor_(1.0)])
    with pytest.raises(ValueError, match=r"`grad_tensors\[1\]` of shape \(2,\)"):
        mtl_backward(losses, features, grad_tensors=[tensor_(1.0), randn_(2)])
    with pytest.raises(TypeError, match=r"Parameter `A` should be an Aggregator.*use the keyword"):
        mtl_backward(losses, features, [model.task(0), model.task(1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"parallel_chunk_size"):
        mtl_backward(losses, features, parallel_chunk_size=-1)
    with pytest.raises(ValueError, match=r"`features\[0\]` with requires_grad=False"):
        mtl_backward(losses, features.detach())


def test_heads_sharing_nodes() -> None:
    """Two tasks read the same head output: their gradients are computed task by task."""
    model = _Model(1)
    head = model.heads[0]
    features = model.trunk(model.x)
    output = head(features)
    losses = [output.mean(), output.square().mean()]
    expected_shared = reference_jacobians(losses, model.shared)
    expected_head = [
        sum(g for g in grads)
        for grads in zip(
            *(torch.autograd.grad(loss, model.task(0), retain_graph=True) for loss in losses),
            strict=True,
        )
    ]
    mtl_backward(losses, features)
    for param, jacobian in zip(model.shared, expected_shared, strict=True):
        assert_close(jac_of(param), jacobian)
    for param, grad in zip(model.task(0), expected_head, strict=True):
        assert_close(grad_of(param), grad)


def test_leaf_features_and_a_feature_used_twice_by_a_head() -> None:
    features = randn_(4, 3, requires_grad=True)
    w1 = randn_(3, requires_grad=True)
    w2 = randn_(3, requires_grad=True)
    losses = [(features @ w1).square().sum() + (features * features).sum(), (features @ w2).sum()]
    expected = reference_jacobians(losses, [features])
    expected_w = [
        torch.autograd.grad(loss, w, retain_graph=True)[0]
        for loss, w in zip(losses, [w1, w2], strict=True)
    ]
    mtl_backward(losses, features, shared_params=[features])
    assert_close(jac_of(features), expected[0])
    assert_close(grad_of(w1), expected_w[0])
    assert_close(grad_of(w2), expected_w[1])


def test_vmap_fallback_warning_points_at_the_call() -> None:
    class NoVmap(torch.autograd.Function):
        @staticmethod
        def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
            return 2 * x

        @staticmethod
        def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
            return 2 * torch.tensor(grad.tolist(), dtype=grad.dtype, device=grad.device)

    no_vmap: Callable[[Tensor], Tensor] = NoVmap.apply
    model = _Model(3)
    update, _ = _expected(model, UPGrad())
    features = no_vmap(model.trunk(model.x) / 2)
    losses = [
        (head(features) - target).square().mean()
        for head, target in zip(model.heads, model.targets, strict=True)
    ]
    with pytest.warns(UserWarning, match="could not be computed with torch.vmap") as record:
        mtl_backward(losses, features, UPGrad())
    assert len(record) == 1
    assert record[0].filename == __file__
    assert_close(torch.cat([grad_of(p).flatten() for p in model.shared]), update)


@pytest.mark.parametrize("with_aggregator", [True, False])
def test_features_that_no_loss_depends_on_are_reported(with_aggregator: bool) -> None:
    """Slices of the features passed instead of the features that the heads read: the losses
    reach the shared parameters only around `features`, so the Jacobian pulled back through
    them is zero. That is almost always a mistake, hence the warning."""
    shared = randn_(3, requires_grad=True)
    head = randn_(3, requires_grad=True)
    features = shared * 2
    losses = [(features * head).sum(), features.square().sum()]
    slices = [features[:2], features[2:]]
    aggregator = UPGrad() if with_aggregator else None
    with pytest.warns(UserWarning, match=r"None of the losses depends on `features`"):
        mtl_backward(losses, slices, aggregator, shared_params=[shared])
    if with_aggregator:
        assert shared.grad is None
    else:
        assert_close(jac_of(shared), torch.zeros(2, 3, device=DEVICE, dtype=DTYPE))
