"""The Engine's API, refusals, hook lifecycle and its use in Jacobian descent."""

from __future__ import annotations

import copy
import gc
import re
import weakref
from collections.abc import Iterator
from typing import cast

import pytest
import torch
from torch import Tensor, nn

from settings import DEVICE, DTYPE
from torchjd.aggregation import Flattening, UPGrad, UPGradWeighting
from torchjd.autogram import Engine
from unit.autogram._reference import (
    assert_gramians_close,
    autograd_gramian,
    autograd_jacobian,
    trainable,
)
from utils.tensors import ones_, randn_, tensor_


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).to(device=DEVICE, dtype=DTYPE)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --- construction ---------------------------------------------------------------------------


def test_modules_as_arguments_or_iterables_are_equivalent() -> None:
    model = mlp()
    x = randn_(3, 5)
    gramians = []
    arguments: list[tuple[nn.Module | Iterator[nn.Module], ...]] = [
        (model,),
        (model.modules(),),
        (model[0], model[2]),
        (model, model.modules()),
    ]
    for modules in arguments:
        engine = Engine(*modules, batch_dim=0)
        gramians.append(engine.compute_gramian(model(x).sum(dim=1)))
        engine.close()
    for gramian in gramians[1:]:
        assert_gramians_close(gramian, gramians[0])


def test_each_module_hooked_once() -> None:
    model = mlp()
    engine = Engine(model, model.modules(), model[0], batch_dim=0)
    # Both Linear layers are hooked (2 hooks each); ReLU has no parameter, and the Sequential only
    # calls its children.
    assert hook_count(model) == 4
    engine.close()


def test_containers_are_hooked_only_where_they_can_use_parameters() -> None:
    class Subclass(nn.Sequential):
        # A subclass may read its children's parameters itself.
        def forward(self, input: Tensor) -> Tensor:
            layer = cast(nn.Linear, self[0])
            return cast(Tensor, layer(input)) * layer.weight.sum()

    plain, subclass, declared = mlp(), Subclass(nn.Linear(5, 5)), mlp()
    declared.__dict__["batch_first"] = True  # a layout hint for the modules it calls
    with_own = mlp()
    with_own.register_parameter("scale", nn.Parameter(ones_(1)))
    models = (plain, subclass, declared, with_own)
    engines = [Engine(m, batch_dim=0) for m in models]
    own_hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in models]
    assert own_hooks == [0, 2, 2, 2]
    for engine in engines:
        engine.close()


def test_batch_dim_is_required() -> None:
    with pytest.raises(TypeError, match="batch_dim"):
        Engine(mlp())  # type: ignore[call-arg]


@pytest.mark.parametrize("batch_dim", ["0", 0.0, True])
def test_batch_dim_type(batch_dim: object) -> None:
    message = (
        f"Parameter `batch_dim` should be an int or None. Found type {type(batch_dim).__name__}."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        Engine(mlp(), batch_dim=batch_dim)  # type: ignore[arg-type]


def test_modules_type() -> None:
    with pytest.raises(TypeError, match=re.escape("Found type int at position 1.")):
        Engine(mlp(), 3, batch_dim=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("Found an element of type str at position 0.")):
        Engine(["a"], batch_dim=0)  # type: ignore[list-item]


@pytest.mark.parametrize(
    "norm",
    [
        nn.BatchNorm1d(4),
        nn.BatchNorm1d(4, affine=False),
        nn.BatchNorm1d(4, track_running_stats=False),
        nn.BatchNorm2d(4),
        nn.BatchNorm3d(4),
        nn.LazyBatchNorm1d(),
        nn.SyncBatchNorm(4),
    ],
)
def test_batchnorm_is_refused_with_batch_dim(norm: nn.Module) -> None:
    model = nn.Sequential(nn.Linear(3, 4), norm)
    name = type(norm).__name__
    message = (
        f"Parameter `batch_dim` is 0, but the modules include a {name}: batch normalization "
        "mixes the samples of a batch (batch statistics), so the gradient of one sample's loss "
        "depends on the other samples and the per-sample Gramian would be wrong. Replace it by "
        "GroupNorm, LayerNorm or InstanceNorm, or use `batch_dim=None`."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        Engine(model.modules(), batch_dim=0)
    Engine(model.modules(), batch_dim=None).close()  # Accepted without per-sample structure.


# --- compute_gramian ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [[], [3], [3, 2], [3, 2, 4]])
def test_generalized_shape(shape: list[int]) -> None:
    model = nn.Linear(4, 1).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model, batch_dim=None)
    output = model(randn_(*shape, 4)).squeeze(-1)
    gramian = engine.compute_gramian(output)
    assert list(gramian.shape) == shape + shape[::-1]
    assert_gramians_close(gramian, autograd_gramian(output, trainable(model)))


def test_linear_closed_form_value() -> None:
    """``o_i = w · x_i``: the Gramian is ``X Xᵀ``."""
    model = nn.Linear(2, 1, bias=False).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model, batch_dim=0)
    x = tensor_([[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]])
    expected = tensor_([[5.0, 11.0, -2.0], [11.0, 25.0, -4.0], [-2.0, -4.0, 1.0]])
    assert torch.equal(engine.compute_gramian(model(x).squeeze(dim=1)), expected)


