"""The table of aggregators that drives the family-wide tests (``test_family.py``, ...).

Each :class:`AggregatorInfo` is one constructor variant: the aggregator class, its keyword
arguments (which may depend on the number of rows ``m``, for vector hyper-parameters), the matching
weighting (built with the same keyword arguments, since hyper-parameters live on the weighting),
and the properties the method is declared to have. The generic tests check every declared
property, and check that the undeclared ``differentiable`` is really absent.

The declared properties come from Table 1 of *Jacobian Descent for Multi-Objective Optimization*
(non-conflicting / linear under scaling / weighted), from the upstream property tests (api.md
§3.6) and from the maths of each method:

- ``non_conflicting``: ``J A(J) ≥ 0``.
- ``permutation_invariant``: permuting the rows of ``J`` does not change ``A(J)`` (false for
  methods with a per-row preference vector, and for random methods: with a fixed seed, the same
  draws go to other rows).
- ``linear_under_scaling``: ``c ↦ A(diag(c) J)`` is linear on ``c > 0`` (with a fixed seed for the
  random methods: Random and PCGrad draw their weights / orders independently of ``J``).
- ``strongly_stationary``: ``A(J) = 0`` only if ``J`` is strongly stationary (some ``v > 0`` has
  ``vᵀJ = 0``). Holds for positive weights independent of ``J``, and for UPGrad and DualProj.
- ``in_row_span``: ``A(J)`` is a combination of the rows (false for the column-wise GradDrop and
  TrimmedMean).
- ``differentiable``: the output keeps the autograd graph of ``J`` (api.md §2.8).
- ``random``: the output depends on the global RNG; tests seed it before each call.
- ``stateful``: calls depend on the previous calls; tests build a fresh instance for each call.

``norm_eps`` and ``reg_eps`` declare the regularisation of UPGrad and DualProj, which solve their
projections with ``Ĝ = G/tr(G) + reg_eps·I`` (``reg_eps·I`` when ``tr(G) < norm_eps``). The KKT
conditions of that problem only give ``(J Jᵀ w)_i ≥ −reg_eps·tr(G)·w_i`` instead of ``≥ 0``: the
non-conflict check allows exactly this much, on the matrices with ``tr(G) ≥ norm_eps``. The exact
properties (``reg_eps = norm_eps = 0``) are checked on unregularised variants, which need a
positive definite Gramian (``full_row_rank_only``).

``accuracy`` is the relative accuracy of an approximate method (an iterative solver stopped
early, a regularised problem): the checks of ``non_conflicting`` and ``linear_under_scaling``,
which hold for the exact solution, use it as tolerance when it exceeds the rounding tolerance of
the dtype. It is derived from the hyper-parameters of each variant (see the comments), never
fitted to the outputs, and stays far below the size of a real defect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from torchjd.aggregation import (
    IMTLG,
    MGDA,
    Aggregator,
    AlignedMTL,
    AlignedMTLWeighting,
    CAGrad,
    CAGradWeighting,
    ConFIG,
    Constant,
    ConstantWeighting,
    DualProj,
    DualProjWeighting,
    GradDrop,
    GramianWeightedAggregator,
    IMTLGWeighting,
    Krum,
    KrumWeighting,
    Mean,
    MeanWeighting,
    MGDAWeighting,
    NashMTL,
    PCGrad,
    PCGradWeighting,
    Random,
    RandomWeighting,
    Sum,
    SumWeighting,
    TrimmedMean,
    UPGrad,
    UPGradWeighting,
    WeightedAggregator,
    Weighting,
)
from torchjd.linalg import Matrix, PSDMatrix
from utils.tensors import tensor_

SEED = 0
"""The global seed set right before every call of a random method."""

Kwargs = dict[str, object]
AnyWeighting = Weighting[Matrix] | Weighting[PSDMatrix]


def _no_kwargs(m: int) -> Kwargs:
    return {}


def fixed(**kwargs: object) -> Callable[[int], Kwargs]:
    """Keyword arguments that do not depend on the number of rows."""

    def kwargs_for(m: int) -> Kwargs:
        return dict(kwargs)

    return kwargs_for


def increasing_vector(m: int) -> Tensor:
    """The positive, non-uniform ``[1, 2, ..., m]`` on the test device and dtype."""
    return tensor_([float(i) for i in range(1, m + 1)])


def call_weighting(weighting: AnyWeighting, stat: Tensor) -> Tensor:
    """Call a matrix or Gramian weighting (a Gramian is a matrix, so the cast is sound)."""
    return weighting(cast(PSDMatrix, stat))


def _has_full_row_rank(matrix: Tensor) -> bool:
    singular_values = torch.linalg.svdvals(matrix.double())
    m = matrix.shape[0]
    return m <= matrix.shape[1] and bool(singular_values[m - 1] > 1e-3 * singular_values[0])


@dataclass(frozen=True)
class AggregatorInfo:
    """One aggregator variant and its declared properties."""

    id: str
    aggregator: Callable[..., Aggregator]
    kwargs: Callable[[int], Kwargs] = _no_kwargs
    weighting: Callable[..., AnyWeighting] | None = None
    gramian_based: bool = False
    non_conflicting: bool = False
    permutation_invariant: bool = False
    linear_under_scaling: bool = False
    strongly_stationary: bool = False
    in_row_span: bool = True
    differentiable: bool = True
    random: bool = False
    stateful: bool = False
    min_rows: int = 1
    max_rows: int | None = None
    full_row_rank_only: bool = False
    accuracy: float = 0.0
    norm_eps: float = 0.0
    reg_eps: float = 0.0

    def accepts(self, matrix: Tensor) -> bool:
        """Whether the method is defined for this matrix (number of rows, rank)."""
        if matrix.shape[0] < self.min_rows:
            return False
        if self.max_rows is not None and matrix.shape[0] > self.max_rows:
            return False
        return not self.full_row_rank_only or _has_full_row_rank(matrix)

    def make(self, m: int) -> Aggregator:
        """A fresh aggregator for matrices with ``m`` rows."""
        return self.aggregator(**self.kwargs(m))

    def make_weighting(self, m: int) -> AnyWeighting:
        """A fresh weighting (the same hyper-parameters) for ``m`` objectives."""
        if self.weighting is None:
            raise ValueError(f"{self.id} has no weighting.")
        return self.weighting(**self.kwargs(m))

    def run(self, matrix: Tensor) -> Tensor:
        """Aggregate ``matrix`` with a fresh instance, after seeding the RNG if needed."""
        aggregator = self.make(matrix.shape[0])
        if self.random:
            torch.manual_seed(SEED)
        return aggregator(matrix)

    def inner_weights(self, matrix: Tensor) -> Tensor | None:
        """The weights ``w`` with ``A(J) = wᵀJ`` (fresh instance, seeded), or ``None`` if the
        aggregator is not weighted."""
        aggregator = self.make(matrix.shape[0])
        if not isinstance(aggregator, WeightedAggregator):
            return None
        if self.random:
            torch.manual_seed(SEED)
        if isinstance(aggregator, GramianWeightedAggregator):
            return call_weighting(aggregator.gramian_weighting, matrix @ matrix.T)
        return call_weighting(aggregator.weighting, matrix)

    def run_weighting(self, stat: Tensor) -> Tensor:
        """Weigh ``stat`` (``J`` or ``J Jᵀ``) with a fresh weighting, after seeding if needed."""
        weighting = self.make_weighting(stat.shape[0])
        if self.random:
            torch.manual_seed(SEED)
        return call_weighting(weighting, stat)


_UNREGULARISED = {"norm_eps": 0.0, "reg_eps": 0.0}

AGGREGATORS: list[AggregatorInfo] = [
    AggregatorInfo(
        id="UPGrad",
        aggregator=UPGrad,
        weighting=UPGradWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        strongly_stationary=True,
        differentiable=False,
        norm_eps=1e-4,
        reg_eps=1e-4,
    ),
    AggregatorInfo(
        id="UPGrad(1..m,reg=1e-6)",
        aggregator=UPGrad,
        kwargs=lambda m: {"pref_vector": increasing_vector(m), "reg_eps": 1e-6},
        weighting=UPGradWeighting,
        gramian_based=True,
        non_conflicting=True,
        strongly_stationary=True,
        differentiable=False,
        norm_eps=1e-4,
        reg_eps=1e-6,
    ),
    # Linear under scaling only without regularisation: reg_eps·I dominates the rows that are much
    # smaller than the others (deviations up to 4e-2 were measured for reg_eps = 1e-4 with row
    # scalings in [0.1, 10]).
    AggregatorInfo(
        id="UPGrad(unregularised)",
        aggregator=UPGrad,
        kwargs=fixed(**_UNREGULARISED),
        weighting=UPGradWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        linear_under_scaling=True,
        strongly_stationary=True,
        differentiable=False,
        full_row_rank_only=True,
    ),
    AggregatorInfo(
        id="UPGrad(1..m,unregularised)",
        aggregator=UPGrad,
        kwargs=lambda m: {"pref_vector": increasing_vector(m), **_UNREGULARISED},
        weighting=UPGradWeighting,
        gramian_based=True,
        non_conflicting=True,
        linear_under_scaling=True,
        strongly_stationary=True,
        differentiable=False,
        full_row_rank_only=True,
    ),
    AggregatorInfo(
        id="DualProj",
        aggregator=DualProj,
        weighting=DualProjWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        strongly_stationary=True,
        differentiable=False,
        norm_eps=1e-4,
        reg_eps=1e-4,
    ),
    AggregatorInfo(
        id="DualProj(1..m)",
        aggregator=DualProj,
        kwargs=lambda m: {"pref_vector": increasing_vector(m)},
        weighting=DualProjWeighting,
        gramian_based=True,
        non_conflicting=True,
        strongly_stationary=True,
        differentiable=False,
        norm_eps=1e-4,
        reg_eps=1e-4,
    ),
    AggregatorInfo(
        id="DualProj(unregularised)",
        aggregator=DualProj,
        kwargs=fixed(**_UNREGULARISED),
        weighting=DualProjWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        strongly_stationary=True,
        differentiable=False,
        full_row_rank_only=True,
    ),
    AggregatorInfo(
        id="Mean",
        aggregator=Mean,
        weighting=MeanWeighting,
        permutation_invariant=True,
        linear_under_scaling=True,
        strongly_stationary=True,
    ),
    AggregatorInfo(
        id="Sum",
        aggregator=Sum,
        weighting=SumWeighting,
        permutation_invariant=True,
        linear_under_scaling=True,
        strongly_stationary=True,
    ),
    AggregatorInfo(
        id="Constant(1..m)",
        aggregator=Constant,
        kwargs=lambda m: {"weights": increasing_vector(m)},
        weighting=ConstantWeighting,
        linear_under_scaling=True,
        strongly_stationary=True,
    ),
    AggregatorInfo(
        id="Random",
        aggregator=Random,
        weighting=RandomWeighting,
        linear_under_scaling=True,
        strongly_stationary=True,
        random=True,
    ),
    # Frank–Wolfe stops when its step γ < ε. The duality gap, which bounds the conflict
    # -min_i g_iᵀd, is then γ‖d − g_t‖² ≤ 4ε·max_i ‖g_i‖², i.e. 4ε relative to the scale of the
    # non-conflict check (‖J‖_F·max_i ‖g_i‖). Measured: at most 0.9ε on the input families, also
    # when the iteration limit stops the solver first.
    AggregatorInfo(
        id="MGDA",
        aggregator=MGDA,
        weighting=MGDAWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        accuracy=4e-3,
    ),
    AggregatorInfo(
        id="MGDA(eps=3e-4,iters=300)",
        aggregator=MGDA,
        kwargs=fixed(epsilon=3e-4, max_iters=300),
        weighting=MGDAWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        accuracy=1.2e-3,
    ),
    AggregatorInfo(
        id="CAGrad(0.5)",
        aggregator=CAGrad,
        kwargs=fixed(c=0.5),
        weighting=CAGradWeighting,
        gramian_based=True,
        permutation_invariant=True,
        differentiable=False,
    ),
    # With c ≥ 1, d = 0 lies in the ball ‖d − g₀‖ ≤ c‖g₀‖, so the maximal min_i g_iᵀd is ≥ 0.
    # For c = 1 exactly, the dual minimiser is not unique when J is strongly stationary (any w
    # with Jᵀw anti-parallel to g₀ reaches the value 0), so the output may depend on the order
    # of the rows: permutation invariance is declared for c > 1 only.
    AggregatorInfo(
        id="CAGrad(1)",
        aggregator=CAGrad,
        kwargs=fixed(c=1.0),
        weighting=CAGradWeighting,
        gramian_based=True,
        non_conflicting=True,
        differentiable=False,
    ),
    AggregatorInfo(
        id="CAGrad(2)",
        aggregator=CAGrad,
        kwargs=fixed(c=2.0),
        weighting=CAGradWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        differentiable=False,
    ),
    # The Nash bargaining solution α > 0 solves α_i (J Jᵀ α)_i = 1, so g_iᵀd = 1/α_i > 0; the
    # weights are zeros when no solution exists. Rescaling a row does not change the update.
    AggregatorInfo(
        id="NashMTL",
        aggregator=NashMTL,
        kwargs=lambda m: {"n_tasks": m},
        non_conflicting=True,
        permutation_invariant=True,
        differentiable=False,
        stateful=True,
    ),
    AggregatorInfo(
        id="NashMTL(max_norm=0,every=2)",
        aggregator=NashMTL,
        kwargs=lambda m: {"n_tasks": m, "max_norm": 0.0, "update_weights_every": 2},
        non_conflicting=True,
        permutation_invariant=True,
        differentiable=False,
        stateful=True,
    ),
    AggregatorInfo(
        id="AlignedMTL",
        aggregator=AlignedMTL,
        weighting=AlignedMTLWeighting,
        gramian_based=True,
        permutation_invariant=True,
    ),
    AggregatorInfo(
        id="AlignedMTL(median)",
        aggregator=AlignedMTL,
        kwargs=fixed(scale_mode="median"),
        weighting=AlignedMTLWeighting,
        gramian_based=True,
        permutation_invariant=True,
    ),
    AggregatorInfo(
        id="AlignedMTL(1..m,rmse)",
        aggregator=AlignedMTL,
        kwargs=lambda m: {"pref_vector": increasing_vector(m), "scale_mode": "rmse"},
        weighting=AlignedMTLWeighting,
        gramian_based=True,
    ),
    AggregatorInfo(
        id="IMTLG",
        aggregator=IMTLG,
        weighting=IMTLGWeighting,
        gramian_based=True,
        permutation_invariant=True,
        differentiable=False,
    ),
    # Krum selects the rows with the smallest sums of distances to their m − n_byzantine − 2
    # nearest neighbours. With m = n_byzantine + 3, a score is the distance to the nearest
    # neighbour, so the two rows of the closest pair always tie and the order of the rows decides:
    # permutation invariance is only declared for the variants used with more rows.
    AggregatorInfo(
        id="Krum(1)",
        aggregator=Krum,
        kwargs=fixed(n_byzantine=1),
        weighting=KrumWeighting,
        gramian_based=True,
        min_rows=4,
    ),
    AggregatorInfo(
        id="Krum(0)",
        aggregator=Krum,
        kwargs=fixed(n_byzantine=0),
        weighting=KrumWeighting,
        gramian_based=True,
        permutation_invariant=True,
        min_rows=4,
    ),
    AggregatorInfo(
        id="Krum(1,2)",
        aggregator=Krum,
        kwargs=fixed(n_byzantine=1, n_selected=2),
        weighting=KrumWeighting,
        gramian_based=True,
        permutation_invariant=True,
        min_rows=5,
    ),
    AggregatorInfo(
        id="TrimmedMean(0)",
        aggregator=TrimmedMean,
        kwargs=fixed(trim_number=0),
        # Trimming nothing gives the mean, with all its properties.
        permutation_invariant=True,
        linear_under_scaling=True,
        strongly_stationary=True,
    ),
    AggregatorInfo(
        id="TrimmedMean(1)",
        aggregator=TrimmedMean,
        kwargs=fixed(trim_number=1),
        permutation_invariant=True,
        in_row_span=False,
        min_rows=3,
    ),
    AggregatorInfo(
        id="PCGrad",
        aggregator=PCGrad,
        weighting=PCGradWeighting,
        gramian_based=True,
        linear_under_scaling=True,
        differentiable=False,
        random=True,
    ),
    # With two rows, the random order plays no role (declared non-random: the output must not
    # depend on the seed) and PCGrad is the sum of the projections of the rows onto the dual cone
    # of the rows (m·UPGrad): it is then non-conflicting.
    AggregatorInfo(
        id="PCGrad(m=2)",
        aggregator=PCGrad,
        weighting=PCGradWeighting,
        gramian_based=True,
        non_conflicting=True,
        permutation_invariant=True,
        linear_under_scaling=True,
        differentiable=False,
        max_rows=2,
    ),
    AggregatorInfo(
        id="GradDrop",
        aggregator=GradDrop,
        in_row_span=False,
        differentiable=False,
        random=True,
    ),
    AggregatorInfo(
        id="GradDrop(leak=1/(m+1)..m/(m+1))",
        aggregator=GradDrop,
        kwargs=lambda m: {"leak": increasing_vector(m) / (m + 1)},
        in_row_span=False,
        differentiable=False,
        random=True,
    ),
    AggregatorInfo(
        id="ConFIG",
        aggregator=ConFIG,
        permutation_invariant=True,
        linear_under_scaling=True,
        differentiable=False,
    ),
    AggregatorInfo(
        id="ConFIG(1..m)",
        aggregator=ConFIG,
        kwargs=lambda m: {"pref_vector": increasing_vector(m)},
        linear_under_scaling=True,
        differentiable=False,
    ),
]
"""Every aggregator variant tested family-wide."""

WEIGHTED_AGGREGATORS = [
    info for info in AGGREGATORS if isinstance(info.make(max(info.min_rows, 4)), WeightedAggregator)
]
"""The variants whose aggregator is ``weighting(J) @ J`` (with a public weighting or not)."""


# --- Invalid hyper-parameters and call-time mismatches -----------------------------------------


@dataclass(frozen=True)
class BadKwargs:
    """Keyword arguments that the constructor must reject, naming ``parameter``.

    ``pattern`` overrides the default regex ``` `parameter` ``` (the template of ``checks.py``
    puts the name between backticks).
    """

    kwargs: Kwargs
    error: type[Exception]
    parameter: str
    pattern: str | None = None

    @property
    def match(self) -> str:
        return self.pattern if self.pattern is not None else f"`{self.parameter}`"


@dataclass(frozen=True)
class BadCall:
    """Valid keyword arguments with which a call on an ``[m, 3]`` matrix must fail."""

    kwargs: Kwargs
    m: int
    error: type[Exception]
    parameter: str

    @property
    def match(self) -> str:
        return f"`{self.parameter}`"


@dataclass(frozen=True)
class ErrorInfo:
    """The error inputs of one class (and of its weighting, which takes the same arguments)."""

    aggregator: Callable[..., Aggregator]
    weighting: Callable[..., AnyWeighting] | None = None
    gramian_based: bool = False
    valid_kwargs: Kwargs | None = None
    bad_kwargs: tuple[BadKwargs, ...] = ()
    bad_calls: tuple[BadCall, ...] = ()


def _real_errors(name: str, positive: bool, others: Kwargs | None = None) -> tuple[BadKwargs, ...]:
    """Errors of a real hyper-parameter: negative (0 if ``positive``), non-finite, wrong type."""
    base = others or {}
    invalid_values: list[float] = [-1.0, float("nan"), float("inf"), -float("inf")]
    if positive:
        invalid_values.append(0.0)
    return (
        *(BadKwargs({**base, name: value}, ValueError, name) for value in invalid_values),
        BadKwargs({**base, name: "0.1"}, TypeError, name),
        BadKwargs({**base, name: None}, TypeError, name),
        BadKwargs({**base, name: True}, TypeError, name),
    )


def _int_errors(name: str, minimum: int, others: Kwargs | None = None) -> tuple[BadKwargs, ...]:
    """Errors of an integer hyper-parameter: below ``minimum``, non-integer, wrong type."""
    base = others or {}
    return (
        BadKwargs({**base, name: minimum - 1}, ValueError, name),
        BadKwargs({**base, name: minimum - 10}, ValueError, name),
        BadKwargs({**base, name: 1.5}, TypeError, name),
        BadKwargs({**base, name: float(minimum + 1)}, TypeError, name),
        BadKwargs({**base, name: "2"}, TypeError, name),
        BadKwargs({**base, name: True}, TypeError, name),
    )


def _vector_errors(name: str, others: Kwargs | None = None) -> tuple[BadKwargs, ...]:
    """Errors of a 1-D tensor hyper-parameter: other dimensions, non-finite entries, no tensor."""
    base = others or {}
    return (
        BadKwargs({**base, name: tensor_([[1.0, 2.0]])}, ValueError, name),
        BadKwargs({**base, name: tensor_(1.0)}, ValueError, name),
        BadKwargs({**base, name: tensor_([1.0, float("nan")])}, ValueError, name),
        BadKwargs({**base, name: tensor_([1.0, float("inf")])}, ValueError, name),
        BadKwargs({**base, name: [1.0, 2.0]}, TypeError, name),
    )


def _wrong_length(name: str, others: Kwargs | None = None) -> tuple[BadCall, ...]:
    """A 2-entry vector hyper-parameter used on matrices with 3 and 1 rows."""
    base = others or {}
    return (
        BadCall({**base, name: tensor_([1.0, 2.0])}, 3, ValueError, name),
        BadCall({**base, name: tensor_([1.0, 2.0])}, 1, ValueError, name),
    )


def _projection_errors() -> tuple[BadKwargs, ...]:
    return (
        *_vector_errors("pref_vector"),
        *_real_errors("norm_eps", positive=False),
        *_real_errors("reg_eps", positive=False),
        BadKwargs({"solver": "quadprog"}, ValueError, "solver"),
        BadKwargs({"projector": "active_set"}, TypeError, "projector"),
    )


ERRORS: list[ErrorInfo] = [
    ErrorInfo(Mean, MeanWeighting),
    ErrorInfo(Sum, SumWeighting),
    ErrorInfo(
        Constant,
        ConstantWeighting,
        valid_kwargs={"weights": tensor_([1.0, 2.0])},
        bad_kwargs=_vector_errors("weights"),
        bad_calls=_wrong_length("weights"),
    ),
    ErrorInfo(Random, RandomWeighting),
    ErrorInfo(
        UPGrad,
        UPGradWeighting,
        gramian_based=True,
        bad_kwargs=_projection_errors(),
        bad_calls=_wrong_length("pref_vector"),
    ),
    ErrorInfo(
        DualProj,
        DualProjWeighting,
        gramian_based=True,
        bad_kwargs=_projection_errors(),
        bad_calls=_wrong_length("pref_vector"),
    ),
    ErrorInfo(
        MGDA,
        MGDAWeighting,
        gramian_based=True,
        bad_kwargs=(*_real_errors("epsilon", positive=True), *_int_errors("max_iters", 1)),
    ),
    ErrorInfo(
        AlignedMTL,
        AlignedMTLWeighting,
        gramian_based=True,
        bad_kwargs=(
            *_vector_errors("pref_vector"),
            # The message of 0.18.0 ("Invalid scale_mode='max'. Expected ...") has no backticks.
            BadKwargs({"scale_mode": "max"}, ValueError, "scale_mode", "scale_mode='max'"),
            BadKwargs({"scale_mode": None}, ValueError, "scale_mode", "scale_mode=None"),
        ),
        bad_calls=_wrong_length("pref_vector"),
    ),
    ErrorInfo(IMTLG, IMTLGWeighting, gramian_based=True),
    ErrorInfo(
        Krum,
        KrumWeighting,
        gramian_based=True,
        valid_kwargs={"n_byzantine": 1},
        bad_kwargs=(
            *_int_errors("n_byzantine", 0),
            *_int_errors("n_selected", 1, {"n_byzantine": 1}),
        ),
        bad_calls=(
            BadCall({"n_byzantine": 1}, 3, ValueError, "n_byzantine"),
            BadCall({"n_byzantine": 0, "n_selected": 4}, 3, ValueError, "n_selected"),
        ),
    ),
    ErrorInfo(
        TrimmedMean,
        valid_kwargs={"trim_number": 1},
        bad_kwargs=_int_errors("trim_number", 0),
        bad_calls=(
            BadCall({"trim_number": 1}, 2, ValueError, "trim_number"),
            BadCall({"trim_number": 2}, 4, ValueError, "trim_number"),
        ),
    ),
    ErrorInfo(PCGrad, PCGradWeighting, gramian_based=True),
    ErrorInfo(
        GradDrop,
        bad_kwargs=(
            BadKwargs({"f": 1.0}, TypeError, "f"),
            BadKwargs({"f": "identity"}, TypeError, "f"),
            *_vector_errors("leak"),
        ),
        bad_calls=_wrong_length("leak"),
    ),
    ErrorInfo(
        ConFIG, bad_kwargs=_vector_errors("pref_vector"), bad_calls=_wrong_length("pref_vector")
    ),
    ErrorInfo(
        CAGrad,
        CAGradWeighting,
        gramian_based=True,
        valid_kwargs={"c": 0.5},
        bad_kwargs=(
            *_real_errors("c", positive=False),
            *_real_errors("norm_eps", positive=False, others={"c": 0.5}),
        ),
    ),
    ErrorInfo(
        NashMTL,
        valid_kwargs={"n_tasks": 2},
        bad_kwargs=(
            *_int_errors("n_tasks", 1),
            *_real_errors("max_norm", positive=False, others={"n_tasks": 2}),
            *_int_errors("update_weights_every", 1, {"n_tasks": 2}),
            *_int_errors("optim_niter", 1, {"n_tasks": 2}),
        ),
        bad_calls=(
            BadCall({"n_tasks": 2}, 3, ValueError, "n_tasks"),
            BadCall({"n_tasks": 2}, 1, ValueError, "n_tasks"),
        ),
    ),
]
"""Every aggregator class, with its weighting and its error inputs."""
