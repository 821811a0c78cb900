"""The linear systems of the active-set projector: ``G_FF z_F = -c_F`` for many sets ``F``.

On the CPU, with more than 32 objectives (:class:`CompactSolver`), each system is compacted to
the size of the largest set and solved in the cheaper of two exact forms. With fewer on the CPU
(:class:`MaskedSolver`), and always on accelerators (:func:`solve_masked`), every system keeps
the full ``[m, m]`` size, masked, which takes fewer operations and reads no size on the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from torchjd._device_assert import device_assert

from ._dual_cone import ProjectionError


class CompactSolver:
    """Solves ``G_FF z_F = -c_F`` (``z = 0`` off ``F``) for many rows, on compacted systems, and
    returns ``z`` with ``y = G z + c`` (exactly zero on ``F``, where it is zero up to rounding).

    Each row is solved in the cheaper of two exact forms. With few free variables, the system
    ``G_FF`` itself. With many (in instance-wise training, most objectives conflict and free sets
    hold ~90% of them), the complement ``B`` of ``F`` is small: with ``H = G⁻¹``, ``v = u + z``
    solves ``(G v)_F = 0, v_B = u_B`` exactly when ``v = H_{:B} μ`` with ``H_BB μ = u_B``, a
    system of size ``|B|`` instead of ``|F|`` (measured: 29 ms -> 5 ms for m = 128). That form
    also gives ``y = G v = μ`` (zero on ``F``) without a product by ``G``.
    """

    def __init__(self, G: Tensor, well_conditioned: bool) -> None:
        self.G = G
        self.m = G.shape[0]
        self.H: Tensor | None = None
        # An ill-conditioned G (reg_eps = 0) would make G⁻¹, and the complement form, inexact
        # even where the direct systems G_FF are well-conditioned.
        if well_conditioned:
            L, info = torch.linalg.cholesky_ex(G)
            if not bool(info):
                # LAPACK returns the inverse column-major; it is exactly symmetric, so its
                # transpose is the same matrix stored by rows, which the gathers need.
                self.H = torch.cholesky_inverse(L).mT
                self._complement = _SetSystems(self.H, positive_definite=True)
        # The factorisation of G proves it positive definite, hence every principal submatrix.
        self._direct = _SetSystems(G, positive_definite=self.H is not None)

    def __call__(self, U: Tensor, c: Tensor, F: Tensor) -> tuple[Tensor, Tensor]:
        # The sizes of the sets are read once, for the choice of form and the systems' width.
        n_free = F.sum(dim=-1)
        sizes = n_free.tolist()
        H = self.H
        m = self.m
        if H is not None and 2 * min(sizes, default=m) > m:  # the usual case in IWRM
            B = ~F
            mu = self._complement.solve(U, B, m - n_free, m - min(sizes))
            return _from_complement(mu, H, U, B), mu
        if H is None or 2 * max(sizes, default=0) <= m:
            z = self._direct.solve(-c, F, n_free, max(sizes, default=0))
        else:
            z = torch.empty_like(U)
            by_complement = 2 * n_free > m
            direct = ~by_complement
            z[direct] = self._direct.solve(-c[direct], F[direct])
            U_c, B_c = U[by_complement], ~F[by_complement]
            z[by_complement] = _from_complement(self._complement.solve(U_c, B_c), H, U_c, B_c)
        return z, _off_sets(F, torch.addmm(c, z, self.G))


# Up to this many objectives, and this many system entries in all, the CPU solver uses
# full-size masked systems.
MAX_MASKED_M = 32
MAX_MASKED_ENTRIES = 2**16


class MaskedSolver:
    """Solves ``G_FF z_F = -c_F`` (``z = 0`` off ``F``) for many rows on full-size masked systems,
    and returns ``z`` with ``y = G z + c`` (exactly zero on ``F``).

    For a few dozen objectives the systems are tiny, and this form needs fewer tensor operations
    than compacting them: measured 15-20% faster for m = 16 and 32, but 2.7 times slower for
    m = 64 (UPGradWeighting on the benchmark's Gramians).
    """

    def __init__(self, G: Tensor) -> None:
        self.G = G

    def __call__(self, U: Tensor, c: Tensor, F: Tensor) -> tuple[Tensor, Tensor]:
        z = solve_masked(self.G, c, F)
        return z, _off_sets(F, torch.addmm(c, z, self.G))


def _off_sets(F: Tensor, y: Tensor) -> Tensor:
    """``y`` with its rounding noise on ``F`` set to zero, as the complement form gives it: the
    KKT tests then read ``y + z ⊙ diag(G)`` (one operation) instead of selecting by ``F``.
    """
    return y.masked_fill_(F, 0.0)


def _from_complement(mu: Tensor, H: Tensor, U: Tensor, B: Tensor) -> Tensor:
    """``z = v - u`` on the free set, with ``v = H μ``, and ``z = 0`` on its complement ``B``."""
    return torch.addmm(U, mu, H, beta=-1.0).masked_fill_(B, 0.0)


# Rows whose sets are at most 3/4 of the largest are solved apart (recursively) once the systems
# are 32 wide, if each part has 8 rows or more: a Cholesky costs width³ per row, padding
# included (measured on IWRM Gramians, m = 128: 26% faster for a CNN, 21% for a transformer).
_BUCKET_MIN_WIDTH = 32
_BUCKET_MIN_ROWS = 8
_BUCKET_FRACTION = 0.75


class _SetSystems:
    """Solves ``M_SS x_S = rhs_S`` for many sets ``S`` at once (``x = 0`` off ``S``), on systems
    of the size of the largest set (of each bucket of rows with sets of similar sizes).

    Each row's system is padded to that width with indices off its set, which come after the
    set's own: the set's block is then the leading block of the Cholesky factor, and zeroing
    the padding of the forward solve's result gives the exact ``x_S`` and ``x = 0`` on the
    padding (see :func:`solve_spd`). A positive-definite ``M`` is padded with its own entries,
    as every principal submatrix is then positive definite. Otherwise, the padding points to
    sentinel indices ``m, m+1, ...`` of ``M`` extended by an identity block, so that a singular
    ``M`` off the set cannot break the factorisation (the extension is built once per matrix,
    as wide as needed so far).
    """

    def __init__(self, M: Tensor, positive_definite: bool) -> None:
        self.M = M
        self.positive_definite = positive_definite
        self._extended = M
        self._width = 0
        m = M.shape[0]
        self._indices = torch.arange(2 * m, device=M.device)

    def _extension(self, width: int) -> Tensor:
        if width > self._width:
            m = self.M.shape[0]
            self._width = min(m, max(width, 2 * self._width))
            size = m + self._width
            extended = torch.zeros(size, size, dtype=self.M.dtype, device=self.M.device)
            extended[:m, :m] = self.M
            extended[m:, m:].diagonal().fill_(1.0)
            self._extended = extended
        return self._extended

    def solve(
        self, rhs: Tensor, S: Tensor, sizes: Tensor | None = None, width: int | None = None
    ) -> Tensor:
        """Solve the system of each row's set.

        ``sizes`` (``S.sum(dim=-1)``) and ``width`` (their maximum) may be given when the caller
        has them.
        """
        if sizes is None:
            sizes = S.sum(dim=-1)
        if width is None:
            width = int(sizes.max()) if S.shape[0] > 0 else 0
        if width == 0:
            return torch.zeros(S.shape, dtype=self.M.dtype, device=self.M.device)
        return self._solve_bucketed(rhs, S, sizes, width)

    def _solve_bucketed(self, rhs: Tensor, S: Tensor, sizes: Tensor, width: int) -> Tensor:
        k = S.shape[0]
        if width >= _BUCKET_MIN_WIDTH and k >= 2 * _BUCKET_MIN_ROWS:
            small = sizes <= int(width * _BUCKET_FRACTION)
            n_small = int(small.sum())
            if _BUCKET_MIN_ROWS <= n_small <= k - _BUCKET_MIN_ROWS:
                x = torch.empty(S.shape, dtype=self.M.dtype, device=self.M.device)
                sizes_small = sizes[small]
                x[small] = self._solve_bucketed(
                    rhs[small], S[small], sizes_small, int(sizes_small.max())
                )
                large = ~small
                x[large] = self._solve_padded(rhs[large], S[large], width)
                return x
        return self._solve_padded(rhs, S, width)

    def _solve_padded(self, rhs: Tensor, S: Tensor, width: int) -> Tensor:
        k, m = S.shape
        order, valid = _order(S, width, self._indices)
        if self.positive_definite:
            M, slots = self.M, order
        else:
            M = self._extension(width)
            slots = torch.where(valid, order, self._indices[m : m + width])
        solution = solve_spd(_principal_submatrices(M, slots), torch.gather(rhs, 1, order), valid)
        return torch.zeros(k, m, dtype=self.M.dtype, device=self.M.device).scatter_(
            1, order, solution
        )


def _order(S: Tensor, width: int, indices: Tensor) -> tuple[Tensor, Tensor]:
    """The first ``width`` indices of each row's set in increasing order, then of the indices off
    the set in increasing order (``[k, width]``), and where the set's own end (``valid``).

    ``indices`` is ``arange(2m)``. For narrow widths, ``topk`` of distinct keys (``j`` on
    the set, ``m + j`` off it); for wide ones, each index's position from a cumulative sum,
    scattered: measured for m = 128 with 128 rows, 127 vs 198 µs at a width of 20, but 444 vs
    227 µs at 45 and 553 vs 242 µs at 70 (where a stable argsort took 290-390 µs).
    """
    m = S.shape[-1]
    if 3 * width <= m:
        keys = torch.where(S, indices[:m], indices[m:])
        keys, order = torch.topk(keys, width, largest=False)
        return order, keys < m
    columns = indices[:m]
    before = S.cumsum(dim=-1)  # set members up to each index, included
    size = before[:, -1:]
    # A member goes to (members before it); a non-member to size + (non-members before it).
    position = torch.where(S, before - 1, (columns - before).add_(size))
    order = torch.empty_like(position).scatter_(1, position, columns.expand_as(position))
    return order[:, :width], columns[:width] < size


def _principal_submatrices(M: Tensor, slots: Tensor) -> Tensor:
    """``M[slots_r][:, slots_r]`` for every row ``slots_r`` of ``slots`` (``[k, width]``), as a new
    contiguous ``[k, width, width]`` tensor.

    One ``index_select`` of the flattened ``M`` with int32 flat indices: measured 3-4 times faster
    than advanced indexing with two broadcast indices (m = 128, k = 128: 345 -> 109 µs for a
    width of 22, 2.7 -> 0.6 ms for 69).
    """
    k, width = slots.shape
    # int32 holds half the memory of int64 in the largest index tensor, while it can index M.
    rows = slots.to(torch.int32) if M.numel() < 2**31 else slots
    flat = (rows * M.shape[-1]).unsqueeze(-1) + rows.unsqueeze(-2)
    return M.reshape(-1).index_select(0, flat.view(-1)).view(k, width, width)


def solve_masked(G: Tensor, c: Tensor, F: Tensor) -> Tensor:
    """Solve ``G_FF z_F = -c_F`` (``z = 0`` off ``F``) as ``[m, m]`` systems, identity off ``F``."""
    return solve_spd(_masked_systems(G, F), torch.where(F, -c, 0.0))


def _masked_systems(G: Tensor, F: Tensor) -> Tensor:
    """``G`` with the rows and columns off ``F`` replaced by those of the identity, per row.

    (``masked_fill`` and an in-place diagonal add: summing with a ``diag_embed`` tensor was
    measured 40 times slower on the CPU.)
    """
    keep = F.unsqueeze(-1) & F.unsqueeze(-2)
    systems = G.expand(F.shape[0], -1, -1).masked_fill(~keep, 0.0)
    systems.diagonal(dim1=-2, dim2=-1).add_((~F).to(G.dtype))
    return systems


def solve_spd(systems: Tensor, rhs: Tensor, leading: Tensor | None = None) -> Tensor:
    """Solve the batched symmetric positive-definite ``systems @ x = rhs``.

    Cholesky then two triangular solves: on the CPU, ``solve_triangular`` is several times
    faster than ``cholesky_solve``, and the batched LU of ``linalg.solve`` fails inside MKL on
    some of these padded float64 systems.

    With ``leading`` (``[..., n]``, true on a prefix of each row), only the leading block of
    each system is solved, exactly: with ``L = [[L₁, 0], [L₂, L₃]]``, the forward solve's
    result on the prefix depends on ``L₁`` alone, and setting it to zero off the prefix makes
    the backward solve return ``x₂ = 0`` and ``x₁ = L₁⁻ᵀ L₁⁻¹ rhs₁``.
    """
    if systems.requires_grad or systems.device.type != "cpu":  # (out= has no autograd)
        L, info = torch.linalg.cholesky_ex(systems)
    else:
        # In place: a symmetric matrix stored by rows is its own column-major layout, which
        # LAPACK factorises without a copy (the callers hold no other reference to `systems`).
        L = systems.mT
        info = torch.empty(L.shape[:-2], dtype=torch.int32, device=L.device)
        L, info = torch.linalg.cholesky_ex(L, out=(L, info))
    del systems
    if L.device.type == "cpu":
        if bool(info.any()):
            raise ProjectionError(
                "The regularised Gramian is not positive definite, so the dual-cone projection "
                "has no unique solution. Use a positive `reg_eps` (the default is 1e-4) and a "
                "symmetric positive semi-definite Gramian."
            )
    else:
        device_assert((info == 0).all(), "The regularised Gramian is not positive definite.")
    half = torch.linalg.solve_triangular(L, rhs.unsqueeze(-1), upper=False)
    if leading is not None:  # (out of place: autograd saves `half` for the backward pass)
        half = torch.where(leading.unsqueeze(-1), half, 0.0)
    x: Tensor = torch.linalg.solve_triangular(L.mT, half, upper=True)
    return x.squeeze(-1)
