"""Reference outputs of every aggregator and weighting on tiny inputs (api.md §2.2, §3.1, §3.2).

The values are those of TorchJD 0.18.0 on the CPU in float32, given with 4 decimals: they are
compared with an absolute tolerance of 1e-4 (half a unit of the last decimal for the rounding,
plus margin for float32). The methods that draw from the global RNG are called right after
``torch.manual_seed(0)``, in float32 on the CPU, where the upstream values were drawn.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from settings import DEVICE
from torchjd.aggregation import (
    IMTLG,
    MGDA,
    AlignedMTL,
    AlignedMTLWeighting,
    CAGrad,
    CAGradWeighting,
    ConFIG,
    Constant,
    ConstantWeighting,
    DualProj,
    DualProjWeighting,
    Flattening,
    GradDrop,
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
)
from utils.tensors import ones_, tensor_

from ._registry import call_weighting

ATOL = 1e-4

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]
G_BASE = [[18.0, -22.0], [-22.0, 38.0]]
J_KRUM = [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [75.0, -666.0, 23.0], [1.0, 2.0, 3.0], [2.0, 0.0, 1.0]]
J_TRIMMED_MEAN = [[1e11, 3.0], [1.0, -1e11], [-1e10, 1e10], [2.0, 2.0]]

Factory = Callable[[], nn.Module]


def _pref() -> Tensor:
    return tensor_([1.0, 2.0])


# (factory, input, expected output) — deterministic methods, in the test dtype and device.
DETERMINISTIC_CASES: list[tuple[str, Factory, list[list[float]], list[float]]] = [
    ("UPGrad", lambda: UPGrad(), J_BASE, [0.2929, 1.9004, 1.9004]),
    ("UPGradWeighting", lambda: UPGradWeighting(), G_BASE, [1.1109, 0.7894]),
    ("UPGrad([1,2])", lambda: UPGrad(pref_vector=_pref()), J_BASE, [1.6984, 6.0225, 6.0225]),
    ("UPGrad-api2.2", lambda: UPGrad(), [[-1.0, 1.0], [2.0, 4.0]], [0.5, 2.5]),
    ("DualProj", lambda: DualProj(), J_BASE, [0.5563, 1.1109, 1.1109]),
    ("DualProjWeighting", lambda: DualProjWeighting(), G_BASE, [0.6109, 0.5000]),
    ("DualProj([1,2])", lambda: DualProj(pref_vector=_pref()), J_BASE, [2.2253, 4.4437, 4.4437]),
    ("AlignedMTL", lambda: AlignedMTL(), J_BASE, [0.2133, 0.9673, 0.9673]),
    ("AlignedMTLWeighting", lambda: AlignedMTLWeighting(), G_BASE, [0.5591, 0.4083]),
    (
        "AlignedMTL(median)",
        lambda: AlignedMTL(scale_mode="median"),
        J_BASE,
        [0.2133, 0.9673, 0.9673],
    ),
    ("AlignedMTL(rmse)", lambda: AlignedMTL(scale_mode="rmse"), J_BASE, [0.5764, 2.6142, 2.6142]),
    ("ConFIG", lambda: ConFIG(), J_BASE, [0.1588, 2.0706, 2.0706]),
    ("ConFIG([1,2])", lambda: ConFIG(pref_vector=_pref()), J_BASE, [0.4684, 2.1656, 2.1656]),
    ("Constant([1,2])", lambda: Constant(_pref()), J_BASE, [8.0, 3.0, 3.0]),
    ("ConstantWeighting([1,2])", lambda: ConstantWeighting(_pref()), J_BASE, [1.0, 2.0]),
    ("IMTLG", lambda: IMTLG(), J_BASE, [0.0767, 1.0, 1.0]),
    ("IMTLGWeighting", lambda: IMTLGWeighting(), G_BASE, [0.5923, 0.4077]),
    ("Mean", lambda: Mean(), J_BASE, [1.0, 1.0, 1.0]),
    ("MeanWeighting", lambda: MeanWeighting(), J_BASE, [0.5, 0.5]),
    ("Sum", lambda: Sum(), J_BASE, [2.0, 2.0, 2.0]),
    ("SumWeighting", lambda: SumWeighting(), J_BASE, [1.0, 1.0]),
    ("MGDA", lambda: MGDA(), J_BASE, [0.0, 1.0, 1.0]),
    ("MGDAWeighting", lambda: MGDAWeighting(), G_BASE, [0.6, 0.4]),
    ("CAGrad(0.5)", lambda: CAGrad(c=0.5), J_BASE, [0.1835, 1.2041, 1.2041]),
    ("CAGradWeighting(0.5)", lambda: CAGradWeighting(c=0.5), G_BASE, [0.7041, 0.5000]),
    ("NashMTL(2)", lambda: NashMTL(n_tasks=2), J_BASE, [0.0542, 0.7061, 0.7061]),
    ("Krum(1,4)", lambda: Krum(1, 4), J_KRUM, [1.25, 0.75, 1.5]),
    ("TrimmedMean(1)", lambda: TrimmedMean(1), J_TRIMMED_MEAN, [1.5, 2.5]),
]

# (factory, input, expected output) — methods that use the RNG: seeded, float32, CPU.
RANDOM_CASES: list[tuple[str, Factory, list[list[float]], list[float]]] = [
    ("Random", lambda: Random(), J_BASE, [-2.6229, 1.0, 1.0]),
    ("RandomWeighting", lambda: RandomWeighting(), G_BASE, [0.8623, 0.1377]),
    ("GradDrop", lambda: GradDrop(), J_BASE, [6.0, 2.0, 2.0]),
    ("GradDrop(leak)", lambda: GradDrop(leak=tensor_([0.5, 0.5])), J_BASE, [4.0, 2.0, 2.0]),
    ("PCGrad", lambda: PCGrad(), J_BASE, [0.5848, 3.8012, 3.8012]),
    ("PCGradWeighting", lambda: PCGradWeighting(), G_BASE, [2.2222, 1.5789]),
]


def _krum_gramian() -> list[list[float]]:
    matrix = torch.tensor(J_KRUM, dtype=torch.float64)
    return (matrix @ matrix.T).tolist()


@pytest.mark.parametrize(
    ("factory", "data", "expected"),
    [pytest.param(f, d, e, id=name) for name, f, d, e in DETERMINISTIC_CASES],
)
def test_reference_value(factory: Factory, data: list[list[float]], expected: list[float]) -> None:
    output = factory()(tensor_(data))
    torch.testing.assert_close(output, tensor_(expected), rtol=0.0, atol=ATOL)


def test_krum_weighting_reference_value() -> None:
    weights = call_weighting(KrumWeighting(1, 4), tensor_(_krum_gramian()))
    torch.testing.assert_close(weights, tensor_([0.25, 0.25, 0.0, 0.25, 0.25]), rtol=0.0, atol=ATOL)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="The reference draws are those of the CPU RNG.")
@pytest.mark.parametrize(
    ("factory", "data", "expected"),
    [pytest.param(f, d, e, id=name) for name, f, d, e in RANDOM_CASES],
)
def test_seeded_reference_value(
    factory: Factory, data: list[list[float]], expected: list[float]
) -> None:
    method = factory().to(dtype=torch.float32)
    inputs = torch.tensor(data, dtype=torch.float32)
    torch.manual_seed(0)
    output = method(inputs)
    torch.testing.assert_close(output, torch.tensor(expected), rtol=0.0, atol=ATOL)


def test_flattening_reference_value() -> None:
    weights = Flattening(UPGradWeighting())(ones_(2, 3, 3, 2))
    torch.testing.assert_close(weights, torch.full_like(weights, 1.0 / 6.0), rtol=0.0, atol=ATOL)
    assert weights.shape == (2, 3)


# api.md §3.2: the ``str`` of every aggregator (0.18.0 formats).
STR_CASES: list[tuple[Factory, str]] = [
    (lambda: UPGrad(), "UPGrad"),
    (lambda: UPGrad(pref_vector=_pref()), "UPGrad([1., 2.])"),
    (lambda: DualProj(), "DualProj"),
    (lambda: DualProj(pref_vector=tensor_([0.1, 0.25])), "DualProj([0.1, 0.25])"),
    (lambda: AlignedMTL(), "AlignedMTL"),
    (lambda: AlignedMTL(pref_vector=_pref()), "AlignedMTL([1., 2.])"),
    (lambda: ConFIG(), "ConFIG"),
    (lambda: ConFIG(pref_vector=_pref()), "ConFIG([1., 2.])"),
    (lambda: Constant(_pref()), "Constant([1., 2.])"),
    (lambda: GradDrop(), "GradDrop"),
    (lambda: GradDrop(leak=tensor_([0.1, 0.25])), "GradDrop([0.1, 0.25])"),
    (lambda: IMTLG(), "IMTLG"),
    (lambda: Mean(), "Mean"),
    (lambda: Sum(), "Sum"),
    (lambda: Random(), "Random"),
    (lambda: PCGrad(), "PCGrad"),
    (lambda: Krum(1, 2), "Krum1-2"),
    (lambda: MGDA(), "MGDA"),
    (lambda: TrimmedMean(2), "TM2"),
    (lambda: CAGrad(c=0.5), "CAGrad0.5"),
    (lambda: CAGrad(c=1.0), "CAGrad1"),
    (lambda: CAGrad(c=2), "CAGrad2"),
    (lambda: CAGrad(c=10.0), "CAGrad10"),
    (lambda: NashMTL(n_tasks=2), "NashMTL"),
]

# api.md §3.2: the ``repr`` of the aggregators whose constructor is that of 0.18.0.
REPR_CASES: list[tuple[Factory, str]] = [
    (lambda: AlignedMTL(), "AlignedMTL(pref_vector=None, scale_mode='min')"),
    (lambda: ConFIG(), "ConFIG(pref_vector=None)"),
    (lambda: Constant(torch.tensor([1.0, 2.0])), "Constant(weights=tensor([1., 2.]))"),
    (lambda: IMTLG(), "IMTLG()"),
    (lambda: Mean(), "Mean()"),
    (lambda: Sum(), "Sum()"),
    (lambda: Random(), "Random()"),
    (lambda: PCGrad(), "PCGrad()"),
    (lambda: Krum(1, 2), "Krum(n_byzantine=1, n_selected=2)"),
    (lambda: MGDA(), "MGDA(epsilon=0.001, max_iters=100)"),
    (lambda: TrimmedMean(2), "TrimmedMean(trim_number=2)"),
    (lambda: CAGrad(c=0.5), "CAGrad(c=0.5, norm_eps=0.0001)"),
    (
        lambda: NashMTL(n_tasks=2),
        "NashMTL(n_tasks=2, max_norm=1.0, update_weights_every=1, optim_niter=20)",
    ),
]


@pytest.mark.parametrize(("factory", "expected"), [pytest.param(f, e, id=e) for f, e in STR_CASES])
def test_str(factory: Factory, expected: str) -> None:
    assert str(factory()) == expected


@pytest.mark.parametrize(("factory", "expected"), [pytest.param(f, e, id=e) for f, e in REPR_CASES])
def test_repr(factory: Factory, expected: str) -> None:
    assert repr(factory()) == expected
