"""The outputs: a Markdown table and two figures (loss curves, cosine to the SGD update)."""

import math
import statistics
from collections.abc import Mapping
from pathlib import Path as FilePath

import matplotlib as mpl

mpl.use("Agg")  # files only: no display needed, and no GUI backend is picked up by accident

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from .experiment import MethodResult
from .selection import auc, mean_and_sem
from .training import Path as RunPath


def _format(mean: float, sem: float) -> str:
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.1f}" if math.isnan(sem) else f"{mean:.1f} ± {sem:.1f}"


def markdown_table(results: Mapping[str, MethodResult], cpu_time: bool) -> str:
    """One row per (method, path): the chosen rate, the AUC (mean ± SEM), and the time per epoch.

    The times are medians over the seeds of the training loop's wall and CPU seconds per epoch;
    the ratio to plain SGD (``losses.mean().backward()``) uses the CPU time when ``cpu_time``
    (a shared CPU machine: the wall time depends on the neighbours), else the wall time.

    Args:
        results: The output of ``run_experiment``; it must contain ``"SGD"``.
        cpu_time: Whether the ratio uses the CPU time instead of the wall time.
    """
    sgd_wall, sgd_cpu = _median_times(results["SGD"], "sgd")
    reference = "CPU" if cpu_time else "wall"
    lines = [
        "| Method | Path | Learning rate | AUC (mean ± SEM) | Wall s / epoch | CPU s / epoch "
        f"| × SGD ({reference} time) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, result in results.items():
        for path, runs in result.runs.items():
            mean, sem = mean_and_sem([auc(r.losses) for r in runs])
            wall, cpu = _median_times(result, path)
            ratio = cpu / sgd_cpu if cpu_time else wall / sgd_wall
            all_diverged = bool(result.search) and not any(
                math.isfinite(mean_and_sem(areas)[0]) for areas in result.search.values()
            )
            lr = f"{result.lr:.3g}" + (" (every rate diverged)" if all_diverged else "")
            lines.append(
                f"| {method} | {path} | {lr} | {_format(mean, sem)} | "
                f"{wall:.3f} | {cpu:.3f} | {ratio:.1f} |"
            )
    return "\n".join(lines)


def _median_times(result: MethodResult, path: RunPath) -> tuple[float, float]:
    # The median resists the other processes of a shared machine better than the mean.
    runs = result.runs[path]
    wall = statistics.median(r.seconds_per_epoch for r in runs)
    return wall, statistics.median(r.cpu_seconds_per_epoch for r in runs)


def _band(ax: Axes, curves: Tensor, label: str) -> None:
    # Mean ± standard error over the seeds, step by step; steps after a divergence are not drawn.
    curves = curves.double()
    curves = torch.where(torch.isfinite(curves), curves, torch.nan)
    n = curves.shape[0]
    mean = curves.mean(dim=0)
    sem = curves.std(dim=0) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    steps = torch.arange(1, curves.shape[1] + 1)
    (line,) = ax.plot(steps.numpy(), mean.numpy(), label=label, linewidth=1.2)
    ax.fill_between(
        steps.numpy(),
        (mean - sem).numpy(),
        (mean + sem).numpy(),
        color=line.get_color(),
        alpha=0.25,
    )


def loss_figure(results: Mapping[str, MethodResult], path: FilePath, title: str) -> None:
    """The training-loss curves at the chosen rates (autogram path; plain SGD for reference).

    Args:
        results: The output of ``run_experiment``.
        path: Where to write the PNG.
        title: The figure's title.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, result in results.items():
        if method == "SGD":
            continue
        curves = torch.stack([r.losses for r in result.runs["autogram"]])
        _band(ax, curves, f"{method} (lr {result.lr:.3g})")
    ax.set_yscale("log")
    _save(fig, ax, path, title, "mean batch loss (before the step)")


def cosine_figure(results: Mapping[str, MethodResult], path: FilePath, title: str) -> None:
    """The cosine between each update and the SGD update (the batch's mean gradient), per step.

    Args:
        results: The output of ``run_experiment``.
        path: Where to write the PNG.
        title: The figure's title.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, result in results.items():
        if method == "SGD":
            continue
        cosines = [r.cosines for r in result.runs["autogram"] if r.cosines is not None]
        _band(ax, torch.stack(cosines), method)
    _save(fig, ax, path, title, "cosine(update, mean gradient)")


def _save(fig: Figure, ax: Axes, path: FilePath, title: str, ylabel: str) -> None:
    """Label the per-step axes, write the figure as PNG and close it."""
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    # On a log scale, the minor grid lines mark the values between the decades.
    ax.grid(alpha=0.3, which="both" if ax.get_yscale() == "log" else "major")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
