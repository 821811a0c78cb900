"""The statistics and the learning-rate selection, against hand computations."""

import math

import pytest
import torch

from experiments.iwrm_digits.selection import auc, log_grid, mean_and_sem, refined_grid, select_lr
from utils.tensors import tensor_


def test_auc_is_the_trapezoidal_area() -> None:
    # (3+2)/2 + (2+4)/2 + (4+1)/2 = 2.5 + 3 + 2.5
    assert auc(tensor_([3.0, 2.0, 4.0, 1.0])) == pytest.approx(8.0)
    assert auc(tensor_([5.0])) == 0.0


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_auc_of_a_diverged_curve_is_infinite(bad: float) -> None:
    assert auc(tensor_([1.0, bad, 1.0])) == math.inf


def test_mean_and_sem_by_hand() -> None:
    # values 2, 4, 9: mean 5, sample variance (9 + 1 + 16) / 2 = 13, SEM √(13/3)
    mean, sem = mean_and_sem([2.0, 4.0, 9.0])
    assert mean == 5.0
    assert sem == pytest.approx(math.sqrt(13 / 3))


def test_sem_of_one_value_or_of_a_diverged_mean_is_nan() -> None:
    assert mean_and_sem([3.0])[0] == 3.0
    assert math.isnan(mean_and_sem([3.0])[1])
    mean, sem = mean_and_sem([1.0, math.inf])
    assert mean == math.inf
    assert math.isnan(sem)
    with pytest.raises(ValueError, match="at least one value"):
        mean_and_sem([])


def test_the_papers_coarse_grid() -> None:
    grid = log_grid(-5, 2, 3)
    assert len(grid) == 22
    assert grid[0] == pytest.approx(1e-5)
    assert grid[-1] == pytest.approx(1e2)
    ratios = torch.tensor(grid[1:], dtype=torch.float64) / torch.tensor(grid[:-1])
    torch.testing.assert_close(ratios, torch.full((21,), 10 ** (1 / 3), dtype=torch.float64))


def test_refined_grid_spans_the_two_best_rates() -> None:
    areas = {0.001: 9.0, 0.01: 4.0, 0.1: 5.0, 1.0: math.inf}
    grid = refined_grid(areas, 5)
    assert grid[0] == pytest.approx(0.01)
    assert grid[-1] == pytest.approx(0.1)
    assert grid[2] == pytest.approx(10**-1.5)
    assert refined_grid({0.1: 1.0, 1.0: math.inf}, 5) == []
    with pytest.raises(ValueError, match=r"`n_points` must be at least 2\. Found n_points=1"):
        refined_grid(areas, 1)


def test_select_lr_takes_the_lowest_mean_area_and_never_a_diverged_rate() -> None:
    aucs = {0.01: [5.0, 5.0], 0.1: [4.0, 5.0], 1.0: [1.0, math.inf]}
    assert select_lr(aucs) == 0.1
    assert select_lr({0.1: [3.0], 0.01: [3.0]}) == 0.01  # ties: the smaller rate
    with pytest.raises(ValueError, match="at least one learning rate"):
        select_lr({})
