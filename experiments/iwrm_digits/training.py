"""One training run: SGD with a constant learning rate, one objective per example, three paths.

- ``"sgd"``: plain ERM, ``losses.mean().backward()`` (the time reference);
- ``"autojac"``: ``torchjd.autojac.backward(losses, aggregator)``, the 32-row Jacobian aggregated;
- ``"autogram"``: ``Engine.compute_gramian(losses)``, a weighting, ``losses.backward(weights)``.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import SGD

from torchjd.aggregation import (
    MGDA,
    Aggregator,
    DualProj,
    DualProjWeighting,
    Mean,
    MeanWeighting,
    MGDAWeighting,
    PCGrad,
    PCGradWeighting,
    UPGrad,
    UPGradWeighting,
    Weighting,
)
from torchjd.autogram import Engine
from torchjd.autojac import backward
from torchjd.linalg import PSDMatrix

from .data import Subset, batch_order
from .model import make_model

# The initial loss is ln 10 ≈ 2.3; a batch whose mean loss reaches 100 belongs to a diverged run.
DIVERGENCE_LOSS = 100.0

Path = Literal["sgd", "autojac", "autogram"]

# Each entry builds a fresh (aggregator, weighting) pair: PCGrad's weighting draws random orders.
METHODS: dict[str, Callable[[], tuple[Aggregator, Weighting[PSDMatrix]]]] = {
    "Mean": lambda: (Mean(), MeanWeighting()),
    "UPGrad": lambda: (UPGrad(), UPGradWeighting()),
    "DualProj": lambda: (DualProj(), DualProjWeighting()),
    "MGDA": lambda: (MGDA(), MGDAWeighting()),
    "PCGrad": lambda: (PCGrad(), PCGradWeighting()),
}


@dataclass(frozen=True)
class RunResult:
    """What one run records, on the CPU.

    Attributes:
        losses: ``[steps]`` mean loss of each step's batch, before the step; ``inf`` after a
            divergence (a batch loss of ``DIVERGENCE_LOSS`` or more, or NaN, stops the run).
        cosines: ``[steps]`` cosine between the update and the batch's mean gradient (the SGD
            update), computed from the Gramian on the autogram path; ``None`` on the other paths.
        seconds_per_epoch: Wall time of the training loop per epoch (data already on the device).
        cpu_seconds_per_epoch: CPU time of the process per epoch, all threads: on a shared CPU
            machine it depends much less on the neighbours than the wall time.
    """

    losses: Tensor
    cosines: Tensor | None
    seconds_per_epoch: float
    cpu_seconds_per_epoch: float


def _gramian_cosine(gramian: Tensor, weights: Tensor) -> Tensor:
    # cos(Jᵀw, Jᵀ1/m) = wᵀG1 / (√(wᵀGw) √(1ᵀG1)): exact from the Gramian, no extra backward.
    g_w = gramian @ weights
    g_one = gramian.sum(dim=1)
    denominator = (weights @ g_w).clamp(min=0).sqrt() * g_one.sum().clamp(min=0).sqrt()
    return (weights @ g_one) / denominator.clamp(min=torch.finfo(gramian.dtype).tiny)


def train(
    method: str,
    path: Path,
    lr: float,
    seed: int,
    subset: Subset,
    n_epochs: int,
    batch_size: int = 32,
) -> RunResult:
    """Train the CNN on ``subset`` from the seed's initialisation and record its curves.

    Args:
        method: A key of ``METHODS`` (ignored on the ``"sgd"`` path).
        path: ``"sgd"``, ``"autojac"`` or ``"autogram"``.
        lr: The constant learning rate of ``torch.optim.SGD`` (no momentum, no weight decay).
        seed: Fixes the initial parameters and the order of the batches.
        subset: The training data.
        n_epochs: The number of passes over ``subset``.
        batch_size: The number of examples, hence of objectives, per step.
    """
    if method not in METHODS:
        raise ValueError(f"Parameter `method` must be one of {list(METHODS)}. Found {method!r}.")
    device = subset.images.device
    model = make_model(seed, device)
    optimizer = SGD(model.parameters(), lr=lr)
    aggregator, weighting = METHODS[method]()
    engine = Engine(model.modules(), batch_dim=0) if path == "autogram" else None
    batches = batch_order(seed, len(subset.labels), batch_size, n_epochs)
    losses = torch.full((len(batches),), float("inf"), device=device)
    cosines = torch.full((len(batches),), float("nan"), device=device)

    # PCGrad's weighting draws random orders from the global generator: make each run reproducible.
    torch.manual_seed(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    steps_done = 0
    for step, indices in enumerate(batches):
        indices = indices.to(device)
        output = model(subset.images[indices])
        step_losses: Tensor = F.cross_entropy(output, subset.labels[indices], reduction="none")
        mean_loss = step_losses.detach().mean()
        # A diverged run is over. Stopping while the loss is still moderate (and finite) also
        # keeps the Jacobian finite, which torchjd checks (on accelerators with a device-side
        # assertion, fatal to the process). One host read per step; NaN fails the comparison.
        if not bool(mean_loss < DIVERGENCE_LOSS):
            break
        losses[step] = mean_loss
        optimizer.zero_grad()
        if path == "sgd":
            # torch leaves `Tensor.backward` unannotated, hence the ignores.
            step_losses.mean().backward()  # type: ignore[no-untyped-call]
        elif path == "autojac":
            backward(step_losses, aggregator)
        else:
            assert engine is not None
            gramian = engine.compute_gramian(step_losses)
            weights = weighting(gramian)
            cosines[step] = _gramian_cosine(gramian.detach(), weights.detach())
            step_losses.backward(weights)  # type: ignore[no-untyped-call]
        optimizer.step()
        steps_done = step + 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start

    epochs_done = max(steps_done, 1) / (len(batches) // n_epochs)
    return RunResult(
        losses=losses.cpu(),
        cosines=cosines.cpu() if path == "autogram" else None,
        seconds_per_epoch=elapsed / epochs_done,
        cpu_seconds_per_epoch=cpu_elapsed / epochs_done,
    )
