"""An independent float64 reference for the dual-cone projections, used only in tests.

It calls quadprog (Goldfarb–Idnani's dual active-set method, in C and float64) once per vector,
on the same normalised and regularised Gramian as the library.
"""

from __future__ import annotations

import numpy as np
import quadprog
import torch
from torch import Tensor


def regularized_gramian(G: Tensor, norm_eps: float, reg_eps: float) -> Tensor:
    """``G / trace(G) + reg_eps I`` in float64, with zeros for a trace below ``norm_eps``."""
    G64 = G.detach().to("cpu", torch.float64)
    trace = float(G64.trace())
    normalized = G64 / trace if trace >= norm_eps else torch.zeros_like(G64)
    return normalized + reg_eps * torch.eye(G64.shape[0], dtype=torch.float64)


def project_reference(U: Tensor, G_hat: Tensor) -> Tensor:
    """Solve ``min_v vᵀ G_hat v  s.t.  v ≥ u`` for each row ``u`` of ``U`` ``[k, m]``."""
    P = G_hat.detach().to("cpu", torch.float64).numpy()
    m = P.shape[0]
    rows = []
    for u in U.detach().to("cpu", torch.float64).numpy():
        # quadprog solves min ½xᵀPx − aᵀx  s.t.  Cᵀx ≥ b; here C = I and b = u.
        rows.append(quadprog.solve_qp(P, np.zeros(m), np.eye(m), u)[0])
    return torch.from_numpy(np.array(rows).reshape(U.shape[0], m))


def gramian_norm_error(V: Tensor, V_ref: Tensor, G_hat: Tensor, U: Tensor) -> float:
    """Largest ``‖V − V_ref‖_G / max(‖V_ref‖_G, ‖U‖_G)`` over the rows: the error of the
    aggregated vector ``Jᵀv``, relative to its norm (``‖x‖_G = sqrt(xᵀ G x)``); ``‖U‖_G`` only
    matters when the solution is 0."""
    D = V.detach().to("cpu", torch.float64) - V_ref
    G64 = G_hat.to(torch.float64)
    num = torch.einsum("ki,ij,kj->k", D, G64, D).clamp(min=0.0).sqrt()
    U64 = U.detach().to("cpu", torch.float64)
    den_v = torch.einsum("ki,ij,kj->k", V_ref, G64, V_ref).clamp(min=0.0).sqrt()
    den = torch.maximum(den_v, torch.einsum("ki,ij,kj->k", U64, G64, U64).clamp(min=0.0).sqrt())
    return float((num / den.clamp(min=torch.finfo(torch.float64).tiny)).max())