def test_batch_dim_out_of_range() -> None:
    model = mlp()
    engine = Engine(model, batch_dim=2)
    message = (
        "Parameter `batch_dim` is 2, but `output` has shape [3, 2], which has no dimension 2. "
        "Use the index of the batch dimension of `output`, or `batch_dim=None`."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        engine.compute_gramian(model(randn_(3, 5)))
    engine = Engine(model, batch_dim=0)
    with pytest.raises(ValueError, match=re.escape("has shape [], which has no dimension 0")):
        engine.compute_gramian(model(randn_(3, 5)).sum())


def test_output_type() -> None:
    engine = Engine(mlp(), batch_dim=0)
    message = "Parameter `output` should be a torch.Tensor. Found type list."
    with pytest.raises(TypeError, match=re.escape(message)):
        engine.compute_gramian([1.0])  # type: ignore[arg-type]


def test_unbatched_module_tensor_is_refused() -> None:
    """A module that processes the batch as a whole breaks the per-sample structure."""

    class AcrossBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = nn.Linear(3, 3)

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.mix(x.T).T  # Mixes the 3 samples.
            return out

    model = AcrossBatch().to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model, batch_dim=0)
    output = model(randn_(3, 5)).sum(dim=1)
    message = "A tensor of shape [5, 3] of a Linear module is not batched: with `batch_dim` set"
    with pytest.raises(ValueError, match=re.escape(message)):
        engine.compute_gramian(output)


def test_ambiguous_batch_dimension_is_resolved_or_refused() -> None:
    """Several dimensions of the batch size: the graph tells which one holds the samples."""
    model = nn.Linear(5, 2).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model, batch_dim=2)
    output = model(randn_(3, 3, 5)).permute(2, 0, 1)  # Samples along dimension 1 of x.
    expected = autograd_gramian(output, trainable(model))
    assert_gramians_close(engine.compute_gramian(output), expected)
    # Output i reads only position (i, i): both dimensions look like the batch.
    engine = Engine(model, batch_dim=0)
    output = torch.diagonal(model(randn_(3, 3, 5)), dim1=0, dim2=1).sum(dim=0)
    message = (
        "A tensor of shape [3, 3, 5] of a Linear module has several dimensions of size 3 (the "
        "size of the output's batch dimension), and which of them holds the samples could not "
        "be determined. Give the enclosing module a `batch_first` attribute"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        engine.compute_gramian(output)
    # The failed call left nothing behind: the engine works for an unambiguous output.
    output = model(randn_(3, 4, 5)).sum(dim=(1, 2))
    expected = autograd_gramian(output, trainable(model))
    assert_gramians_close(engine.compute_gramian(output), expected)


def test_no_grad_filled_and_graph_kept() -> None:
    model = mlp()
    engine = Engine(model, batch_dim=0)
    losses = model(randn_(3, 5)).sum(dim=1)
    gramian = engine.compute_gramian(losses)
    assert gramian.grad_fn is None
    assert not gramian.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert_gramians_close(engine.compute_gramian(losses), gramian)  # Same forward, same result.
    losses.sum().backward()  # The graph is still there.


def test_detached_or_constant_output_has_zero_gramian() -> None:
    model = mlp()
    engine = Engine(model, batch_dim=0)
    output = model(randn_(3, 5)).sum(dim=1)
    assert torch.equal(engine.compute_gramian(output.detach()), torch.zeros_like(output).diag())
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(model))
    )


