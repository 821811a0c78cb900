from __future__ import annotations

import pytest
import torch

from settings import DEVICE, DTYPE
from torchjd.aggregation import (
    DualProj,
    DualProjWeighting,
    Mean,
    PCGradWeighting,
    UPGrad,
    UPGradWeighting,
)
from torchjd.linalg import ActiveSetProjector, DualConeProjector
from utils.qp_reference import project_reference, regularized_gramian
from utils.tensors import randn_, tensor_

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]
ATOL = 1e-4 if torch.float32 == DTYPE else 1e-9


def test_backward_example_value() -> None:
    """api.md §2.2: UPGrad on [[-1, 1], [2, 4]] gives [0.5, 2.5]."""
    result = UPGrad()(tensor_([[-1.0, 1.0], [2.0, 4.0]]))
    torch.testing.assert_close(result, tensor_([0.5, 2.5]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("pref", [None, [1.0, 2.0], [0.3, 0.0, 2.0, 1.0]])
def test_upgrad_weights_are_the_sum_of_reference_projections(pref: list[float] | None) -> None:
    m = 2 if pref is None or len(pref) == 2 else 4
    J = randn_(m, 7) if m == 4 else tensor_(J_BASE)
    G = J @ J.T
    pref_vector = None if pref is None else tensor_(pref)
    weights = UPGradWeighting(pref_vector)(G)
    u = (
        torch.full((m,), 1.0 / m, dtype=torch.float64)
        if pref is None
        else torch.tensor(pref, dtype=DTYPE)
    )
    expected = project_reference(torch.diag(u.double()), regularized_gramian(G, 1e-4, 1e-4))
    torch.testing.assert_close(weights.cpu().double(), expected.sum(0), atol=ATOL, rtol=ATOL)


def test_dualproj_weights_are_the_reference_projection() -> None:
    J = randn_(5, 9)
    G = J @ J.T
    weights = DualProjWeighting()(G)
    u = torch.full((1, 5), 0.2, dtype=torch.float64)
    expected = project_reference(u, regularized_gramian(G, 1e-4, 1e-4))[0]
    torch.testing.assert_close(weights.cpu().double(), expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("aggregator", [UPGrad(), DualProj()])
def test_no_conflict_gives_the_mean(aggregator: UPGrad | DualProj) -> None:
    """Rows with pairwise non-negative inner products are not changed by the projections."""
    J = torch.rand(6, 4, dtype=DTYPE).to(tensor_(0.0).device) + 0.1
    torch.testing.assert_close(aggregator(J), Mean()(J))


def test_two_rows_pcgrad_equals_upgrad_with_sum_preference() -> None:
    """With two rows, PCGrad is UPGrad with the preference [1, 1] and no regularisation."""
    J = tensor_([[1.0, 2.0, -1.0], [-2.0, 0.5, 1.0]])
    G = J @ J.T
    projector = ActiveSetProjector(norm_eps=0.0, reg_eps=0.0)
    upgrad = UPGradWeighting(tensor_([1.0, 1.0]), projector=projector)(G)
    torch.testing.assert_close(upgrad, PCGradWeighting()(G))


def test_outputs_do_not_require_grad() -> None:
    J = randn_(3, 4, requires_grad=True)
    assert not UPGrad()(J).requires_grad
    assert not DualProj()(J).requires_grad
    assert not UPGradWeighting()(J @ J.T).requires_grad


class _Halving(DualConeProjector):
    """A deliberately simple projector: it returns u / 2."""

    def __call__(self, U: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        return U / 2


def test_custom_projector_is_used() -> None:
    J = tensor_(J_BASE)
    torch.testing.assert_close(UPGrad(projector=_Halving())(J), Mean()(J) / 2)
    torch.testing.assert_close(DualProj(projector=_Halving())(J), Mean()(J) / 2)


@pytest.mark.parametrize("cls", [UPGrad, UPGradWeighting, DualProj, DualProjWeighting])
def test_projector_cannot_be_combined_with_eps(cls: type) -> None:
    with pytest.raises(ValueError, match="`projector` cannot be combined with `norm_eps`"):
        cls(reg_eps=0.1, projector=ActiveSetProjector())


@pytest.mark.parametrize("cls", [UPGrad, UPGradWeighting, DualProj, DualProjWeighting])
def test_projector_type_is_checked(cls: type) -> None:
    with pytest.raises(TypeError, match=r"`projector` should be a torchjd\.linalg\.Dual"):
        cls(projector="quadprog")


@pytest.mark.parametrize("cls", [UPGrad, DualProj])
def test_quadprog_solver_is_refused_with_a_fix(cls: type) -> None:
    with pytest.raises(ValueError, match="`solver` should be one of \\['active_set'\\]"):
        cls(solver="quadprog")


@pytest.mark.parametrize("cls", [UPGrad, DualProj])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"norm_eps": -1.0}, ValueError, "`norm_eps`"),
        ({"reg_eps": float("inf")}, ValueError, "`reg_eps`"),
        ({"pref_vector": torch.ones(2, 2)}, ValueError, "`pref_vector` should be a 1-dim"),
        ({"pref_vector": torch.tensor([1.0, float("nan")])}, ValueError, "`pref_vector`"),
    ],
)
def test_invalid_arguments(cls: type, kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [UPGrad, DualProj])
def test_wrong_preference_length(cls: type) -> None:
    with pytest.raises(ValueError, match="`pref_vector` should have 2 entries"):
        cls(pref_vector=tensor_([1.0, 2.0, 3.0]))(tensor_(J_BASE))


