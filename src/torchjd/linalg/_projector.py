"""The default dual-cone projector: exact, torch-native and batched."""

from __future__ import annotations

import torch
from torch import Tensor

from ._active_set import project_onto_dual_cone, sum_of_diagonal_projections
from ._cuda_graph import GraphCache
from ._dual_cone import DualConeProjector
from ._matrix import normalize, regularize
from ._small import MAX_SMALL_M, project_small


class ActiveSetProjector(DualConeProjector):
    r"""Solves the dual-cone projections exactly with an active-set method, in torch.

    The Gramian is first normalised by its trace (replaced by zeros if the trace is below
    ``norm_eps``) and regularised by ``reg_eps · I``, which makes every projection a strictly
    convex problem with a unique solution. All rows of ``U`` are then solved at once by block
    principal pivoting on the non-negative least-squares form of the problem (Kim & Park, 2011),
    with Lawson & Hanson's monotone active-set method for the projections where the pivoting
    stalls (on the CPU with more than 8 objectives; elsewhere, single swaps); both terminate with
    the exact solution, up to rounding. The result has the dtype and device of ``U``. On the
    CPU the solve runs in float64 (in plain Python floats for up to 8 objectives), so that it is
    exact even for ill-conditioned Gramians. On accelerators it also runs in float64, reads
    nothing back to the host (no synchronisation), and is replayed as a CUDA graph once a shape
    has been seen twice. (On devices without float64, such as MPS, it runs in float32 and is
    only as exact as the conditioning of the Gramian allows.)

    Args:
        norm_eps: Below this trace, the Gramian is treated as zero. Defaults to ``1e-4``.
        reg_eps: The multiple of the identity added to the normalised Gramian. Defaults to
            ``1e-4``. With ``0``, the Gramian must be positive definite on every free set.
        max_iter: The number of pivoting steps allowed. On the CPU the solver stops as soon as
            every projection is solved (typically after 1 to 10 steps) and raises a
            ``RuntimeError`` if ``max_iter`` steps were not enough; on accelerators exactly
            ``max_iter`` steps run (steps after convergence change nothing) and a device-side
            assertion reports a failure. Defaults to ``None``: ``10·m + 50`` on the CPU and
            ``m + 24`` elsewhere (the hardest of our test Gramians, with m = 64, needs 43).
        cuda_graphs: Whether to capture the solve on CUDA devices as a CUDA graph per input
            shape (from the second call with that shape) and replay it, which makes it about ten
            times faster. A graph keeps its buffers on the device; at most 8 are kept. Inside a
            CUDA graph capture of the caller's, or when the inputs require grad, the solve runs
            eagerly. Defaults to ``True``.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 4.0]])
        >>> projector = ActiveSetProjector(norm_eps=0.0, reg_eps=0.0)
        >>> projector(torch.tensor([[1.0, 0.0]]), G)  # v ≥ [1, 0] with (G v)_2 = 0
        tensor([[1.0000, 0.2500]])
    """

    def __init__(
        self,
        *,
        norm_eps: float = 0.0001,
        reg_eps: float = 0.0001,
        max_iter: int | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        from torchjd.aggregation._utils.checks import check_non_negative, check_positive_int

        self.norm_eps = check_non_negative(norm_eps, "norm_eps")
        self.reg_eps = check_non_negative(reg_eps, "reg_eps")
        self.max_iter = None if max_iter is None else check_positive_int(max_iter, "max_iter")
        if not isinstance(cuda_graphs, bool):
            raise TypeError(
                "Parameter `cuda_graphs` should be a bool. "
                f"Found type {type(cuda_graphs).__name__}."
            )
        self.cuda_graphs = cuda_graphs
        self._graphs = GraphCache()

    def __call__(self, U: Tensor, G: Tensor) -> Tensor:
        """Project every row of ``U`` (``[..., m]``) with the Gramian ``G`` (``[m, m]``)."""
        m = G.shape[-1]
        if G.device.type == "cpu":
            if m <= MAX_SMALL_M and U.numel() <= MAX_SMALL_M * m:
                return self._project_small(U, G)
            max_iter = self._cpu_max_iter(m)
            # The reduced Gramian can have a condition number of ~1e4, too much for a float32
            # solve to be exact; on the CPU, LAPACK factorises these small matrices as fast in
            # float64 as in float32 (measured), so the whole solve runs in float64.
            G_hat = self._normalize_and_regularize_on_host(G)
            V = project_onto_dual_cone(
                U.reshape(-1, m).double(), G_hat, max_iter, well_conditioned=self._well_conditioned
            )
            return V.reshape(U.shape).to(U.dtype)
        # On accelerators, the solve is bound by kernel launches, not by arithmetic: float64
        # costs little more than float32 and is exact at the conditioning of the reduced
        # Gramian. Devices without float64 (MPS) solve in float32.
        dtype = torch.float32 if G.device.type == "mps" else torch.float64
        max_iter = self.max_iter or m + 24

        def solve(U: Tensor, G: Tensor) -> Tensor:
            G_hat = self._normalize_and_regularize(G.to(dtype))
            return project_onto_dual_cone(U.to(dtype), G_hat, max_iter)

        U_2d = U.reshape(-1, m)
        if self.cuda_graphs:
            key = (dtype, max_iter, self.norm_eps, self.reg_eps)
            V = self._graphs(key, solve, U_2d, G)
        else:
            V = solve(U_2d, G)
        return V.reshape(U.shape).to(U.dtype)

    def sum_of_diagonal_projections(self, u: Tensor, G: Tensor) -> Tensor:
        """The sum of the projections of the rows of ``diag(u)``: UPGrad's weights for the
        preferences ``u`` (``[m]``), equal to ``self(torch.diag(u), G).sum(dim=0)``.

        On the CPU with more than 8 objectives, the solve uses that ``U`` is diagonal and sums
        its result in float64, with four fewer operations on ``[m, m]`` tensors.

        Example:
            >>> import torch
            >>> G = torch.tensor([[1.0, -1.0], [-1.0, 4.0]])
            >>> ActiveSetProjector(norm_eps=0.0, reg_eps=0.0).sum_of_diagonal_projections(
            ...     torch.tensor([1.0, 1.0]), G
            ... )
            tensor([2.0000, 1.2500])
        """
        m = G.shape[-1]
        if G.device.type != "cpu" or m <= MAX_SMALL_M:
            return self(torch.diag(u), G).sum(dim=0)
        weights = sum_of_diagonal_projections(
            u.double(),
            self._normalize_and_regularize_on_host(G),
            self._cpu_max_iter(m),
            well_conditioned=self._well_conditioned,
        )
        return weights.to(u.dtype)

    def _project_small(self, U: Tensor, G: Tensor) -> Tensor:
        """The same computation in Python floats (float64), for a handful of objectives."""
        m = G.shape[-1]
        V = self.project_rows_on_host(U.reshape(-1, m).tolist(), G)
        return torch.tensor(V, dtype=U.dtype, device=U.device).reshape(U.shape)

    def project_rows_on_host(self, U: list[list[float]], G: Tensor) -> list[list[float]]:
        """Project the rows ``U`` (Python floats) with the Gramian ``G`` of at most 8 objectives,
        in Python floats (float64), as ``__call__`` does on the CPU; for the weightings, which
        then need no tensor operation but reading ``G`` and building the result.
        """
        m = G.shape[-1]
        rows: list[list[float]] = G.tolist()
        trace = sum(rows[j][j] for j in range(m))
        factor = 1.0 / trace if trace >= self.norm_eps else 0.0
        G_hat = [
            [rows[a][b] * factor + (self.reg_eps if a == b else 0.0) for b in range(m)]
            for a in range(m)
        ]
        return project_small(U, G_hat, self._cpu_max_iter(m))

    @property
    def _well_conditioned(self) -> bool:
        # Ĝ's eigenvalues lie in [reg_eps, 1 + reg_eps] (or Ĝ = reg_eps·I).
        return self.reg_eps >= 1e-7

    def _cpu_max_iter(self, m: int) -> int:
        return self.max_iter or 10 * m + 50

    def _normalize_and_regularize(self, G: Tensor) -> Tensor:
        return regularize(normalize(G, self.norm_eps), self.reg_eps)

    def _normalize_and_regularize_on_host(self, G: Tensor) -> Tensor:
        """The same as :meth:`_normalize_and_regularize` in float64, with the trace read by the
        host (free on the CPU) and the result built in place: fewer tensor operations, each of
        which costs tens of microseconds in a cold call.
        """
        G_hat = G.to(torch.float64, copy=True)
        trace = float(G_hat.diagonal().sum())
        G_hat.mul_(1.0 / trace if trace >= self.norm_eps else 0.0)
        G_hat.diagonal().add_(self.reg_eps)
        return G_hat

    def __repr__(self) -> str:
        max_iter = "" if self.max_iter is None else f", max_iter={self.max_iter}"
        graphs = "" if self.cuda_graphs else ", cuda_graphs=False"
        return (
            f"{type(self).__name__}(norm_eps={self.norm_eps}, reg_eps={self.reg_eps}"
            f"{max_iter}{graphs})"
        )
