"""A recurrent network (LSTM) trained with one objective per sequence.

Each sequence of the batch is its own objective (``reduction="none"``), as in IWRM. The update is
computed either through the Jacobian (``route="autojac"``: ``backward(losses, UPGrad())``) or
through the Gramian (``route="autogram"``: ``Engine`` + ``UPGradWeighting``); both give the same
update. The engine handles ``batch_first=True`` (``[B, L, F]`` inputs) and the PyTorch default
``batch_first=False`` (``[L, B, F]``): ``batch_dim=0`` refers to the losses ``[B]``, and the
engine reads the layout of the LSTM from its ``batch_first`` attribute.
"""

import argparse
from typing import Literal

import torch
from torch import Tensor
from torch.nn import LSTM, Linear, Module, MSELoss
from torch.optim import SGD

from torchjd.aggregation import UPGrad, UPGradWeighting
from torchjd.autogram import Engine
from torchjd.autojac import backward


class SequenceRegressor(Module):
    """An LSTM reading a sequence, and a linear head on its last hidden state."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.lstm = LSTM(input_size=4, hidden_size=16, batch_first=batch_first)
        self.head = Linear(16, 1)

    def forward(self, input: Tensor) -> Tensor:
        output, _ = self.lstm(input)
        last = output[:, -1] if self.batch_first else output[-1]  # [B, 16]
        prediction: Tensor = self.head(last)
        return prediction.squeeze(dim=1)  # [B]


def main(
    *,
    steps: int = 100,
    batch_size: int = 16,
    seq_len: int = 12,
    batch_first: bool = True,
    route: Literal["autojac", "autogram"] = "autogram",
    lr: float = 0.5,
    device: str = "cpu",
    seed: int = 0,
) -> list[float]:
    """Train the LSTM to predict the mean of the first feature; return the mean loss per step."""
    torch.manual_seed(seed)
    model = SequenceRegressor(batch_first).to(device)
    optimizer = SGD(model.parameters(), lr=lr)
    criterion = MSELoss(reduction="none")
    aggregator, weighting = UPGrad(), UPGradWeighting()
    engine = Engine(model.modules(), batch_dim=0) if route == "autogram" else None

    inputs = torch.randn(steps, batch_size, seq_len, 4, device=device)  # [steps, B, L, F]
    targets = inputs[..., 0].mean(dim=-1)  # [steps, B]

    history: list[float] = []
    for step, (input, target) in enumerate(zip(inputs, targets, strict=True), start=1):
        if not batch_first:
            input = input.transpose(0, 1)  # [L, B, F]
        losses = criterion(model(input), target)  # shape: [B]
        optimizer.zero_grad()
        if engine is None:
            # torch.vmap has no batching rule for the LSTM's backward on the CPU: compute the
            # Jacobian's rows one by one (the autogram route does not have this limitation).
            backward(losses, aggregator, parallel_chunk_size=1)
        else:
            losses.backward(weighting(engine.compute_gramian(losses)))
        optimizer.step()
        history.append(float(losses.detach().mean()))
        if step % max(1, steps // 10) == 0:
            print(f"step {step:4d}  mean loss {history[-1]:.4f}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--route", choices=["autojac", "autogram"], default="autogram")
    parser.add_argument("--sequence-first", action="store_true")
    args = parser.parse_args()
    main(device=args.device, route=args.route, batch_first=not args.sequence_first)
