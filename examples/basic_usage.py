"""Basic usage: the README's example, multi-task learning with ``mtl_backward`` and UPGrad.

A shared trunk feeds two task heads. ``mtl_backward`` gives each head the plain gradient of its own
loss, and gives the trunk the UPGrad aggregation of the Jacobian of both losses, so that the update
of the shared parameters does not increase either loss (to first order). Start here.
"""

import argparse

import torch
from torch.nn import Linear, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd import mtl_backward
from torchjd.aggregation import UPGrad


def main(
    *, n_batches: int = 8, batch_size: int = 16, device: str = "cpu", seed: int = 0
) -> list[float]:
    """Train for one pass over random data; return the sum of the two losses at each step."""
    torch.manual_seed(seed)
    shared_module = Sequential(Linear(10, 5), ReLU(), Linear(5, 3), ReLU()).to(device)
    task1_module = Linear(3, 1).to(device)
    task2_module = Linear(3, 1).to(device)
    params = [
        *shared_module.parameters(),
        *task1_module.parameters(),
        *task2_module.parameters(),
    ]

    loss_fn = MSELoss()
    optimizer = SGD(params, lr=0.1)
    A = UPGrad()

    # n_batches batches of batch_size random input vectors of length 10, and targets for each task
    inputs = torch.randn(n_batches, batch_size, 10, device=device)
    task1_targets = torch.randn(n_batches, batch_size, 1, device=device)
    task2_targets = torch.randn(n_batches, batch_size, 1, device=device)

    history: list[float] = []
    for input, target1, target2 in zip(inputs, task1_targets, task2_targets, strict=True):
        features = shared_module(input)
        output1 = task1_module(features)
        output2 = task2_module(features)
        loss1 = loss_fn(output1, target1)
        loss2 = loss_fn(output2, target2)

        optimizer.zero_grad()
        mtl_backward(
            losses=[loss1, loss2],
            features=features,
            tasks_params=[task1_module.parameters(), task2_module.parameters()],
            shared_params=shared_module.parameters(),
            A=A,
        )
        optimizer.step()
        history.append(float((loss1 + loss2).detach()))
        print(f"step {len(history):3d}  loss1 + loss2 {history[-1]:.4f}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
