"""Invalid inputs and hyper-parameters: every aggregator and weighting raises a ``ValueError`` or a
``TypeError`` whose message names the offending parameter (``_registry.ERRORS``).

The message templates are those of ``torchjd/aggregation/_utils/checks.py``: they put the name of
the parameter between backticks, so the tests match ``` `name` ```.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from torchjd.aggregation import Flattening, MeanWeighting
from utils.tensors import randn_, tensor_, zeros_

from ._registry import ERRORS, BadCall, BadKwargs, ErrorInfo, Kwargs


def _make(info: ErrorInfo, kwargs: Kwargs, weighting: bool) -> nn.Module:
    factory: Callable[..., nn.Module] | None = info.weighting if weighting else info.aggregator
    assert factory is not None
    return factory(**kwargs)


def _call(module: nn.Module, value: object) -> Tensor:
    result = module(value)
    assert isinstance(result, Tensor)
    return result


def _methods() -> list[object]:
    """Every aggregator and weighting, built with valid arguments, with the name of its input."""
    cases: list[object] = []
    for info in ERRORS:
        kwargs = info.valid_kwargs or {}
        name = info.aggregator.__name__
        cases.append(pytest.param(info, kwargs, False, "matrix", id=name))
        if info.weighting is not None:
            input_name = "gramian" if info.gramian_based else "matrix"
            cases.append(pytest.param(info, kwargs, True, input_name, id=f"{name}Weighting"))
    return cases


def _bad_inputs() -> list[object]:
    nan_matrix = tensor_([[1.0, float("nan")], [0.0, 1.0]])
    inf_matrix = tensor_([[1.0, 0.0], [float("inf"), 1.0]])
    return [
        pytest.param(lambda: [[1.0, 0.0], [0.0, 1.0]], TypeError, id="list"),
        pytest.param(lambda: None, TypeError, id="None"),
        pytest.param(lambda: tensor_(1.0), ValueError, id="0-D"),
        pytest.param(lambda: tensor_([1.0, 2.0]), ValueError, id="1-D"),
        pytest.param(lambda: zeros_(2, 2, 2), ValueError, id="3-D"),
        pytest.param(lambda: zeros_(0, 2), ValueError, id="0-rows"),
        pytest.param(lambda: zeros_(2, 0), ValueError, id="0-columns"),
        pytest.param(lambda: zeros_(0, 0), ValueError, id="0x0"),
        pytest.param(lambda: nan_matrix, ValueError, id="NaN", marks=pytest.mark.device_assert),
        pytest.param(lambda: inf_matrix, ValueError, id="inf", marks=pytest.mark.device_assert),
        pytest.param(lambda: -inf_matrix, ValueError, id="-inf", marks=pytest.mark.device_assert),
        pytest.param(lambda: torch.eye(2, dtype=torch.int64), TypeError, id="int64"),
        pytest.param(lambda: torch.eye(2, dtype=torch.bool), TypeError, id="bool"),
    ]


@pytest.mark.parametrize(("info", "kwargs", "weighting", "input_name"), _methods())
@pytest.mark.parametrize(("make_input", "error"), _bad_inputs())
def test_bad_input(
    info: ErrorInfo,
    kwargs: Kwargs,
    weighting: bool,
    input_name: str,
    make_input: Callable[[], object],
    error: type[Exception],
) -> None:
    module = _make(info, kwargs, weighting)
    with pytest.raises(error, match=f"`{input_name}`"):
        _call(module, make_input())


@pytest.mark.parametrize(
    ("info", "kwargs"),
    [
        pytest.param(info, info.valid_kwargs or {}, id=f"{info.aggregator.__name__}Weighting")
        for info in ERRORS
        if info.gramian_based
    ],
)
def test_non_square_input_to_gramian_weighting(info: ErrorInfo, kwargs: Kwargs) -> None:
    weighting = _make(info, kwargs, weighting=True)
    for shape in [(2, 3), (3, 2), (1, 4)]:
        with pytest.raises(ValueError, match="`gramian`"):
            _call(weighting, randn_(*shape))


def _constructor_cases() -> list[object]:
    cases: list[object] = []
    for info in ERRORS:
        for i, bad in enumerate(info.bad_kwargs):
            name = info.aggregator.__name__
            cases.append(pytest.param(info, bad, False, id=f"{name}-{bad.parameter}-{i}"))
            if info.weighting is not None:
                cases.append(pytest.param(info, bad, True, id=f"{name}W-{bad.parameter}-{i}"))
    return cases


@pytest.mark.parametrize(("info", "bad", "weighting"), _constructor_cases())
def test_bad_hyper_parameter(info: ErrorInfo, bad: BadKwargs, weighting: bool) -> None:
    with pytest.raises(bad.error, match=bad.match):
        _make(info, bad.kwargs, weighting)


def _call_cases() -> list[object]:
    cases: list[object] = []
    for info in ERRORS:
        for i, bad in enumerate(info.bad_calls):
            name = info.aggregator.__name__
            cases.append(pytest.param(info, bad, False, id=f"{name}-{bad.parameter}-{i}"))
            if info.weighting is not None:
                cases.append(pytest.param(info, bad, True, id=f"{name}W-{bad.parameter}-{i}"))
    return cases


@pytest.mark.parametrize(("info", "bad", "weighting"), _call_cases())
def test_hyper_parameter_incompatible_with_input(
    info: ErrorInfo, bad: BadCall, weighting: bool
) -> None:
    """Valid at construction, but not for an input with ``m`` rows."""
    module = _make(info, bad.kwargs, weighting)
    matrix = randn_(bad.m, 3)
    stat = matrix @ matrix.T if weighting and info.gramian_based else matrix
    with pytest.raises(bad.error, match=bad.match):
        _call(module, stat)


def test_hyper_parameter_tables_are_not_trivial() -> None:
    """Every class with hyper-parameters declares errors for each of its parameters."""
    for info in ERRORS:
        parameters = set(inspect.signature(info.aggregator).parameters) - {"generator"}
        declared = {bad.parameter for bad in info.bad_kwargs}
        assert parameters <= declared, f"{info.aggregator.__name__}: {parameters - declared}"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param([[1.0]], TypeError, id="list"),
        pytest.param(tensor_([1.0, 2.0]), ValueError, id="1-D"),
        pytest.param(zeros_(2, 3, 2), ValueError, id="3-D"),
        pytest.param(zeros_(2, 3, 2, 3), ValueError, id="not-palindromic"),
        pytest.param(zeros_(2, 3, 3, 3), ValueError, id="not-palindromic-2"),
    ],
)
def test_flattening_bad_input(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="`generalized_gramian`"):
        _call(Flattening(MeanWeighting()), value)
