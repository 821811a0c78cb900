"""Build the dual-cone projector of UPGrad and DualProj from their constructor arguments."""

from __future__ import annotations

from typing import Literal, get_args

from torchjd.linalg import ActiveSetProjector, DualConeProjector

SolverName = Literal["active_set"]
_DEFAULT_NORM_EPS = 0.0001
_DEFAULT_REG_EPS = 0.0001


def make_projector(
    norm_eps: float, reg_eps: float, solver: str, projector: DualConeProjector | None
) -> DualConeProjector:
    """Return ``projector`` if given, else the default projector built from the other arguments.

    ``norm_eps``, ``reg_eps`` and ``solver`` configure the default projector, so they cannot be
    combined with a custom ``projector``.
    """
    if solver not in get_args(SolverName):
        raise ValueError(
            f"Parameter `solver` should be one of {list(get_args(SolverName))}. Found "
            f"solver={solver!r}. The quadprog solver of earlier TorchJD versions is replaced by "
            "an exact torch-native active-set solver: remove the argument."
        )
    if projector is None:
        return ActiveSetProjector(norm_eps=norm_eps, reg_eps=reg_eps)
    if not isinstance(projector, DualConeProjector):
        raise TypeError(
            "Parameter `projector` should be a torchjd.linalg.DualConeProjector or None. "
            f"Found type {type(projector).__name__}."
        )
    if norm_eps != _DEFAULT_NORM_EPS or reg_eps != _DEFAULT_REG_EPS:
        raise ValueError(
            "Parameter `projector` cannot be combined with `norm_eps` or `reg_eps`, which "
            f"configure the default projector. Found norm_eps={norm_eps}, reg_eps={reg_eps} and "
            f"projector={projector!r}. Pass them to the projector instead, for example "
            "`projector=ActiveSetProjector(norm_eps=..., reg_eps=...)`."
        )
    return projector
