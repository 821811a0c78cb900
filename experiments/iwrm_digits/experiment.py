"""The protocol: learning-rate search on the Gramian path, then the chosen rates on every path."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm  # type: ignore[import-untyped]

from .data import Subset, load_subset
from .selection import auc, mean_and_sem, refined_grid, select_lr
from .training import Path, RunResult, train


@dataclass(frozen=True)
class Settings:
    """What a run of the experiment does.

    Attributes:
        methods: The aggregators, keys of ``training.METHODS``.
        grid: The first (coarse) grid of learning rates.
        refine: The number of rates of the refined grid around the two best (0: no refinement).
        seeds: The seeds ``0 .. seeds - 1``: one subset, initialisation and batch order each.
        epochs: Passes over each 1024-example subset (32 steps each at batch 32).
        batch_size: Examples, hence objectives, per step.
        subset_size: Examples per subset.
        device: Where the model and data live.
    """

    methods: Sequence[str]
    grid: Sequence[float]
    refine: int
    seeds: int
    epochs: int
    batch_size: int = 32
    subset_size: int = 1024
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class MethodResult:
    """The outcome for one aggregator (or plain SGD).

    Attributes:
        lr: The chosen learning rate.
        search: The areas of every rate tried, one per seed (autogram path).
        runs: The runs at the chosen rate, per path, one per seed.
    """

    lr: float
    search: dict[float, list[float]]
    runs: dict[Path, list[RunResult]]


def run_experiment(settings: Settings, progress: bool = True) -> dict[str, MethodResult]:
    """Run the whole protocol and return one result per aggregator, plus ``"SGD"`` (plain ERM).

    For each aggregator, every rate of the grid is trained with every seed on the autogram path
    (its weighting from the Gramian), and the rate with the lowest mean area under the loss curve
    wins (the paper selects per seed; one rate per aggregator keeps the table readable). The
    chosen rate is then trained again on the autojac path (the aggregator on the Jacobian), which
    must give the same curves, and plain SGD (``losses.mean().backward()``) runs at Mean's rate
    as the time reference.

    Args:
        settings: What to run.
        progress: Whether to show a progress bar.
    """
    subsets = [
        load_subset(seed, settings.device, settings.subset_size) for seed in range(settings.seeds)
    ]
    n_methods = len(settings.methods)
    planned = (
        n_methods * settings.seeds * (len(settings.grid) + settings.refine + 1) + settings.seeds
    )
    bar = tqdm(total=planned, disable=not progress, unit="run", desc="IWRM digits")

    def run(method: str, path: Path, lr: float, seed: int, subset: Subset) -> RunResult:
        bar.set_postfix_str(f"{method} {path} lr={lr:.3g} seed={seed}")
        result = train(method, path, lr, seed, subset, settings.epochs, settings.batch_size)
        bar.update()
        return result

    results: dict[str, MethodResult] = {}
    for method in settings.methods:
        curves: dict[float, list[RunResult]] = {}
        for lr in settings.grid:
            curves[lr] = [run(method, "autogram", lr, s, d) for s, d in enumerate(subsets)]
        if settings.refine:
            means = {lr: mean_and_sem([auc(r.losses) for r in rs])[0] for lr, rs in curves.items()}
            refined = [lr for lr in refined_grid(means, settings.refine) if lr not in curves]
            bar.update(settings.seeds * (settings.refine - len(refined)))  # rates already run
            for lr in refined:
                curves[lr] = [run(method, "autogram", lr, s, d) for s, d in enumerate(subsets)]
        search = {lr: [auc(r.losses) for r in runs] for lr, runs in curves.items()}
        lr = select_lr(search)
        autojac_runs = [run(method, "autojac", lr, s, d) for s, d in enumerate(subsets)]
        results[method] = MethodResult(
            lr, search, {"autogram": curves[lr], "autojac": autojac_runs}
        )

    sgd_lr = results["Mean"].lr if "Mean" in results else settings.grid[0]
    sgd_runs = [run("Mean", "sgd", sgd_lr, s, d) for s, d in enumerate(subsets)]
    results["SGD"] = MethodResult(sgd_lr, {}, {"sgd": sgd_runs})
    bar.close()
    return results
