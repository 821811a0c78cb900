"""Family-wide tests: every variant of ``_registry.AGGREGATORS`` against the input families.

Each test checks one declared property (or one interface guarantee) of every method that declares
it. The checkers live in ``_asserts.py``; the last tests of this file run them on deliberately
wrong methods, to show that their tolerances are tight enough to catch a defect.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import Tensor

from settings import DEVICE, DTYPE
from torchjd import Stateful
from torchjd.aggregation import (
    IMTLG,
    MGDA,
    Aggregator,
    AlignedMTL,
    Constant,
    GramianWeightedAggregator,
    Mean,
    PCGrad,
    PCGradWeighting,
    Random,
    RandomWeighting,
    UPGrad,
    WeightedAggregator,
)
from utils.tensors import tensor_

from ._asserts import (
    assert_expected_structure,
    assert_in_row_span,
    assert_linear_under_scaling,
    assert_non_conflicting,
    assert_permutation_invariant,
    assert_scaled_close,
    assert_strongly_stationary,
    combination_scale,
    rounding_tol,
)
from ._inputs import (
    all_matrices,
    conflicting_matrices,
    non_strong_matrices,
    non_weak_matrices,
    normal_matrices,
    representative_matrices,
    small_matrices,
    strictly_weak_matrices,
    strong_matrices,
    well_conditioned_matrices,
    well_posed_matrices,
)
from ._registry import (
    AGGREGATORS,
    SEED,
    WEIGHTED_AGGREGATORS,
    AggregatorInfo,
    call_weighting,
    increasing_vector,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """The matrices are tiny: intra-op parallelism only adds synchronisation, which dominates the
    run time on a loaded machine (2 to 4 times slower with 2 threads). Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _cases(infos: Iterable[AggregatorInfo], matrices: dict[str, Tensor]) -> list[object]:
    return [
        pytest.param(info, matrix, id=f"{info.id}-{name}")
        for info in infos
        for name, matrix in matrices.items()
        if info.accepts(matrix)
    ]


def _ids(infos: Iterable[AggregatorInfo]) -> list[object]:
    return [pytest.param(info, id=info.id) for info in infos]


def _local_generator(matrix: Tensor) -> torch.Generator:
    """A generator seeded by the shape, so that each case draws its own reproducible values."""
    return torch.Generator().manual_seed(1000 * matrix.shape[0] + matrix.shape[1])


def _property_tol(info: AggregatorInfo, dtype: torch.dtype) -> float:
    """Rounding of the dtype, or the declared accuracy of an approximate method if larger."""
    return max(rounding_tol(dtype), info.accuracy)


# --- The input families themselves ------------------------------------------------------------


def _left_null_space(matrix: Tensor) -> np.ndarray:
    u, s, _ = np.linalg.svd(matrix.double().cpu().numpy())
    rank = int((s > 1e-3 * s.max()).sum()) if s.size else 0
    return u[:, rank:]


def _is_weakly_stationary(matrix: Tensor) -> bool:
    """Some ``v = N c ≥ 0`` with ``Σv = 1`` (hence ``v ≠ 0``) has ``vᵀJ = 0``."""
    null = _left_null_space(matrix)
    m, k = null.shape
    if k == 0:
        return False
    result = linprog(
        np.zeros(k),
        A_ub=-null,
        b_ub=np.full(m, 1e-6),
        A_eq=np.ones((1, m)) @ null,
        b_eq=[1.0],
        bounds=[(None, None)] * k,
    )
    return bool(result.status == 0)


def _is_strongly_stationary(matrix: Tensor) -> bool:
    """Some ``v = N c ≥ 1e-3`` (with bounded ``c``, ``N`` orthonormal) has ``vᵀJ = 0``."""
    null = _left_null_space(matrix)
    m, k = null.shape
    if k == 0:
        return False
    result = linprog(np.zeros(k), A_ub=-null, b_ub=np.full(m, -1e-3), bounds=[(-10.0, 10.0)] * k)
    return bool(result.status == 0)


@pytest.mark.parametrize("matrix", strong_matrices.values())
def test_strong_matrices_are_strongly_stationary(matrix: Tensor) -> None:
    assert _is_strongly_stationary(matrix)


