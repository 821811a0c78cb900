"""Instance-wise multi-task learning (IWMTL): one objective per (example, task) pair.

With ``T`` tasks and a batch of ``B`` examples, the losses form a ``[B, T]`` matrix. Its Jacobian
is a *generalized* Jacobian ``[B, T, n]``, and ``engine.compute_gramian(losses)`` returns its
generalized Gramian ``[B, T, T, B]``. ``Flattening(UPGradWeighting())`` treats the ``B x T``
losses as ``B * T`` objectives (UPGrad on the flattened ``[B*T, B*T]`` Gramian) and returns the
weights with the shape ``[B, T]`` of the losses, ready for ``losses.backward(weights)``. Use it
when you want neither the examples nor the tasks to be traded against each other.
"""

import argparse

import torch
from torch import Tensor
from torch.nn import Linear, Module, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import Flattening, UPGradWeighting
from torchjd.autogram import Engine


class MultiTaskModel(Module):
    """A shared trunk and ``n_tasks`` linear heads, whose outputs are stacked as ``[B, T]``."""

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        self.trunk = Sequential(Linear(10, 32), ReLU(), Linear(32, 16), ReLU())
        self.heads = Sequential(*(Linear(16, 1) for _ in range(n_tasks)))

    def forward(self, input: Tensor) -> Tensor:
        features = self.trunk(input)
        return torch.cat([head(features) for head in self.heads], dim=1)


def main(
    *,
    steps: int = 200,
    batch_size: int = 16,
    n_tasks: int = 3,
    lr: float = 0.1,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[list[float], Tensor]:
    """Train with IWMTL; return the mean loss at each step and the last weights ``[B, T]``."""
    torch.manual_seed(seed)
    model = MultiTaskModel(n_tasks).to(device)
    optimizer = SGD(model.parameters(), lr=lr)
    criterion = MSELoss(reduction="none")
    weighting = Flattening(UPGradWeighting())
    engine = Engine(model.modules(), batch_dim=0)

    inputs = torch.randn(steps, batch_size, 10, device=device)
    # Task t regresses a different smooth function of the inputs.
    targets = torch.stack([torch.tanh(inputs[..., t : t + 3].sum(-1)) for t in range(n_tasks)], -1)

    history: list[float] = []
    weights = torch.empty(0)
    for step, (input, target) in enumerate(zip(inputs, targets, strict=True), start=1):
        losses = criterion(model(input), target)  # shape: [B, T]
        optimizer.zero_grad()
        gramian = engine.compute_gramian(losses)  # shape: [B, T, T, B]
        weights = weighting(gramian)  # shape: [B, T]
        losses.backward(weights)
        optimizer.step()
        history.append(float(losses.detach().mean()))
        if step % max(1, steps // 10) == 0:
            print(f"step {step:4d}  mean loss {history[-1]:.4f}  weights {tuple(weights.shape)}")
    return history, weights


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
