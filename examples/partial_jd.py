"""Partial Jacobian descent: only the last layers take part in the Gramian.

The weights of UPGrad come from the Gramian of the Jacobian. Computing it over *all* parameters is
the exact method; computing it over the last layers only is a cheap approximation: the engine then
hooks only those modules (less work and memory in the Gramian pass), and the weights it gives are
still used to backpropagate ``weights @ losses`` through the *whole* model, so every parameter is
trained. The early layers thus get the update ``wᵀ J`` with weights chosen from the conflicts seen
by the last layers only. Use it when the full Gramian is too expensive, or to measure how much the
first layers matter for the aggregation.
"""

import argparse

import torch
from torch.nn import Linear, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import UPGradWeighting
from torchjd.autogram import Engine


def main(
    *,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 0.05,
    device: str = "cpu",
    seed: int = 0,
) -> list[float]:
    """Train with partial Jacobian descent; return the mean training loss at each step."""
    torch.manual_seed(seed)
    model = Sequential(Linear(10, 64), ReLU(), Linear(64, 32), ReLU(), Linear(32, 1)).to(device)
    optimizer = SGD(model.parameters(), lr=lr)
    criterion = MSELoss(reduction="none")
    weighting = UPGradWeighting()
    # Only the parameters of model[2:] (the last two Linear layers) enter the Gramian.
    engine = Engine(model[2:].modules(), batch_dim=0)

    inputs = torch.randn(steps, batch_size, 10, device=device)
    targets = torch.tanh(inputs[..., :3].sum(dim=-1))

    history: list[float] = []
    for step, (input, target) in enumerate(zip(inputs, targets, strict=True), start=1):
        losses = criterion(model(input).squeeze(dim=1), target)  # shape: [B]
        optimizer.zero_grad()
        gramian = engine.compute_gramian(losses)  # [B, B], over model[2:] only
        weights = weighting(gramian)
        losses.backward(weights)  # reaches every parameter, model[0] included
        optimizer.step()
        history.append(float(losses.detach().mean()))
        if step % max(1, steps // 10) == 0:
            print(f"step {step:4d}  mean loss {history[-1]:.4f}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