@pytest.mark.parametrize("matrix", strictly_weak_matrices.values())
def test_strictly_weak_matrices_are_weak_but_not_strong(matrix: Tensor) -> None:
    assert _is_weakly_stationary(matrix)
    assert not _is_strongly_stationary(matrix)


@pytest.mark.parametrize("matrix", non_weak_matrices.values())
def test_non_weak_matrices_are_not_weakly_stationary(matrix: Tensor) -> None:
    assert not _is_weakly_stationary(matrix)


@pytest.mark.parametrize("matrix", conflicting_matrices.values())
def test_conflicting_matrices_have_full_rank_and_pairwise_conflicts(matrix: Tensor) -> None:
    m = matrix.shape[0]
    assert int(torch.linalg.matrix_rank(matrix.double())) == m
    gramian = matrix.double() @ matrix.double().T
    off_diagonal = gramian[~torch.eye(m, dtype=torch.bool, device=matrix.device)]
    assert (off_diagonal < 0).all()


def test_inputs_are_on_the_test_device_and_dtype() -> None:
    for matrix in all_matrices.values():
        assert matrix.device == DEVICE
        assert matrix.dtype == DTYPE


# --- Structure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("info", "matrix"), _cases(AGGREGATORS, all_matrices))
def test_expected_structure(info: AggregatorInfo, matrix: Tensor) -> None:
    assert_expected_structure(info.run(matrix), matrix)


@pytest.mark.parametrize(
    ("info", "matrix"), _cases([i for i in AGGREGATORS if i.in_row_span], all_matrices)
)
def test_in_row_span(info: AggregatorInfo, matrix: Tensor) -> None:
    weights = info.inner_weights(matrix)
    # The rounding noise of wᵀJ grows with ‖w‖ (large when the update is tiny, as for NashMTL
    # on strongly stationary matrices), not only with ‖wᵀJ‖.
    weights_norm = None if weights is None else float(torch.linalg.vector_norm(weights))
    assert_in_row_span(info.run(matrix), matrix, weights_norm)


@pytest.mark.parametrize(("info", "matrix"), _cases(WEIGHTED_AGGREGATORS, all_matrices))
def test_aggregator_equals_its_weighting(info: AggregatorInfo, matrix: Tensor) -> None:
    """``A(J) = weighting(J) @ J``, or ``gramian_weighting(J Jᵀ) @ J`` for Gramian-based ones,
    both with the weighting held by the aggregator and with the public weighting class."""
    m = matrix.shape[0]
    aggregator = info.make(m)
    assert isinstance(aggregator, WeightedAggregator)
    assert isinstance(aggregator, GramianWeightedAggregator) == info.gramian_based
    stat = matrix @ matrix.T if info.gramian_based else matrix

    if info.random:
        torch.manual_seed(SEED)
    if isinstance(aggregator, GramianWeightedAggregator):
        weights = call_weighting(aggregator.gramian_weighting, stat)
    else:
        weights = call_weighting(aggregator.weighting, stat)
    assert weights.shape == (m,)
    assert weights.dtype == matrix.dtype
    assert weights.device == matrix.device
    assert torch.isfinite(weights).all()

    output = info.run(matrix)  # a fresh instance: a stateful one is in its initial state
    scale = max(float(weights.abs().sum()), 1.0) * float(torch.linalg.vector_norm(matrix))
    assert_scaled_close(output, weights @ matrix, scale, rounding_tol(matrix.dtype))

    if info.weighting is not None:
        public = info.run_weighting(stat)
        inner = aggregator.gramian_weighting if info.gramian_based else aggregator.weighting
        assert type(inner) is type(info.make_weighting(m))
        scale = max(float(weights.abs().sum()), 1.0)
        assert_scaled_close(public, weights, scale, rounding_tol(matrix.dtype))


# --- Declared properties -----------------------------------------------------------------------


def _non_conflict_cases() -> list[object]:
    """The regularised methods treat Gramians with ``tr(G) < norm_eps`` as zero, by design."""
    return [
        case
        for info in AGGREGATORS
        if info.non_conflicting
        for case in _cases(
            [info],
            {
                name: matrix
                for name, matrix in all_matrices.items()
                if info.norm_eps == 0.0 or float((matrix * matrix).sum()) >= info.norm_eps
            },
        )
    ]


