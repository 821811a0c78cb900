from __future__ import annotations

import operator

import torch
from torch import Tensor

from ._aggregator_bases import GramianWeightedAggregator
from ._utils.non_differentiable import NonDifferentiable
from ._utils.small import use_python_floats
from ._weighting_bases import _GramianWeighting


def _random_orders(m: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Draw ``m`` independent random permutations of ``range(m)``, one per row of an ``[m, m]``.

    The ``m²`` uniform draws are made at once (in float32, whatever the Gramian's dtype, so that
    a seed gives the same orders in every dtype) and sorted row-wise.
    """
    keys = torch.rand(m, m, generator=generator, dtype=torch.float32, device=device)
    return torch.argsort(keys, dim=1)


def _project_conflicts(gramian: Tensor, orders: Tensor) -> Tensor:
    """Run the PCGrad projections of every task at once and return the ``[m, m]`` coefficients.

    Row ``i`` of the result holds the coefficients ``c⁽ⁱ⁾`` of the projected gradient
    ``g_i^PC = Σ_k c⁽ⁱ⁾_k g_k``. Task ``i`` visits the tasks ``orders[i, 0], orders[i, 1], ...``
    (the entry equal to ``i`` is skipped); whenever ``p = (G c⁽ⁱ⁾)_j < 0`` it sets
    ``c⁽ⁱ⁾_j ← c⁽ⁱ⁾_j − p / G_jj``, which removes from ``g_i^PC`` its component along ``g_j``.

    The loop runs over the ``m`` positions of the orders only; at each one, all the tasks are
    updated together with masks (``torch.where``), so nothing is read back by the host. A task
    with ``G_jj = 0`` has a zero gradient, which needs no projection: it is masked out, and its
    diagonal entry is replaced by 1 so that the unused division creates no NaN. Each step costs
    ``O(m²)``, so the whole computation costs ``O(m³)`` in ``m`` small kernels.
    """
    m = gramian.shape[0]
    rows = torch.arange(m, device=gramian.device)
    diagonal = gramian.diagonal()[orders]  # [m, m]: G_jj for each task i and position
    # Where a projection may happen (j ≠ i and g_j ≠ 0) for every (task, position), precomputed.
    allowed = (orders != rows.unsqueeze(1)) & (diagonal > 0)
    safe_diagonal = torch.where(allowed, diagonal, torch.ones_like(diagonal))
    coefficients = torch.eye(m, dtype=gramian.dtype, device=gramian.device)
    for position in range(m):
        j = orders[:, position]  # [m]: the task that each task i visits now
        inner = torch.linalg.vecdot(gramian[j], coefficients)  # [m]: (G c⁽ⁱ⁾)_j = ⟨g_i^PC, g_j⟩
        # p / G_jj where p < 0 (and the projection is allowed), else 0.
        step = inner.clamp(max=0.0) / safe_diagonal[:, position]
        step = torch.where(allowed[:, position], step, 0.0)
        coefficients = coefficients.index_put((rows, j), -step, accumulate=True)
    return coefficients


def _project_conflicts_on_floats(G: list[list[float]], orders: list[list[int]]) -> list[float]:
    """The weights ``Σ_i c⁽ⁱ⁾`` of :func:`_project_conflicts`, on Python floats."""
    m = len(G)
    weights = [0.0] * m
    for i in range(m):
        coefficients = [0.0] * m
        coefficients[i] = 1.0
        for j in orders[i]:
            if j == i or G[j][j] <= 0.0:
                continue
            inner = sum(map(operator.mul, G[j], coefficients))  # (map: no frame per term)
            if inner < 0.0:
                coefficients[j] -= inner / G[j][j]
        for k in range(m):
            weights[k] += coefficients[k]
    return weights


class PCGradWeighting(NonDifferentiable, _GramianWeighting):
    """Computes the weights of PCGrad ("gradient surgery") from the Gramian ``G = J Jᵀ``.

    For each task ``i``, PCGrad starts from ``g_i^PC = g_i`` and visits the other tasks ``j`` in a
    random order; whenever ``⟨g_i^PC, g_j⟩ < 0`` it projects ``g_i^PC`` onto the normal plane of
    ``g_j``: ``g_i^PC ← g_i^PC − (⟨g_i^PC, g_j⟩ / ‖g_j‖²) g_j``. The update is ``Σ_i g_i^PC``.
    Each ``g_i^PC`` is a combination ``Σ_k c⁽ⁱ⁾_k g_k`` of the rows, and the inner products only
    need ``G``: ``⟨g_i^PC, g_j⟩ = (G c⁽ⁱ⁾)_j`` and ``‖g_j‖² = G_jj``. The weights are therefore
    ``w = Σ_i c⁽ⁱ⁾``. Zero gradients (``G_jj = 0``) are never projected on.

    The ``m`` random orders are drawn at once, as ``argsort(rand(m, m))`` (``m²`` float32 draws
    from ``generator``), and all the tasks are projected together on the Gramian's device, in its
    dtype. The outputs do not require grad. With ``m = 2`` the order plays no role, and PCGrad
    equals the sum of the projections of the two rows onto the dual cone of the rows.

    Reference: Yu et al., *Gradient Surgery for Multi-Task Learning*, NeurIPS 2020 (Algorithm 1).

    Args:
        generator: The random number generator used for the orders, on the input's device.
            Default: ``None``, i.e. the global generator (seed it with :func:`torch.manual_seed`).

    >>> import torch
    >>> PCGradWeighting()(torch.tensor([[18.0, -22.0], [-22.0, 38.0]]))
    tensor([2.2222, 1.5789])
    """

    def __init__(self, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, stat: Tensor, /) -> Tensor:
        orders = _random_orders(stat.shape[0], self.generator, stat.device)
        if use_python_floats(stat):
            weights = _project_conflicts_on_floats(stat.tolist(), orders.tolist())
            return torch.tensor(weights, dtype=stat.dtype, device=stat.device)
        return _project_conflicts(stat, orders).sum(dim=0)


class PCGrad(NonDifferentiable, GramianWeightedAggregator):
    """Sums the rows after projecting each one onto the normal plane of the rows it conflicts
    with, visited in a random order (PCGrad, "gradient surgery").

    ``A(J) = Σ_i g_i^PC``, where ``g_i^PC`` starts from the row ``g_i`` and, for each other row
    ``g_j`` in a random order, loses its component along ``g_j`` when ``⟨g_i^PC, g_j⟩ < 0``. The
    weights only depend on ``J Jᵀ`` (see :class:`PCGradWeighting`). The output does not require
    grad. For fixed orders it is linear under scaling (rescaling a row rescales its projection and
    changes no conflict), but it is non-conflicting only for ``m = 2``.

    Reference: Yu et al., *Gradient Surgery for Multi-Task Learning*, NeurIPS 2020 (Algorithm 1).

    Args:
        generator: The random number generator used for the orders, on the input's device.
            Default: ``None``, i.e. the global generator.

    >>> import torch
    >>> PCGrad()(torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    tensor([0.5848, 3.8012, 3.8012])
    """

    gramian_weighting: PCGradWeighting

    def __init__(self, *, generator: torch.Generator | None = None) -> None:
        super().__init__(PCGradWeighting(generator=generator))

    def __repr__(self) -> str:
        generator = self.gramian_weighting.generator
        arguments = "" if generator is None else f"generator={generator!r}"
        return f"{type(self).__name__}({arguments})"
