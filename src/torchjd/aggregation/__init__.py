"""Aggregators and weightings."""

from ._aggregator_bases import Aggregator, GramianWeightedAggregator, WeightedAggregator
from ._constant import Constant, ConstantWeighting
from ._mean import Mean, MeanWeighting
from ._sum import Sum, SumWeighting
from ._weighting_bases import Weighting

__all__ = [
    "Aggregator",
    "Constant",
    "ConstantWeighting",
    "GramianWeightedAggregator",
    "Mean",
    "MeanWeighting",
    "Sum",
    "SumWeighting",
    "WeightedAggregator",
    "Weighting",
]
