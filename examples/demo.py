"""Multi-task Jacobian descent on the seed README's model, with every aggregator.

The model is the README's: a shared trunk and two regression heads. At each step, the Jacobian
of the two task losses with respect to the shared parameters is aggregated into one update by
an aggregator (the heads get their own task's gradient). Until `torchjd.backward` and
`torchjd.mtl_backward` land, the Jacobian is computed here with plain `torch.autograd.grad`.

For each aggregator, the demo prints the final losses and how often the update conflicted with
one of the tasks (an obtuse angle with a task's gradient). Averaging the gradients often
conflicts; UPGrad and MGDA never do. DualProj projects onto the dual cone of a regularised
Gramian (``reg_eps = 1e-4`` of its trace): when one task's gradient is much smaller than the
other's, that regularisation leaves small conflicts, which ``reg_eps=0`` removes.

Run it with `make demo`.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from torch.nn import Linear, Module, MSELoss, ReLU, Sequential

from torchjd.aggregation import (
    IMTLG,
    MGDA,
    Aggregator,
    AlignedMTL,
    CAGrad,
    ConFIG,
    DualProj,
    GradDrop,
    Mean,
    NashMTL,
    PCGrad,
    Random,
    UPGrad,
)

N_STEPS = 200


def make_models() -> tuple[Module, Module, Module]:
    torch.manual_seed(0)
    shared = Sequential(Linear(10, 5), ReLU(), Linear(5, 3), ReLU())
    return shared, Linear(3, 1), Linear(3, 1)


def make_data() -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(N_STEPS, 16, 10, generator=generator)
    # Two tasks that pull the trunk in partly opposite directions.
    direction = torch.randn(10, 1, generator=generator)
    targets1 = inputs @ direction + 0.1 * torch.randn(N_STEPS, 16, 1, generator=generator)
    targets2 = -0.5 * inputs @ direction + (inputs**2).sum(-1, keepdim=True) / 10
    return inputs, targets1, targets2


def train(aggregator: Aggregator) -> tuple[float, float, int]:
    """Train with one aggregator; return the final losses and the number of conflicts."""
    shared, head1, head2 = make_models()
    shared_params = list(shared.parameters())
    params = [*shared_params, *head1.parameters(), *head2.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05)
    loss_fn = MSELoss()
    conflicts = 0
    loss1 = loss2 = torch.tensor(0.0)
    for x, y1, y2 in zip(*make_data(), strict=True):
        features = shared(x)
        loss1 = loss_fn(head1(features), y1)
        loss2 = loss_fn(head2(features), y2)
        optimizer.zero_grad()
        rows = []
        for loss, head in ((loss1, head1), (loss2, head2)):
            grads = torch.autograd.grad(
                loss, [*shared_params, *head.parameters()], retain_graph=True
            )
            rows.append(torch.cat([g.flatten() for g in grads[: len(shared_params)]]))
            for p, g in zip(head.parameters(), grads[len(shared_params) :], strict=True):
                p.grad = g
        jacobian = torch.stack(rows)  # [2, number of shared parameters]
        update = aggregator(jacobian)
        # A conflict: the update makes an obtuse angle with a task's gradient (cosine < -1e-3;
        # the regularisation of UPGrad and DualProj allows cosines of order -1e-4).
        cosines = (jacobian @ update) / (jacobian.norm(dim=1) * update.norm()).clamp(min=1e-12)
        conflicts += int(bool((cosines < -1e-3).any()))
        offset = 0
        for p in shared_params:
            p.grad = update[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        optimizer.step()
    return float(loss1.detach()), float(loss2.detach()), conflicts


def main() -> None:
    aggregators: dict[str, Aggregator] = {
        "Mean": Mean(),
        "UPGrad": UPGrad(),
        "DualProj": DualProj(),
        "DualProj*": DualProj(reg_eps=0.0),
        "MGDA": MGDA(),
        "PCGrad": PCGrad(),
        "IMTLG": IMTLG(),
        "AlignedMTL": AlignedMTL(),
        "CAGrad0.5": CAGrad(c=0.5),
        "NashMTL": NashMTL(n_tasks=2),
        "ConFIG": ConFIG(),
        "GradDrop": GradDrop(),
        "Random": Random(),
    }
    print(f"{'aggregator':<12} {'loss 1':>8} {'loss 2':>8} {'conflicting steps':>18} {'time':>7}")
    for name, aggregator in aggregators.items():
        start = time.perf_counter()
        loss1, loss2, conflicts = train(aggregator)
        elapsed = time.perf_counter() - start
        losses = f"{loss1:>8.4f} {loss2:>8.4f}"
        print(f"{name:<12} {losses} {conflicts:>10} / {N_STEPS:<5} {elapsed:>6.2f}s")
    print("DualProj* is DualProj(reg_eps=0.0): no regularisation of the projection.")


if __name__ == "__main__":
    main()
