"""Learning-rate selection by the area under the training-loss curve, and the statistics."""

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def auc(losses: Tensor) -> float:
    """The area under a loss curve sampled once per step (trapezoidal rule, unit spacing).

    A curve with a non-finite value (a diverged run) has an infinite area, so that it is never
    selected.

    Args:
        losses: ``[steps]`` the loss at each step, on any device.

    Example:
        >>> auc(torch.tensor([3.0, 2.0, 1.0]))
        4.0
    """
    values = losses.detach().double().cpu()
    if not bool(torch.isfinite(values).all()):
        return math.inf
    return float(torch.trapezoid(values))


def mean_and_sem(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the standard error of the mean (sample standard deviation / √n).

    The standard error is NaN for fewer than two values, and infinite means stay infinite.

    Args:
        values: One value per seed.

    Example:
        >>> mean_and_sem([1.0, 3.0])
        (2.0, 1.0)
    """
    if len(values) == 0:
        raise ValueError("Parameter `values` must contain at least one value. Found none.")
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2 or not math.isfinite(mean):
        return mean, math.nan
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def log_grid(low_exponent: float, high_exponent: float, points_per_decade: int) -> list[float]:
    """Learning rates ``10**e`` for ``e`` from low to high in steps of ``1 / points_per_decade``.

    The paper's coarse grid is ``log_grid(-5, 2, 3)``: 22 rates from 1e-5 to 1e2.

    Args:
        low_exponent: The base-10 exponent of the smallest rate.
        high_exponent: The base-10 exponent of the largest rate.
        points_per_decade: The number of rates per factor of 10.

    Example:
        >>> [round(lr, 6) for lr in log_grid(-2, 0, 2)]
        [0.01, 0.031623, 0.1, 0.316228, 1.0]
    """
    count = round((high_exponent - low_exponent) * points_per_decade) + 1
    return [10 ** (low_exponent + k / points_per_decade) for k in range(count)]


def refined_grid(aucs: Mapping[float, float], n_points: int) -> list[float]:
    """``n_points`` rates log-spaced between the two best rates of a grid (the paper's 2nd stage).

    The refined range spans from the smaller to the larger of the two best rates (both included).
    Diverged rates (infinite area) are never among them; with fewer than two finite areas there
    is nothing to refine.

    Args:
        aucs: The mean area of each rate of the first grid.
        n_points: The number of rates of the refined grid.

    Example:
        >>> [round(lr, 4) for lr in refined_grid({0.01: 5.0, 0.1: 3.0, 1.0: 4.0}, 3)]
        [0.1, 0.3162, 1.0]
    """
    if n_points < 2:
        raise ValueError(f"Parameter `n_points` must be at least 2. Found n_points={n_points}.")
    finite = sorted((area, lr) for lr, area in aucs.items() if math.isfinite(area))
    if len(finite) < 2:
        return []
    low, high = sorted(lr for _, lr in finite[:2])
    step = (math.log10(high) - math.log10(low)) / (n_points - 1)
    inner = [10 ** (math.log10(low) + k * step) for k in range(1, n_points - 1)]
    return [low, *inner, high]  # the ends exactly: they are the rates already run


def select_lr(aucs: Mapping[float, Sequence[float]]) -> float:
    """The learning rate with the lowest mean area over the seeds (ties go to the smaller rate).

    Args:
        aucs: For each rate, the area of each seed's run.

    Example:
        >>> select_lr({0.01: [5.0, 6.0], 0.1: [3.0, 4.0], 1.0: [3.0, float("inf")]})
        0.1
    """
    if not aucs:
        raise ValueError("Parameter `aucs` must contain at least one learning rate. Found none.")
    return min(sorted(aucs), key=lambda lr: mean_and_sem(aucs[lr])[0])
