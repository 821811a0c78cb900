"""The public names of ``torchjd.aggregation``, and the completeness of the test tables."""

from __future__ import annotations

import importlib
import inspect

import pytest

import torchjd.aggregation as aggregation
from torchjd.aggregation import (
    Aggregator,
    GeneralizedWeighting,
    GramianWeightedAggregator,
    WeightedAggregator,
    Weighting,
)

from ._registry import AGGREGATORS, ERRORS

BASES = ["Aggregator", "GramianWeightedAggregator", "WeightedAggregator", "Weighting"]

AGGREGATORS_WITH_WEIGHTING = [
    "AlignedMTL",
    "CAGrad",
    "Constant",
    "DualProj",
    "IMTLG",
    "Krum",
    "MGDA",
    "Mean",
    "PCGrad",
    "Random",
    "Sum",
    "UPGrad",
]
AGGREGATORS_WITHOUT_WEIGHTING = ["ConFIG", "GradDrop", "NashMTL", "TrimmedMean"]
GENERALIZED = ["Flattening", "GeneralizedWeighting"]

EXPECTED = sorted(
    [
        *BASES,
        *AGGREGATORS_WITH_WEIGHTING,
        *(f"{name}Weighting" for name in AGGREGATORS_WITH_WEIGHTING),
        *AGGREGATORS_WITHOUT_WEIGHTING,
        *GENERALIZED,
    ]
)


def test_all_is_the_expected_list() -> None:
    assert len(aggregation.__all__) == len(set(aggregation.__all__)), "Duplicates in __all__."
    assert sorted(aggregation.__all__) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_name_is_importable(name: str) -> None:
    # ``from torchjd.aggregation import name`` is this lookup on the imported package.
    value = getattr(importlib.import_module("torchjd.aggregation"), name)
    assert inspect.isclass(value)
    assert value.__name__ == name


def test_bases_are_exported() -> None:
    assert issubclass(WeightedAggregator, Aggregator)
    assert issubclass(GramianWeightedAggregator, WeightedAggregator)
    for base in [Aggregator, WeightedAggregator, GramianWeightedAggregator, Weighting]:
        assert inspect.isclass(base)
        assert base.__module__.startswith("torchjd.aggregation")
    assert inspect.isabstract(Aggregator)
    assert inspect.isabstract(Weighting)
    assert inspect.isabstract(GeneralizedWeighting)


@pytest.mark.parametrize("name", AGGREGATORS_WITH_WEIGHTING + AGGREGATORS_WITHOUT_WEIGHTING)
def test_aggregators_are_aggregators(name: str) -> None:
    cls = getattr(aggregation, name)
    assert issubclass(cls, Aggregator)
    assert not inspect.isabstract(cls)


@pytest.mark.parametrize("name", AGGREGATORS_WITH_WEIGHTING)
def test_weightings_are_weightings(name: str) -> None:
    assert issubclass(getattr(aggregation, f"{name}Weighting"), Weighting)


@pytest.mark.parametrize("name", AGGREGATORS_WITH_WEIGHTING + AGGREGATORS_WITHOUT_WEIGHTING)
def test_every_aggregator_is_in_the_family_table(name: str) -> None:
    cls = getattr(aggregation, name)
    infos = [info for info in AGGREGATORS if info.aggregator is cls]
    assert infos, f"{name} has no entry in _registry.AGGREGATORS."
    if name in AGGREGATORS_WITH_WEIGHTING:
        weighting = getattr(aggregation, f"{name}Weighting")
        assert all(info.weighting is weighting for info in infos)
        assert all(
            info.gramian_based == issubclass(cls, GramianWeightedAggregator) for info in infos
        )


@pytest.mark.parametrize("name", AGGREGATORS_WITH_WEIGHTING + AGGREGATORS_WITHOUT_WEIGHTING)
def test_every_aggregator_is_in_the_error_table(name: str) -> None:
    cls = getattr(aggregation, name)
    assert [info for info in ERRORS if info.aggregator is cls], f"{name} is not in ERRORS."
