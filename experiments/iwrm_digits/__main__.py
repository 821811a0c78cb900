"""Command line: ``python -m experiments.iwrm_digits [--full] [--device cuda] [--out DIR] ...``."""

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .experiment import Settings, run_experiment
from .report import cosine_figure, loss_figure, markdown_table
from .selection import log_grid
from .training import METHODS

# Default: a coarse grid (half-decade steps, 1e-3 to 1e1: PCGrad sums 32 projected gradients and
# needs rates ~30× smaller than Mean's), 3 seeds, 20 epochs (640 steps): 3.4 min on 2 quiet CPU
# cores (1.7 min with 10 epochs), more on a shared machine.
# --full: the paper's protocol (users.md §3.2): 22 rates from 1e-5 to 1e2, 50 refined, 8 seeds,
# 20 epochs (640 iterations, as for CIFAR-10).


@dataclass(frozen=True)
class Preset:
    """A protocol size: the grid ``10**low .. 10**high``, refined rates, seeds and epochs."""

    low: float
    high: float
    per_decade: int
    refine: int
    seeds: int
    epochs: int


DEFAULT = Preset(low=-3.0, high=1.0, per_decade=2, refine=0, seeds=3, epochs=20)
FULL = Preset(low=-5.0, high=2.0, per_decade=3, refine=50, seeds=8, epochs=20)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.iwrm_digits",
        description="IWRM on scikit-learn's digits: Jacobian descent (torchjd) against SGD.",
    )
    parser.add_argument("--full", action="store_true", help="the paper-size protocol (hours)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 3, --full 8)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 20, --full 20)")
    parser.add_argument(
        "--lrs", type=float, nargs="+", help="the learning rates to try (overrides the grid)"
    )
    parser.add_argument(
        "--refine", type=int, help="rates of the refined grid (default 0, --full 50)"
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="aggregators"
    )
    parser.add_argument("--subset-size", type=int, default=1024, help="examples per subset")
    parser.add_argument("--batch-size", type=int, default=32, help="examples (objectives) per step")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the experiment and write ``table.md``, ``loss.png`` and ``cosine.png`` to ``--out``."""
    args = parse_args(argv)
    preset = FULL if args.full else DEFAULT
    if args.threads:
        torch.set_num_threads(args.threads)
    grid: list[float] = args.lrs or log_grid(preset.low, preset.high, preset.per_decade)
    settings = Settings(
        methods=args.methods,
        grid=grid,
        refine=preset.refine if args.refine is None else args.refine,
        seeds=args.seeds or preset.seeds,
        epochs=args.epochs or preset.epochs,
        batch_size=args.batch_size,
        subset_size=args.subset_size,
        device=torch.device(args.device),
    )
    print(
        f"IWRM on load_digits ({'--full' if args.full else 'default'} settings): "
        f"{len(settings.methods)} aggregators ({', '.join(settings.methods)}) + plain SGD, "
        f"{settings.seeds} seeds, {settings.epochs} epochs of "
        f"{settings.subset_size // settings.batch_size} steps (subsets of {settings.subset_size} "
        f"digits, batch {settings.batch_size}), {len(grid)} learning rates ({grid[0]:.3g} to "
        f"{grid[-1]:.3g}) + {settings.refine} refined, on {settings.device} "
        f"({torch.get_num_threads()} CPU threads)."
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    results = run_experiment(settings, progress=not args.no_progress)
    minutes = (time.perf_counter() - start) / 60
    # On a shared machine the wall time depends on the neighbours; the CPU time much less.
    cpu_minutes = (time.process_time() - cpu_start) / 60

    args.out.mkdir(parents=True, exist_ok=True)
    what = (
        f"{settings.seeds} seeds, {settings.epochs} epochs, {settings.subset_size} digits, "
        f"batch {settings.batch_size}"
    )
    loss_figure(results, args.out / "loss.png", f"IWRM on digits: training loss ({what})")
    cosine_figure(results, args.out / "cosine.png", f"Cosine to the SGD update ({what})")
    table = markdown_table(results, cpu_time=settings.device.type == "cpu")
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    print(
        f"Done in {minutes:.1f} min ({cpu_minutes:.1f} min of CPU time). "
        f"Wrote {args.out}/table.md, loss.png and cosine.png."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
