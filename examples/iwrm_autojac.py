"""Instance-wise risk minimisation (IWRM) through the Jacobian, with ``torchjd.autojac.backward``.

In IWRM every training example is its own objective: the loss is computed with
``reduction="none"``, and the Jacobian of the ``[B]`` per-example losses is aggregated by UPGrad
instead of being averaged (which would be plain SGD). This route builds the Jacobian ``[B, n]``
explicitly: simple and works with any aggregator, but its memory grows with ``B x n``. For the
Gramian-based route, cheaper for large models, see ``iwrm_autogram.py``.
"""

import argparse

import torch
from torch import Tensor
from torch.nn import Linear, Module, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import UPGrad
from torchjd.autojac import backward


def make_model() -> Sequential:
    return Sequential(Linear(10, 32), ReLU(), Linear(32, 1))


def make_data(n_batches: int, batch_size: int, device: str) -> tuple[Tensor, Tensor]:
    """A learnable regression problem: a noisy non-linear function of the inputs."""
    inputs = torch.randn(n_batches, batch_size, 10, device=device)
    targets = torch.tanh(inputs[..., :3].sum(dim=-1)) + 0.1 * torch.randn(
        n_batches, batch_size, device=device
    )
    return inputs, targets


def compute_update(model: Module, input: Tensor, target: Tensor, aggregator: UPGrad) -> Tensor:
    """Fill the ``.grad`` of the parameters with the aggregated Jacobian; return the losses."""
    criterion = MSELoss(reduction="none")  # one loss per example: each is an objective
    output: Tensor = model(input)
    losses: Tensor = criterion(output.squeeze(dim=1), target)  # shape: [B]
    backward(losses, aggregator)  # Jacobian [B, n] -> UPGrad -> .grad
    return losses.detach()


def main(
    *,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 0.05,
    device: str = "cpu",
    seed: int = 0,
) -> list[float]:
    """Train with IWRM; return the mean training loss at each step."""
    torch.manual_seed(seed)
    model = make_model().to(device)
    optimizer = SGD(model.parameters(), lr=lr)
    aggregator = UPGrad()
    inputs, targets = make_data(steps, batch_size, device)

    history: list[float] = []
    for step, (input, target) in enumerate(zip(inputs, targets, strict=True), start=1):
        optimizer.zero_grad()  # backward accumulates into .grad, like autograd
        losses = compute_update(model, input, target, aggregator)
        optimizer.step()
        history.append(float(losses.mean()))
        if step % max(1, steps // 10) == 0:
            print(f"step {step:4d}  mean loss {history[-1]:.4f}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