def test_forward_before_engine_creation_is_refused() -> None:
    model = mlp()
    output = model(randn_(3, 5)).sum(dim=1)
    engine = Engine(model, batch_dim=0)
    message = (
        "Parameter `output` depends on the parameters of the engine's modules, but none of "
        "their calls was recorded: the forward pass ran before the Engine was created"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        engine.compute_gramian(output)
    # An output that does not depend on the parameters has a zero Gramian.
    x = randn_(3).requires_grad_()
    assert torch.equal(
        engine.compute_gramian(x * 2.0), torch.zeros(3, 3, device=DEVICE, dtype=DTYPE)
    )


def test_input_modified_in_place_is_refused() -> None:
    model = mlp()
    engine = Engine(model, batch_dim=0)
    x = randn_(3, 5).requires_grad_()
    hidden = x * 1.0
    output = model(hidden).sum(dim=1)
    with torch.no_grad():
        hidden.mul_(2.0)
    message = "An input of a Linear module was modified in place after the module's forward pass"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        engine.compute_gramian(output)


# --- hooks and state --------------------------------------------------------------------------


def test_close_and_context_manager_remove_hooks() -> None:
    model = mlp()
    engine = Engine(model.modules(), batch_dim=0)
    assert hook_count(model) > 0
    engine.close()
    assert hook_count(model) == 0
    engine.close()  # Idempotent.
    with pytest.raises(RuntimeError, match="This Engine was closed"):
        engine.compute_gramian(model(randn_(2, 5)).sum(dim=1))
    with Engine(model.modules(), batch_dim=0) as engine:
        assert hook_count(model) > 0
    assert hook_count(model) == 0


def test_garbage_collection_removes_hooks() -> None:
    model = mlp()
    engine = Engine(model.modules(), batch_dim=0)
    engine.compute_gramian(model(randn_(2, 5)).sum(dim=1))
    reference = weakref.ref(engine)
    del engine
    gc.collect()
    assert reference() is None
    assert hook_count(model) == 0


def test_ordinary_backward_is_unaffected() -> None:
    model = mlp()
    twin = copy.deepcopy(model)
    engine = Engine(model.modules(), batch_dim=0)
    x = randn_(3, 5)
    model(x).pow(2).sum().backward()
    twin(x).pow(2).sum().backward()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert p.grad is not None
        assert q.grad is not None
        assert torch.equal(p.grad, q.grad)
    engine.close()


def test_exception_during_forward_leaves_engine_usable() -> None:
    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(5, 2)
            self.fail = True

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.linear(x)
            if self.fail:
                raise RuntimeError("boom")
            return out

    model = nn.Sequential(nn.Linear(5, 5), Failing()).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model.modules(), batch_dim=0)
    with pytest.raises(RuntimeError, match="boom"):
        model(randn_(3, 5))
    assert engine._log.stack == []
    failing = model[1]
    assert isinstance(failing, Failing)
    failing.fail = False
    output = model(randn_(3, 5)).sum(dim=1)
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(model))
    )


def test_stale_forward_is_ignored() -> None:
    """A forward without ``compute_gramian`` (kept alive or not) does not affect the next one."""
    model = mlp()
    engine = Engine(model.modules(), batch_dim=0)
    kept = model(randn_(3, 5)).sum(dim=1)
    model(randn_(3, 5))  # Dropped at once.
    output = model(randn_(4, 5)).sum(dim=1)
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(model))
    )
    assert_gramians_close(engine.compute_gramian(kept), autograd_gramian(kept, trainable(model)))


def test_stale_forward_with_freed_graph_is_ignored() -> None:
    """Records of a graph already freed by a backward pass (but still alive) are skipped."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(5, 3)
            self.scale = nn.Parameter(torch.randn(5))  # Generic rule: back-propagates itself.

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.linear(x * self.scale)
            return out

    model = Net().to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model.modules(), batch_dim=0)
    old = model(randn_(3, 5)).sum(dim=1)
    old.sum().backward()  # Frees the graph of `old`, which stays alive.
    x = randn_(3, 5)
    x[0] = 0.0  # A zero sample: stale zeros must not be mistaken for a reached record.
    output = model(x).sum(dim=1)
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(model))
    )
    assert len(engine._log.live_calls()) == 4  # Two calls (Net, Linear) per forward pass.


def test_no_state_grows() -> None:
    model = mlp()
    engine = Engine(model.modules(), batch_dim=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    weighting = UPGradWeighting()
    for step in range(10_000):
        losses = model(randn_(4, 5)).pow(2).sum(dim=1)
        assert engine._log.n_records() <= 64  # Dead records are pruned as calls come in.
        if step % 3 == 0:  # Some forward passes without compute_gramian, or without backward.
            continue
        gramian = engine.compute_gramian(losses)
        if step % 3 == 1:
            optimizer.zero_grad()
            losses.backward(weighting(gramian))
            optimizer.step()
    del losses
    assert engine._log.live_calls() == []
    assert engine._log.n_records() == 0
    assert engine._log.stack == []


# --- Jacobian descent -------------------------------------------------------------------------


def test_iwrm_step_matches_upgrad_of_the_jacobian() -> None:
    model = nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.3), nn.ReLU(), nn.Linear(4, 1))
    model = model.to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model.modules(), batch_dim=0)
    losses = (model(randn_(6, 5)).squeeze(dim=1) - randn_(6)) ** 2
    jacobian = autograd_jacobian(losses, trainable(model))
    expected = UPGrad()(jacobian)
    gramian = engine.compute_gramian(losses)
    losses.backward(UPGradWeighting()(gramian))
    update = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    tolerance = 1e-10 if torch.float64 == DTYPE else 1e-5
    assert torch.allclose(
        update, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item()
    )


def test_iwmtl_step_matches_upgrad_of_the_flattened_jacobian() -> None:
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(
        device=DEVICE, dtype=DTYPE
    )
    engine = Engine(model.modules(), batch_dim=0)
    losses = model(randn_(4, 5)) ** 2  # [batch, task]
    expected = UPGrad()(autograd_jacobian(losses, trainable(model)))
    gramian = engine.compute_gramian(losses)
    assert gramian.shape == (4, 3, 3, 4)
    weights = Flattening(UPGradWeighting())(gramian)
    assert weights.shape == (4, 3)
    losses.backward(weights)
    update = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    tolerance = 1e-10 if torch.float64 == DTYPE else 1e-5
    assert torch.allclose(
        update, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item()
    )


class _ReadsAndCallsChild(nn.Module):
    """A parent that calls its child and also reads the child's weight directly."""

    def __init__(self) -> None:
        super().__init__()
        self.child = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.child(x) @ self.child.weight.T
        return out