@pytest.mark.parametrize(("info", "matrix"), _non_conflict_cases())
def test_non_conflicting(info: AggregatorInfo, matrix: Tensor) -> None:
    allowance = None
    if info.reg_eps > 0.0:
        # KKT of the regularised problem: (J Jᵀ w)_i ≥ −reg_eps·tr(G)·w_i (see _registry.py).
        gramian = matrix @ matrix.T
        weights = info.run_weighting(gramian)
        allowance = info.reg_eps * gramian.trace() * weights
    scale = combination_scale(matrix, info.inner_weights(matrix))
    tol = _property_tol(info, matrix.dtype)
    assert_non_conflicting(info.run(matrix), matrix, tol, allowance, scale)


@pytest.mark.parametrize(
    ("info", "matrix"),
    _cases([i for i in AGGREGATORS if i.permutation_invariant], well_posed_matrices),
)
def test_permutation_invariant(info: AggregatorInfo, matrix: Tensor) -> None:
    permutation = torch.randperm(matrix.shape[0], generator=_local_generator(matrix))
    scale = combination_scale(matrix, info.inner_weights(matrix))
    assert_permutation_invariant(info.run, matrix, permutation.to(DEVICE), scale)


@pytest.mark.parametrize(
    ("info", "matrix"),
    _cases([i for i in AGGREGATORS if i.linear_under_scaling], small_matrices),
)
def test_linear_under_scaling(info: AggregatorInfo, matrix: Tensor) -> None:
    generator = _local_generator(matrix)
    # Log-uniform positive scalings in [0.1, 10]: the rows are rescaled very differently.
    c1, c2 = (10.0 ** (2.0 * torch.rand(2, matrix.shape[0], generator=generator) - 1.0)).to(
        device=DEVICE, dtype=DTYPE
    )
    assert_linear_under_scaling(
        info.run, matrix, c1, c2, 0.7, 1.9, _property_tol(info, matrix.dtype)
    )


@pytest.mark.parametrize(
    ("info", "matrix"),
    _cases([i for i in AGGREGATORS if i.strongly_stationary], non_strong_matrices),
)
def test_strongly_stationary(info: AggregatorInfo, matrix: Tensor) -> None:
    assert_strongly_stationary(info.run(matrix), matrix)


# --- Interface guarantees ----------------------------------------------------------------------


