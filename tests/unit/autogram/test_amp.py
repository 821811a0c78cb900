"""The Engine under ``torch.autocast``: the Gramian of float32 losses computed by a model whose
layers run in float16 or bfloat16 matches plain autograd's to the precision of that dtype.

The models are float32 whatever ``PYTEST_TORCH_DTYPE`` says: autocast leaves float64 alone.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from settings import DEVICE
from torchjd.autogram import Engine
from unit.autogram._reference import autograd_gramian, trainable
from unit.autogram._zoo import CASES, Case

# oneDNN has no CPU kernel for an LSTM under autocast: torch itself fails in the forward pass.
_SKIPPED = {"LSTM"} if DEVICE.type == "cpu" else set()

PARAMETRIZATION = [
    pytest.param(case, batch_dim, id=f"{case}-bd{batch_dim}")
    for case in CASES
    if not any(name in case.name for name in _SKIPPED)
    for batch_dim in case.batch_dims
]

_HALF = [torch.float16, torch.bfloat16]

# torch's RMSNorm under autocast: its fused kernel needs the input and the weight in one dtype.
pytestmark = pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")


def _float32(x: Tensor) -> Tensor:
    return x.float() if x.is_floating_point() else x


def _relative_error(actual: Tensor, expected: Tensor) -> float:
    assert bool(expected.isfinite().all())
    assert expected.abs().max().item() > 0  # A zero reference would prove nothing.
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _autocast_output(
    case: Case, dtype: torch.dtype, batch_dim: int | None
) -> tuple[nn.Module, Engine, Tensor]:
    torch.manual_seed(0)
    model = case.model().to(device=DEVICE, dtype=torch.float32)
    engine = Engine(model.modules(), batch_dim=batch_dim)
    with torch.autocast(device_type=DEVICE.type, dtype=dtype):
        # A float32 output, like the losses that autocast computes in float32.
        output = case.forward(model, _float32(case.input(3))).float()
    return model, engine, output


@pytest.mark.parametrize("dtype", _HALF, ids=str)
@pytest.mark.parametrize(("case", "batch_dim"), PARAMETRIZATION)
def test_gramian_under_autocast(case: Case, batch_dim: int | None, dtype: torch.dtype) -> None:
    """Within 2 eps of the half dtype (measured: at most 0.52 eps over the zoo), and float32."""
    model, engine, output = _autocast_output(case, dtype, batch_dim)
    gramian = engine.compute_gramian(output)
    assert gramian.dtype == torch.float32
    expected = autograd_gramian(output, trainable(model))
    assert _relative_error(gramian, expected) <= 2 * torch.finfo(dtype).eps


@pytest.mark.parametrize(
    "name", ["mlp-2d", "cnn-groupnorm", "norms", "embedding", "transformer-batch-first"]
)
def test_scaled_losses_do_not_overflow_float16(name: str) -> None:
    """Losses scaled (as by a GradScaler) so that the Jacobian's largest entry is 1000: its
    entries fit in float16, their products (up to 1e6) do not. The closed-form rules multiply
    in float32, the dtype of the Gramian, so the Gramian is finite, as autograd's is."""
    case = next(case for case in CASES if case.name == name)
    model, engine, output = _autocast_output(case, torch.float16, 0)
    params = trainable(model)
    largest = max(
        g.abs().max()
        for row in output.reshape(-1)
        for g in torch.autograd.grad(row, params, retain_graph=True, allow_unused=True)
        if g is not None
    )
    scaled = output * (1000.0 / largest)
    gramian = engine.compute_gramian(scaled)
    assert _relative_error(gramian, autograd_gramian(scaled, params)) <= 2e-3
