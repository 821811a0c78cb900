"""Each closed-form rule agrees with the generic rule (and with autograd) on the same module."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn

from settings import DEVICE, DTYPE
from torchjd.autogram import Engine
from torchjd.autogram._generic_rule import GenericRule
from torchjd.autogram._gram import linear_gramian, linear_jacobian, sum_gramian
from torchjd.autogram._registry import rule_for
from unit.autogram._reference import assert_gramians_close, autograd_gramian, trainable
from utils.tensors import randn_


def generic_twin(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose class overrides ``forward`` (so it gets the generic rule)."""
    base = type(module)

    def forward(self: nn.Module, *args: object) -> object:
        return base.forward(self, *args)

    twin = type(f"Generic{base.__name__}", (base,), {"forward": forward})
    copy: nn.Module = base.__new__(twin)
    copy.__dict__.update(module.__dict__)
    copy._parameters = dict(module._parameters)
    return copy


MODULES: list[tuple[Callable[[], nn.Module], Callable[[int], Tensor]]] = [
    (lambda: nn.Linear(5, 3), lambda b: torch.randn(b, 2, 5)),
    (lambda: nn.Linear(5, 3, bias=False), lambda b: torch.randn(b, 5)),
    (lambda: nn.Conv1d(2, 4, 3, stride=2, padding=2), lambda b: torch.randn(b, 2, 9)),
    (
        lambda: nn.Conv2d(
            4, 6, (3, 2), dilation=(2, 1), groups=2, padding_mode="reflect", padding=1
        ),
        lambda b: torch.randn(b, 4, 7, 6),
    ),
    (lambda: nn.Conv3d(2, 2, 3, padding="same", bias=False), lambda b: torch.randn(b, 2, 3, 4, 3)),
    (lambda: nn.ConvTranspose1d(2, 4, 3, stride=2, padding=1), lambda b: torch.randn(b, 2, 5)),
    (
        lambda: nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), groups=2, dilation=(1, 2)),
        lambda b: torch.randn(b, 4, 3, 4),
    ),
    (
        lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, output_padding=1, bias=False),
        lambda b: torch.randn(b, 2, 2, 3, 2),
    ),
    (  # Output padding beyond the stride: the geometry does not match, generic fallback.
        lambda: nn.ConvTranspose1d(2, 2, 3, stride=2, dilation=3, output_padding=2),
        lambda b: torch.randn(b, 2, 4),
    ),
    (lambda: nn.Embedding(7, 3, padding_idx=2), lambda b: torch.randint(0, 7, (b, 5))),
    (lambda: nn.Embedding(7, 3, max_norm=1.0), lambda b: torch.randint(0, 7, (b, 5))),
    (lambda: nn.Embedding(50, 3, padding_idx=0), lambda b: torch.randint(0, 50, (b, 2, 3))),
    (lambda: nn.Embedding(9, 3), lambda b: torch.randint(0, 3, (b, 2))),
    (lambda: nn.LayerNorm((2, 3)), lambda b: torch.randn(b, 4, 2, 3)),
    (lambda: nn.LayerNorm(3, bias=False), lambda b: torch.randn(b, 3)),
    (lambda: nn.GroupNorm(2, 4), lambda b: torch.randn(b, 4, 3, 2)),
    (lambda: nn.RMSNorm(3), lambda b: torch.randn(b, 2, 3)),
    (lambda: nn.InstanceNorm1d(3, affine=True), lambda b: torch.randn(b, 3, 4)),
    (lambda: nn.InstanceNorm2d(2, affine=True), lambda b: torch.randn(b, 2, 3, 3)),
    (
        lambda: nn.InstanceNorm3d(2, affine=True, track_running_stats=True).eval(),
        lambda b: torch.randn(b, 2, 2, 2, 3),
    ),
]