@pytest.mark.parametrize("info", _ids(AGGREGATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_are_preserved(info: AggregatorInfo, dtype: torch.dtype) -> None:
    matrix = normal_matrices["normal_9x11_r9"].to(dtype=dtype)
    assert_expected_structure(info.run(matrix), matrix)
    if info.weighting is not None:
        stat = matrix @ matrix.T if info.gramian_based else matrix
        weights = info.run_weighting(stat)
        assert weights.dtype == dtype
        assert weights.device == matrix.device


@pytest.mark.parametrize("info", _ids(AGGREGATORS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(info: AggregatorInfo, dtype: torch.dtype) -> None:
    """A float16 or bfloat16 matrix (a model trained in reduced precision) gives the result of
    the same values in float32, rounded once to its dtype: the Gramian and the weights are
    computed in float32 (half-precision eigh, pinv and Cholesky do not exist on the CPU), and
    only the final combination runs in the matrix's dtype. Gramian weightings called with a
    half-precision Gramian return weights of its dtype."""
    matrix = normal_matrices["normal_9x11_r9"][: info.max_rows].to(dtype=dtype)
    result = info.run(matrix)
    assert_expected_structure(result, matrix)
    expected = info.run(matrix.float())
    error = float((result.float() - expected).norm() / expected.norm())
    assert error <= 2 * torch.finfo(dtype).eps  # measured: at most 0.45 eps
    if info.weighting is not None:
        stat = (matrix.float() @ matrix.float().T).to(dtype) if info.gramian_based else matrix
        weights = info.run_weighting(stat)
        assert weights.dtype == dtype
        assert bool(torch.isfinite(weights).all())


@pytest.mark.parametrize(("info", "matrix"), _cases(AGGREGATORS, well_conditioned_matrices))
def test_differentiability(info: AggregatorInfo, matrix: Tensor) -> None:
    """The output requires grad exactly for the differentiable methods, whose gradients work."""
    aggregator = info.make(matrix.shape[0])
    assert aggregator.differentiable == info.differentiable
    leaf = matrix.clone().requires_grad_()
    output = info.run(leaf)
    assert output.requires_grad == info.differentiable
    if info.differentiable:
        cotangent = torch.ones_like(output)
        (gradient,) = torch.autograd.grad(output, leaf, cotangent)
        assert gradient.shape == matrix.shape
        assert torch.isfinite(gradient).all()

    if info.weighting is not None:
        weighting = info.make_weighting(matrix.shape[0])
        assert weighting.differentiable == info.differentiable
        stat = leaf @ leaf.T if info.gramian_based else leaf
        weights = info.run_weighting(stat)
        if not info.differentiable:
            assert not weights.requires_grad
        elif weights.requires_grad:
            (gradient,) = torch.autograd.grad(weights, leaf, torch.ones_like(weights))
            assert torch.isfinite(gradient).all()


@pytest.mark.parametrize(
    ("info", "matrix"),
    _cases([i for i in AGGREGATORS if not i.stateful], representative_matrices),
)
def test_stateless_methods_are_deterministic(info: AggregatorInfo, matrix: Tensor) -> None:
    """A stateless method gives the same output when the same instance is called twice; a
    non-random one whatever the state of the RNG."""
    aggregator = info.make(matrix.shape[0])
    assert not isinstance(aggregator, Stateful)
    torch.manual_seed(SEED)
    first = aggregator(matrix)
    torch.manual_seed(SEED if info.random else SEED + 1)
    second = aggregator(matrix)
    assert torch.equal(first, second)


@pytest.mark.parametrize("info", _ids(i for i in AGGREGATORS if i.random))
def test_random_methods_use_the_rng(info: AggregatorInfo) -> None:
    """Two seeds give two outputs (checked on several generic matrices: one may be unlucky)."""
    matrices = [m for m in normal_matrices.values() if m.shape[0] >= 4 and info.accepts(m)]
    aggregator = info.make(matrices[0].shape[0])
    differ = []
    for matrix in matrices:
        aggregator = info.make(matrix.shape[0])
        torch.manual_seed(SEED)
        first = aggregator(matrix)
        torch.manual_seed(SEED + 1)
        differ.append(not torch.equal(first, aggregator(matrix)))
    assert any(differ)


@pytest.mark.parametrize("info", _ids(i for i in AGGREGATORS if i.stateful))
def test_reset_restores_the_initial_state(info: AggregatorInfo) -> None:
    matrix = normal_matrices["normal_4x3_r3"]
    aggregator = info.make(matrix.shape[0])
    assert isinstance(aggregator, Stateful)
    first = aggregator(matrix)
    aggregator(2.0 * matrix)
    aggregator.reset()
    assert torch.equal(aggregator(matrix), first)


@pytest.mark.parametrize("info", _ids(AGGREGATORS))
def test_representations(info: AggregatorInfo) -> None:
    """``str`` and ``repr`` are non-empty; ``repr`` is ``ClassName(...)`` and shows every given
    keyword argument with its value (``repr`` of the value for scalars and strings)."""
    m = 4
    aggregator = info.make(m)
    name = type(aggregator).__name__
    assert str(aggregator)
    assert str(aggregator).startswith(name) or name == "TrimmedMean"
    text = repr(aggregator)
    assert text.startswith(f"{name}(")
    assert text.endswith(")")
    parameters = inspect.signature(type(aggregator)).parameters
    for key, value in info.kwargs(m).items():
        assert key in parameters, f"{key} is not a parameter of {name}."
        assert f"{key}=" in text, f"{key}= missing from {text}."
        if isinstance(value, (bool, int, float, str)):
            assert f"{key}={value!r}" in text, f"{key}={value!r} missing from {text}."
    if info.weighting is not None:
        weighting = info.make_weighting(m)
        assert str(weighting)
        assert repr(weighting)


# --- The checkers catch wrong methods ----------------------------------------------------------


def _shifted_mean(shift: Tensor) -> Aggregator:
    class ShiftedMean(Aggregator):
        def forward(self, matrix: Tensor, /) -> Tensor:
            return matrix.mean(dim=0) + shift

    return ShiftedMean()


def test_structure_checker_catches_wrong_outputs() -> None:
    matrix = normal_matrices["normal_4x3_r3"]
    good = Mean()(matrix)
    assert_expected_structure(good, matrix)
    for wrong in [good[:2], good.to(torch.float16), torch.full_like(good, torch.nan)]:
        with pytest.raises(AssertionError):
            assert_expected_structure(wrong, matrix)


def test_row_span_checker_catches_a_small_component_off_the_span() -> None:
    matrix = normal_matrices["normal_4x3_r2"]
    _, _, vh = torch.linalg.svd(matrix)
    off_span = vh[2]  # unit vector orthogonal to the two rows' span
    output = Mean()(matrix)
    assert_in_row_span(output, matrix)
    scale = float(torch.linalg.vector_norm(matrix))
    with pytest.raises(AssertionError):
        assert_in_row_span(output + 1e-3 * scale * off_span, matrix)


def test_non_conflict_checker_catches_a_one_percent_conflict() -> None:
    matrix = tensor_([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert_non_conflicting(tensor_([1.0, 0.0]), matrix, rounding_tol(DTYPE))
    with pytest.raises(AssertionError):
        assert_non_conflicting(tensor_([1.0, -0.01]), matrix, rounding_tol(DTYPE))
    # The mean conflicts with the first row of a conflicting matrix.
    conflicting = tensor_([[1.0, 0.0], [-2.0, 1.0]])
    with pytest.raises(AssertionError):
        assert_non_conflicting(Mean()(conflicting), conflicting, rounding_tol(DTYPE))


def test_permutation_checker_catches_slightly_position_dependent_weights() -> None:
    matrix = normal_matrices["normal_9x11_r9"]
    m = matrix.shape[0]
    weights = 1.0 + 1e-2 * torch.arange(m, dtype=DTYPE, device=DEVICE) / m
    permutation = torch.arange(m - 1, -1, -1, device=DEVICE)
    assert_permutation_invariant(lambda J: J.mean(dim=0), matrix, permutation)
    with pytest.raises(AssertionError):
        assert_permutation_invariant(lambda J: weights @ J / m, matrix, permutation)


def test_scaling_checker_catches_a_slightly_non_linear_method() -> None:
    matrix = normal_matrices["normal_4x3_r3"]
    c1 = tensor_([1.0, 2.0, 0.5, 3.0])
    c2 = tensor_([0.2, 1.0, 4.0, 1.0])
    assert_linear_under_scaling(
        lambda J: J.sum(dim=0), matrix, c1, c2, 0.7, 1.9, rounding_tol(DTYPE)
    )

    def slightly_non_linear(J: Tensor) -> Tensor:
        norms = torch.linalg.vector_norm(J, dim=1, keepdim=True)
        output: Tensor = (J * (1.0 + 1e-2 * norms / (1.0 + norms))).sum(dim=0)
        return output

    with pytest.raises(AssertionError):
        assert_linear_under_scaling(
            slightly_non_linear, matrix, c1, c2, 0.7, 1.9, rounding_tol(DTYPE)
        )


def test_strong_stationarity_checker_catches_a_vanishing_output() -> None:
    matrix = next(iter(strictly_weak_matrices.values()))
    assert_strongly_stationary(Mean()(matrix), matrix)
    spectral_norm = torch.linalg.matrix_norm(matrix, ord=2)
    small = 1e-3 * spectral_norm * torch.ones(matrix.shape[1], dtype=DTYPE, device=DEVICE)
    with pytest.raises(AssertionError):
        assert_strongly_stationary(small / matrix.shape[1] ** 0.5, matrix)


def test_weighting_checker_catches_slightly_wrong_weights() -> None:
    matrix = normal_matrices["normal_4x3_r3"]
    weights = tensor_([0.25, 0.25, 0.25, 0.25])
    output = Mean()(matrix)
    scale = float(torch.linalg.vector_norm(matrix))
    assert_scaled_close(output, weights @ matrix, scale, rounding_tol(DTYPE))
    wrong = weights + tensor_([1e-2, 0.0, 0.0, 0.0])
    with pytest.raises(AssertionError):
        assert_scaled_close(output, wrong @ matrix, scale, rounding_tol(DTYPE))


def test_shifted_mean_fails_the_mean_properties() -> None:
    """A mean with a small constant shift is neither in the row span nor linear under scaling."""
    matrix = normal_matrices["normal_4x3_r2"]
    scale = float(torch.linalg.vector_norm(matrix))
    _, _, vh = torch.linalg.svd(matrix)
    aggregator = _shifted_mean(1e-2 * scale * vh[2])
    with pytest.raises(AssertionError):
        assert_in_row_span(aggregator(matrix), matrix)
    c = tensor_([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(AssertionError):
        assert_linear_under_scaling(aggregator, matrix, c, 2.0 * c, 1.0, 1.0, rounding_tol(DTYPE))


# --- The family tests reject false declarations ------------------------------------------------


class _SlightlyConflictingUPGrad(Aggregator):
    """Exact UPGrad moved along its tightest row ``g_t`` until ``g_tᵀd = −1e-3·‖J‖_F·max‖g_i‖``:
    a conflict of relative size 1e-3 with one row."""

    def forward(self, matrix: Tensor, /) -> Tensor:
        output = UPGrad(norm_eps=0.0, reg_eps=0.0)(matrix)
        norms = torch.linalg.vector_norm(matrix, dim=1)
        tightest = matrix[torch.argmin(matrix @ output / norms)]
        target = -1e-3 * torch.linalg.vector_norm(matrix) * norms.max()
        step = (tightest @ output - target) / (tightest @ tightest)
        result: Tensor = output - step * tightest
        return result


class _BiasedMean(Aggregator):
    """The mean plus a vector of relative size 1e-3 along the last coordinate."""

    def forward(self, matrix: Tensor, /) -> Tensor:
        bias = torch.zeros_like(matrix[0])
        bias[-1] = 1e-3 * torch.linalg.vector_norm(matrix)
        return matrix.mean(dim=0) + bias


FALSE_DECLARATIONS: list[tuple[AggregatorInfo, Callable[..., None], dict[str, Tensor]]] = [
    (AggregatorInfo("Mean", Mean, non_conflicting=True), test_non_conflicting, all_matrices),
    (
        AggregatorInfo("AlignedMTL", AlignedMTL, non_conflicting=True),
        test_non_conflicting,
        all_matrices,
    ),
    (
        AggregatorInfo(
            "SlightlyConflictingUPGrad", _SlightlyConflictingUPGrad, full_row_rank_only=True
        ),
        test_non_conflicting,
        well_posed_matrices,
    ),
    (AggregatorInfo("BiasedMean", _BiasedMean), test_in_row_span, all_matrices),
    (AggregatorInfo("BiasedMean", _BiasedMean), test_linear_under_scaling, small_matrices),
    (
        AggregatorInfo("Constant", Constant, kwargs=lambda m: {"weights": increasing_vector(m)}),
        test_permutation_invariant,
        well_posed_matrices,
    ),
    (AggregatorInfo("MGDA", MGDA), test_linear_under_scaling, small_matrices),
    (AggregatorInfo("MGDA", MGDA), test_strongly_stationary, non_strong_matrices),
    (AggregatorInfo("Mean", Mean, differentiable=False), test_differentiability, normal_matrices),
    (AggregatorInfo("IMTLG", IMTLG), test_differentiability, normal_matrices),
    (
        AggregatorInfo("PCGrad", PCGrad, weighting=PCGradWeighting, random=True),
        test_aggregator_equals_its_weighting,
        normal_matrices,
    ),
    (
        AggregatorInfo("Random", Random, weighting=RandomWeighting),
        test_aggregator_equals_its_weighting,
        normal_matrices,
    ),
]
"""Methods declared with a property they lack: the family test must fail on some matrix."""


@pytest.mark.parametrize(
    ("info", "test", "matrices"),
    [
        pytest.param(info, test, matrices, id=f"{info.id}-{test.__name__}")
        for info, test, matrices in FALSE_DECLARATIONS
    ],
)
def test_false_declaration_is_caught(
    info: AggregatorInfo, test: Callable[..., None], matrices: dict[str, Tensor]
) -> None:
    failures = 0
    for matrix in matrices.values():
        if not info.accepts(matrix):
            continue
        try:
            test(info, matrix)
        except AssertionError:
            failures += 1
    assert failures > 0
