"""Run every script of ``examples/`` on small sizes and check what it claims to show."""

import copy
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from settings import DEVICE
from torchjd.aggregation import UPGrad, UPGradWeighting
from torchjd.autogram import Engine

_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_DEVICE = str(DEVICE)


def _load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` without making ``examples`` a package."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", _EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _decreases(history: list[float], window: int = 5) -> bool:
    """The mean of the last ``window`` values is below that of the first ``window`` ones."""
    assert all(math.isfinite(value) for value in history)
    return sum(history[-window:]) < sum(history[:window])


def test_basic_usage() -> None:
    history = _load("basic_usage").main(n_batches=4, batch_size=8, device=_DEVICE)
    assert len(history) == 4
    assert all(math.isfinite(value) for value in history)


@pytest.mark.parametrize("name", ["iwrm_autojac", "iwrm_autogram", "partial_jd"])
def test_iwrm_loss_decreases(name: str) -> None:
    history = _load(name).main(steps=30, batch_size=8, device=_DEVICE)
    assert len(history) == 30
    assert _decreases(history)


def test_iwrm_autojac_and_autogram_give_the_same_update() -> None:
    autojac, autogram = _load("iwrm_autojac"), _load("iwrm_autogram")
    torch.manual_seed(0)
    model = autojac.make_model().to(DEVICE).to(torch.float64)
    twin = copy.deepcopy(model)
    inputs, targets = autojac.make_data(1, 16, _DEVICE)
    input, target = inputs[0].to(torch.float64), targets[0].to(torch.float64)

    autojac.compute_update(model, input, target, UPGrad())
    engine = Engine(twin.modules(), batch_dim=0)
    autogram.compute_update(engine, twin, input, target, UPGradWeighting())

    for param, twin_param in zip(model.parameters(), twin.parameters(), strict=True):
        assert param.grad is not None
        assert twin_param.grad is not None
        assert param.grad.abs().sum() > 0
        torch.testing.assert_close(param.grad, twin_param.grad, rtol=1e-7, atol=1e-9)


def test_iwmtl() -> None:
    history, weights = _load("iwmtl").main(steps=30, batch_size=4, n_tasks=3, device=_DEVICE)
    assert weights.shape == (4, 3)
    assert bool((weights >= 0).all())  # UPGrad's weights are non-negative
    assert _decreases(history)


def test_mtl() -> None:
    results = _load("mtl").main(steps=30, batch_size=16, device=_DEVICE)
    assert set(results) == {"Mean", "UPGrad", "DualProj", "MGDA"}
    for losses in results.values():
        assert len(losses) == 2
        assert all(math.isfinite(loss) and loss < 2.0 for loss in losses)


@pytest.mark.parametrize("batch_first", [True, False])
def test_rnn(batch_first: bool) -> None:
    history = _load("rnn").main(
        steps=30, batch_size=16, seq_len=4, batch_first=batch_first, lr=0.3, device=_DEVICE
    )
    assert _decreases(history)


def test_rnn_routes_agree() -> None:
    rnn = _load("rnn")
    autojac = rnn.main(steps=3, batch_size=4, seq_len=4, route="autojac", device=_DEVICE)
    autogram = rnn.main(
        steps=3, batch_size=4, seq_len=4, route="autogram", batch_first=False, device=_DEVICE
    )
    # Same seed, same data, same updates: the trajectories coincide (up to rounding).
    assert autojac == pytest.approx(autogram, rel=1e-3)


def test_monitoring() -> None:
    log = _load("monitoring").main(steps=5, batch_size=8, log_every=1, device=_DEVICE)
    assert len(log) == 5
    for entry in log:
        assert entry["weights"].shape == (3,)
        cosines = entry["cosines"]
        assert cosines.shape == (3, 3)
        assert bool(((cosines >= -1) & (cosines <= 1)).all())
        torch.testing.assert_close(cosines, cosines.T)
        torch.testing.assert_close(cosines.diagonal(), torch.ones_like(cosines.diagonal()))
        assert -1.0 <= float(entry["update_cosine"]) <= 1.0
        # UPGrad never moves against the mean gradient.
        assert float(entry["update_cosine"]) > 0


def test_monitoring_statistics_match_explicit_vectors() -> None:
    monitoring = _load("monitoring")
    jacobian = torch.randn(3, 7, dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    cosines, update_cosine = monitoring.gramian_statistics(jacobian @ jacobian.T, weights)
    unit = jacobian / jacobian.norm(dim=1, keepdim=True)
    torch.testing.assert_close(cosines, unit @ unit.T)
    expected = torch.nn.functional.cosine_similarity(weights @ jacobian, jacobian.mean(0), dim=0)
    torch.testing.assert_close(update_cosine, expected)


@pytest.mark.parametrize("amp_dtype", [None, torch.float16], ids=["default", "float16"])
@pytest.mark.parametrize("autogram", [False, True], ids=["autojac", "autogram"])
def test_mixed_precision(amp_dtype: torch.dtype | None, autogram: bool) -> None:
    """bfloat16 on the CPU, or float16 with a GradScaler: its first scale (65536) makes some
    steps overflow (two Gramians, on the autogram route), which are skipped."""
    history, model = _load("mixed_precision").main(
        steps=40, batch_size=8, device=_DEVICE, amp_dtype=amp_dtype, autogram=autogram
    )
    assert _decreases(history)
    for param in model.parameters():
        assert param.grad is not None
        assert param.grad.dtype == param.dtype == torch.float32
        assert bool(param.grad.isfinite().all())


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"
)
def test_lightning_mtl() -> None:
    pytest.importorskip("lightning")
    history = _load("lightning_mtl").main(epochs=3, n_examples=64, batch_size=16, device=_DEVICE)
    assert len(history) == 12
    assert _decreases(history, window=4)