@pytest.mark.parametrize(("make", "make_input"), MODULES)
@pytest.mark.parametrize("batch_dim", [0, None])
def test_rule_matches_generic_rule_and_autograd(
    make: Callable[[], nn.Module], make_input: Callable[[int], Tensor], batch_dim: int | None
) -> None:
    module = make().to(device=DEVICE, dtype=DTYPE)
    for p in module.parameters():  # Norm layers start at 1 and 0: make every entry count.
        p.data.normal_()
    twin = generic_twin(module)
    assert not isinstance(rule_for(module), GenericRule)
    assert isinstance(rule_for(twin), GenericRule)
    x = make_input(3)
    x = x.to(device=DEVICE) if not x.is_floating_point() else x.to(device=DEVICE, dtype=DTYPE)
    outputs = []
    gramians = []
    for candidate in (module, twin):
        engine = Engine(candidate, batch_dim=batch_dim)
        output = torch.tanh(candidate(x)).flatten(start_dim=1).sum(dim=1)
        outputs.append(output)
        gramians.append(engine.compute_gramian(output))
        engine.close()
    expected = autograd_gramian(outputs[0], trainable(module))
    assert_gramians_close(gramians[0], expected)
    assert_gramians_close(gramians[1], expected)


def test_subclass_with_own_forward_gets_generic_rule() -> None:
    class Scaled(nn.Linear):
        def forward(self, input: Tensor) -> Tensor:
            return 2 * super().forward(input)

    class Plain(nn.Linear):
        pass

    assert isinstance(rule_for(Scaled(2, 2)), GenericRule)
    assert not isinstance(rule_for(Plain(2, 2)), GenericRule)


