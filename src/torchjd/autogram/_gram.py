"""The Gramian of a position-wise linear map's per-objective gradients, ghost or materialised."""

from __future__ import annotations

import torch
from torch import Tensor

from torchjd.linalg._matrix import gram


def linear_jacobian(a: Tensor, g: Tensor) -> Tensor:
    """Per-objective gradients ``J[r, s] = Σ_n g[r, s, n] a[s, n]ᵀ``: ``[R, S, p, d]``.

    Args:
        a: The inputs, ``[S, N, d]`` (``S`` sample slots, ``N`` positions per sample).
        g: The output gradients, ``[R, S, N, p]`` (``R`` objective rows).
    """
    return torch.einsum("rsnp,snd->rspd", g, a)


def linear_gramian(a: Tensor, g: Tensor, bias: bool = False) -> Tensor:
    """The ``[R·S, R·S]`` Gramian of :func:`linear_jacobian`, by the cheaper of two exact forms.

    The *ghost* form never builds the gradients: ``⟨J[r,s], J[r',s']⟩ = Σ_{n,m} (a[s,n] ·
    a[s',m]) (g[r,s,n] · g[r',s',m])``, which costs about ``(R·S·N)²(d + p)``. Materialising
    the gradients and multiplying them costs about ``R·S·N·p·d + (R·S)²·p·d``. The ghost form
    wins for few positions (MLPs, late convolution stages), materialising for long sequences.

    With ``bias``, the Gramian also counts the bias of the map (``Σ_n g[r, s, n]``): a bias is a
    weight on a constant input 1, so ``a · a'`` becomes ``a · a' + 1`` (one operation instead of
    a second Gramian).
    """
    n_rows, n_slots, n_positions, p = g.shape
    d = a.shape[-1] + int(bias)
    m = n_rows * n_slots
    ghost_cost = (m * n_positions) ** 2 * (d + p)
    materialise_cost = m * n_positions * p * d + m * m * p * d
    if ghost_cost > materialise_cost:
        if bias:
            a = torch.cat([a, a.new_ones(*a.shape[:-1], 1)], dim=-1)
        return gram(linear_jacobian(a, g).reshape(m, p * d))
    if n_positions == 1:
        inputs = a[:, 0]
        input_gram = inputs @ inputs.T  # [S, S]
        if bias:
            input_gram.add_(1.0)
        grads = g.reshape(m, p)
        grad_gram = grads @ grads.T
        # In place, on a view: a product and a copy fewer per layer and step.
        grad_gram.view(n_rows, n_slots, n_rows, n_slots).mul_(input_gram[None, :, None, :])
        return grad_gram
    input_gram = torch.einsum("snd,tkd->sntk", a, a)
    if bias:
        input_gram.add_(1.0)
    grads = g.reshape(m * n_positions, p)
    grad_gram = (grads @ grads.T).reshape(
        n_rows, n_slots, n_positions, n_rows, n_slots, n_positions
    )
    return torch.einsum("asnbtk,sntk->asbt", grad_gram, input_gram).reshape(m, m)


def sum_gramian(g: Tensor) -> Tensor:
    """The ``[R·S, R·S]`` Gramian of ``Σ_n g[r, s, n]`` (a bias), from ``g``: ``[R, S, N, p]``."""
    sums = g.sum(dim=2).reshape(-1, g.shape[-1])
    return sums @ sums.T