def test_repr_and_str() -> None:
    projector = "ActiveSetProjector(norm_eps=0.0001, reg_eps=0.0001)"
    assert repr(UPGrad()) == f"UPGrad(pref_vector=None, projector={projector})"
    assert repr(DualProj(reg_eps=0.0)) == (
        "DualProj(pref_vector=None, projector=ActiveSetProjector(norm_eps=0.0001, reg_eps=0.0))"
    )
    assert str(UPGrad()) == "UPGrad"
    assert str(UPGrad(pref_vector=torch.tensor([1.0, 2.0]))) == "UPGrad([1., 2.])"
    assert str(DualProj(pref_vector=torch.tensor([0.1, 0.25]))) == "DualProj([0.1, 0.25])"
    assert repr(UPGradWeighting()).startswith("UPGradWeighting(\n  pref_vector=None, projector=")


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("cls", [UPGradWeighting, DualProjWeighting])
def test_python_float_path_matches_the_tensor_path(
    cls: type[UPGradWeighting | DualProjWeighting], m: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU, with the default solver and preferences, the weights of up to 8 objectives
    are computed in Python floats without calling the projector; a forward hook on the
    preference weighting makes the weighting go through the projector instead (tensor path).
    """
    J = randn_(m, 6)
    G = J @ J.T
    hooked = cls()
    seen: list[int] = []
    hooked.weighting.register_forward_hook(lambda *_: seen.append(1))
    expected = hooked(G)
    assert seen  # the tensor path ran
    if DEVICE.type == "cpu":

        def refuse(*_: object) -> None:
            raise AssertionError("the Python float path should not call the projector")

        monkeypatch.setattr(ActiveSetProjector, "__call__", refuse)
    weights = cls()(G)
    assert weights.dtype == G.dtype
    assert weights.device == G.device
    torch.testing.assert_close(weights, expected, atol=ATOL, rtol=ATOL)


def test_float16_matrix_whose_gramian_exceeds_float16() -> None:
    """The Gramian of a float16 matrix is computed in float32: here its entries reach ~1e7,
    beyond float16's 65504, which used to raise an overflow error."""
    J = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * 100
    result = UPGrad()(J.half())
    assert result.dtype == torch.float16
    expected = UPGrad()(J.half().float())
    torch.testing.assert_close(result.float(), expected, rtol=2e-3, atol=1e-2)