def test_computed_parameters_get_generic_rule() -> None:
    """A closed form reads ``module.weight`` as a parameter: a weight computed from others
    (``parametrize``, or the hook of the older ``weight_norm``) hands the module to the generic
    rule, and the modules computing a parametrization are not hooked.
    """
    parametrized = nn.utils.parametrizations.weight_norm(nn.Linear(2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        hooked = nn.utils.weight_norm(nn.Linear(2, 2))
    recurrent = nn.utils.parametrizations.weight_norm(nn.GRU(2, 2), name="weight_hh_l0")
    attention = nn.MultiheadAttention(2, 1)
    nn.utils.parametrizations.weight_norm(attention.out_proj)
    for module in (parametrized, hooked, recurrent, attention):
        assert isinstance(rule_for(module), GenericRule)
    assert not isinstance(rule_for(nn.GRU(2, 2)), GenericRule)
    assert not isinstance(rule_for(nn.MultiheadAttention(2, 1)), GenericRule)
    engine = Engine(parametrized, batch_dim=0)
    assert len(engine._handles) == 2  # The pre-hook and the forward hook of the Linear only.


def test_embedding_scaled_by_frequency_is_exact() -> None:
    """``scale_grad_by_freq`` couples positions through counts: handled by the generic rule."""
    module = nn.Embedding(5, 3, scale_grad_by_freq=True).to(device=DEVICE, dtype=DTYPE)
    assert isinstance(rule_for(module), GenericRule)
    engine = Engine(module, batch_dim=0)
    output = module(torch.tensor([[1, 1, 2], [1, 3, 3]], device=DEVICE)).sum(dim=(1, 2))
    assert_gramians_close(
        engine.compute_gramian(output), autograd_gramian(output, trainable(module))
    )


@pytest.mark.parametrize(
    ("n_rows", "n_slots", "n_positions", "d", "p"),
    [(1, 4, 1, 5, 3), (2, 3, 1, 2, 2), (1, 3, 2, 4, 3), (2, 2, 3, 6, 5), (1, 2, 40, 2, 3)],
)
def test_linear_gramian_forms(n_rows: int, n_slots: int, n_positions: int, d: int, p: int) -> None:
    """Ghost form (few positions) and materialised form (many) both equal ``J Jᵀ``."""
    a = randn_(n_slots, n_positions, d)
    g = randn_(n_rows, n_slots, n_positions, p)
    jacobian = linear_jacobian(a, g).reshape(n_rows * n_slots, -1)
    assert_gramians_close(linear_gramian(a, g), jacobian @ jacobian.T)
    sums = g.sum(dim=2).reshape(n_rows * n_slots, -1)
    assert_gramians_close(sum_gramian(g), sums @ sums.T)
    # With the bias counted in (a constant input 1), in both forms.
    with_bias = torch.cat([jacobian, sums], dim=1)
    assert_gramians_close(linear_gramian(a, g, bias=True), with_bias @ with_bias.T)


@pytest.mark.parametrize("frozen", ["weights", "biases", "none"])
@pytest.mark.parametrize("positions", [1, 40])
def test_weight_and_bias_are_counted_separately(frozen: str, positions: int) -> None:
    """A Linear layer and an attention layer with only their biases or only their weights
    trainable: the rules count each parameter on its own (ghost and materialised forms)."""
    model = nn.Sequential(nn.Linear(4, 6), nn.MultiheadAttention(6, 2, batch_first=True))
    model = model.to(device=DEVICE, dtype=DTYPE)
    for name, p in model.named_parameters():
        if frozen != "none" and frozen[:-1] in name:  # "weight" / "bias"
            p.requires_grad_(False)
    engine = Engine(model, batch_dim=0)
    x = model[0](randn_(3, positions, 4))
    out, _ = model[1](x, x, x, need_weights=False)
    output = torch.tanh(out).sum(dim=(1, 2))
    gramian = engine.compute_gramian(output)
    assert_gramians_close(gramian, autograd_gramian(output, trainable(model)))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", ["self", "cross", "eval-dropout", "unbatched"])
@pytest.mark.parametrize("batch_dim", [0, None])
def test_attention_rule(batch_first: bool, bias: bool, mode: str, batch_dim: int | None) -> None:
    """The rebuilt attention (no dropout active, no mask) agrees with autograd."""
    dropout = 0.3 if mode == "eval-dropout" else 0.0
    module = nn.MultiheadAttention(6, 2, dropout=dropout, bias=bias, batch_first=batch_first)
    module = module.to(device=DEVICE, dtype=DTYPE)
    if mode == "eval-dropout":
        module.eval()
    assert not isinstance(rule_for(module), GenericRule)
    engine = Engine(module, batch_dim=batch_dim if mode != "unbatched" else None)
    shape = (3, 4, 6) if batch_first else (4, 3, 6)
    query = randn_(*shape) if mode != "unbatched" else randn_(4, 6)
    source = randn_(*shape[:-1], 6) if mode == "cross" else query
    out, _ = module(query, source, source, need_weights=mode == "self")
    output = torch.tanh(out).sum(dim=-1)
    if mode != "unbatched" and not batch_first:
        output = output.T  # [batch, sequence]
    gramian = engine.compute_gramian(output)
    assert_gramians_close(gramian, autograd_gramian(output, trainable(module)))


def test_attention_rule_falls_back_for_masks_and_weights() -> None:
    module = nn.MultiheadAttention(6, 2, batch_first=True).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(module, batch_dim=0)
    x = randn_(3, 4, 6)
    padding = torch.tensor([[False] * 4, [False, False, True, True], [False] * 4], device=DEVICE)
    out, weights = module(x, x, x, key_padding_mask=padding)
    assert weights is not None
    output = torch.tanh(out).sum(dim=(1, 2)) + weights.sum(dim=(1, 2)) ** 2
    gramian = engine.compute_gramian(output)
    assert_gramians_close(gramian, autograd_gramian(output, trainable(module)))


@contextmanager
def _cudnn_rnn_fallback() -> Iterator[None]:
    """cuDNN's RNN backward has no vmap batching rule: on CUDA, the generic rule (used with
    dropout and packed sequences) back-propagates the rows one by one, with a warning.
    """
    with warnings.catch_warnings():
        if DEVICE.type == "cuda":
            warnings.filterwarnings("ignore", message="The Gramian of a .* torch.vmap")
        yield


@pytest.mark.parametrize("kind", ["rnn-relu", "lstm", "gru"])
@pytest.mark.parametrize("mode", ["plain", "initial-state", "no-bias", "unbatched", "dropout"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_rule(kind: str, mode: str, batch_first: bool) -> None:
    """The rebuilt recurrence (or, with active dropout, the generic rule) agrees with autograd."""
    options: dict[str, object] = {"bias": mode != "no-bias", "batch_first": batch_first}
    if mode == "dropout":
        options.update(num_layers=2, dropout=0.5)
    module: nn.Module
    if kind == "rnn-relu":
        module = nn.RNN(3, 4, nonlinearity="relu", **options)
    elif kind == "lstm":
        module = nn.LSTM(3, 4, **options)
    else:
        module = nn.GRU(3, 4, bidirectional=True, **options)
    module = module.to(device=DEVICE, dtype=DTYPE)
    assert not isinstance(rule_for(module), GenericRule)
    batch_dim = None if mode == "unbatched" else 0
    engine = Engine(module, batch_dim=batch_dim)
    shape = (3, 5, 3) if batch_first else (5, 3, 3)
    x = randn_(5, 3) if mode == "unbatched" else randn_(*shape)
    args: tuple[object, ...] = (x,)
    if mode == "initial-state":
        n_dirs = 2 if kind == "gru" else 1
        h0 = randn_(n_dirs, 3, 4)
        args = (x, (h0, randn_(1, 3, 4))) if kind == "lstm" else (x, h0)
    out, state = module(*args)
    final = state[0] if isinstance(state, tuple) else state
    output = torch.tanh(out).sum(dim=-1)  # [B, T], [T, B] or [T]
    if mode != "unbatched":
        output = output if batch_first else output.T
        output = output + final[-1].sum(dim=-1, keepdim=True)
    with _cudnn_rnn_fallback():
        gramian = engine.compute_gramian(output)
    assert_gramians_close(gramian, autograd_gramian(output, trainable(module)))


@pytest.mark.parametrize("batch_dim", [0, None])
def test_recurrent_packed_sequence(batch_dim: int | None) -> None:
    """Packed sequences go through the generic rule: per-sample final states stay exact."""
    module = nn.LSTM(3, 4, batch_first=True).to(device=DEVICE, dtype=DTYPE)
    engine = Engine(module, batch_dim=batch_dim)
    lengths = torch.tensor([5, 3, 2])
    packed = nn.utils.rnn.pack_padded_sequence(randn_(3, 5, 3), lengths, batch_first=True)
    _, (h, _) = module(packed)
    output = torch.tanh(h[0]).sum(dim=1)
    with _cudnn_rnn_fallback():
        gramian = engine.compute_gramian(output)
    assert_gramians_close(gramian, autograd_gramian(output, trainable(module)))


class _NoBatchingRule(torch.autograd.Function):
    """``x ↦ 2x``, whose backward reads a value on the host: torch.vmap cannot batch it."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x * 2.0

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad * 2.0 if float(grad.abs().sum()) >= 0.0 else grad


class _UnbatchableLinear(nn.Linear):
    def forward(self, input: Tensor) -> Tensor:
        doubled: Tensor = _NoBatchingRule.apply(super().forward(input))  # type: ignore[no-untyped-call]
        return doubled


@pytest.mark.parametrize("batch_dim", [0, None])
def test_generic_rule_without_vmap_falls_back_to_rows(batch_dim: int | None) -> None:
    """A backward that vmap cannot batch: the rows are back-propagated one by one, exactly."""
    model = nn.Sequential(_UnbatchableLinear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model = model.to(device=DEVICE, dtype=DTYPE)
    assert isinstance(rule_for(model[0]), GenericRule)
    engine = Engine(model, batch_dim=batch_dim)
    output = model(randn_(5, 3)).sum(dim=1)
    with pytest.warns(UserWarning, match="one by one"):
        gramian = engine.compute_gramian(output)
    assert_gramians_close(gramian, autograd_gramian(output, trainable(model)))
