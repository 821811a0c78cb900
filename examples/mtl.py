"""Multi-task learning with ``mtl_backward``, comparing a few aggregators on a validation set.

Two regression tasks share a trunk. ``Mean`` is the usual sum-of-losses training (up to a factor);
``UPGrad`` and ``DualProj`` project the task gradients so that no task is harmed to first order;
``MGDA`` follows the minimum-norm direction. Each is trained from the same initialisation on the
same data, and the validation loss of each task is reported. Use this as a template to pick an
aggregator for your own tasks.
"""

import argparse

import torch
from torch import Tensor
from torch.nn import Linear, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import MGDA, Aggregator, DualProj, Mean, UPGrad
from torchjd.autojac import mtl_backward


def _targets(inputs: Tensor) -> tuple[Tensor, Tensor]:
    # Two related but different tasks: they share features, and partly conflict.
    return torch.tanh(inputs[..., :4].sum(-1, keepdim=True)), torch.sin(
        inputs[..., 2:6].sum(-1, keepdim=True)
    )


def train(
    aggregator: Aggregator, *, steps: int, batch_size: int, lr: float, device: str, seed: int
) -> list[float]:
    """Train from a fixed initialisation; return the validation loss of each task."""
    torch.manual_seed(seed)
    shared = Sequential(Linear(10, 32), ReLU(), Linear(32, 16), ReLU()).to(device)
    head1, head2 = Linear(16, 1).to(device), Linear(16, 1).to(device)
    params = [*shared.parameters(), *head1.parameters(), *head2.parameters()]
    optimizer = SGD(params, lr=lr)
    loss_fn = MSELoss()
    inputs = torch.randn(steps, batch_size, 10, device=device)
    targets1, targets2 = _targets(inputs)

    for input, target1, target2 in zip(inputs, targets1, targets2, strict=True):
        features = shared(input)
        loss1 = loss_fn(head1(features), target1)
        loss2 = loss_fn(head2(features), target2)
        optimizer.zero_grad()
        mtl_backward(
            losses=[loss1, loss2],
            features=features,
            tasks_params=[head1.parameters(), head2.parameters()],
            shared_params=shared.parameters(),
            A=aggregator,
        )
        optimizer.step()

    # Validation on held-out data (same generator, new draws).
    with torch.no_grad():
        val_inputs = torch.randn(512, 10, device=device)
        val1, val2 = _targets(val_inputs)
        features = shared(val_inputs)
        return [float(loss_fn(head1(features), val1)), float(loss_fn(head2(features), val2))]


def main(
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 0.1,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train once per aggregator; return the validation loss of each task per aggregator."""
    aggregators: dict[str, Aggregator] = {
        "Mean": Mean(),
        "UPGrad": UPGrad(),
        "DualProj": DualProj(),
        "MGDA": MGDA(),
    }
    results: dict[str, list[float]] = {}
    for name, aggregator in aggregators.items():
        results[name] = train(
            aggregator, steps=steps, batch_size=batch_size, lr=lr, device=device, seed=seed
        )
        task1, task2 = results[name]
        print(f"{name:9s} validation loss  task1 {task1:.4f}  task2 {task2:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