@pytest.mark.parametrize(
    "kind", ["parent-reads-called-child", "parameter-in-the-loss", "batch-statistics-in-the-loss"]
)
def test_unseen_uses_are_detected_on_the_first_call(kind: str) -> None:
    """What the hooks cannot see makes ``1ᵀG1 ≠ ‖∇ Σ output‖²``: an error, not a wrong result."""
    model: nn.Module = _ReadsAndCallsChild() if kind == "parent-reads-called-child" else mlp()
    model = model.to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model.modules(), batch_dim=0)
    if kind == "parent-reads-called-child":
        output = model(randn_(3, 4)).sum(dim=1)
    else:
        output = model(randn_(3, 5)).sum(dim=1)
        if kind == "parameter-in-the-loss":
            output = output + next(model.parameters()).sum()
        else:
            output = output - output.mean()
    message = "The Gramian does not match the gradients of the output"
    with pytest.raises(ValueError, match=re.escape(message)):
        engine.compute_gramian(output)


def test_validation_tolerates_rounding_but_not_a_missing_contribution() -> None:
    """Two backward passes round differently: a relative difference below √eps passes the first
    call's check, one of 1% (a missed use) does not. (In float64, where the former tolerance,
    1e3·eps, refused the Gramian of a fuzzed model that matched autograd's to 1e-16.)
    """
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    model = model.to(device=DEVICE, dtype=torch.float64)
    engine = Engine(model, batch_dim=0)
    output = model(torch.randn(3, 5, dtype=torch.float64, device=DEVICE)).sum(dim=1)
    gramian = autograd_gramian(output, trainable(model))
    engine._validate(output, gramian * (1.0 + 1e-9), 0.0)
    with pytest.raises(ValueError, match="The Gramian does not match"):
        engine._validate(output, gramian * 1.01, 0.0)


class _DeadBranch(nn.Module):
    """A branch whose output gradient is zero at every sample, batched as ``[B, B, 5]``."""

    def __init__(self) -> None:
        super().__init__()
        self.dead = nn.Linear(5, 3)
        self.live = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.live(x) + 0.0 * self.dead(x)
        return out


def test_ambiguous_batch_dimension_of_a_call_with_zero_gradients() -> None:
    """Zero gradients tell the probes nothing, but such a call adds nothing to the Gramian."""
    model = _DeadBranch().to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model.modules(), batch_dim=0)
    output = model(randn_(3, 3, 5)).sum(dim=(1, 2))  # the samples along dimension 0 of x
    expected = autograd_gramian(output, trainable(model))
    assert_gramians_close(engine.compute_gramian(output), expected)


def test_ambiguous_batch_dimension_with_zero_gradient_samples() -> None:
    """The first and the last samples have zero gradients (padding, say): the other samples
    still tell where the samples lie.
    """
    model = nn.Linear(5, 2).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(model, batch_dim=0)
    mask = tensor_([0.0, 1.0, 1.0, 0.0])
    output = model(randn_(4, 4, 5)).square().sum(dim=(1, 2)) * mask
    expected = autograd_gramian(output, trainable(model))
    assert_gramians_close(engine.compute_gramian(output), expected)
