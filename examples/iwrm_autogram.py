"""Instance-wise risk minimisation (IWRM) through the Gramian, with ``torchjd.autogram.Engine``.

The same training as ``iwrm_autojac.py`` (one objective per example, UPGrad), but the Jacobian is
never built: UPGrad's weights depend only on the Gramian ``G = J Jᵀ`` (``[B, B]``), which the engine
computes layer by layer from the activations and their gradients. The update ``wᵀ J`` is then just
``losses.backward(weights)``. Use this route for anything larger than a toy model: the memory of
the Jacobian (``B x n``) is replaced by that of the Gramian (``B x B``). It needs the modules to
treat the examples of the batch independently (no BatchNorm; see the ``Engine`` docs).
"""

import argparse

import torch
from torch import Tensor
from torch.nn import Linear, Module, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import UPGradWeighting
from torchjd.autogram import Engine


def make_model() -> Sequential:
    return Sequential(Linear(10, 32), ReLU(), Linear(32, 1))


def make_data(n_batches: int, batch_size: int, device: str) -> tuple[Tensor, Tensor]:
    """A learnable regression problem: a noisy non-linear function of the inputs."""
    inputs = torch.randn(n_batches, batch_size, 10, device=device)
    targets = torch.tanh(inputs[..., :3].sum(dim=-1)) + 0.1 * torch.randn(
        n_batches, batch_size, device=device
    )
    return inputs, targets


def compute_update(
    engine: Engine, model: Module, input: Tensor, target: Tensor, weighting: UPGradWeighting
) -> Tensor:
    """Fill the ``.grad`` of the parameters with the UPGrad update; return the losses."""
    criterion = MSELoss(reduction="none")  # Important to use reduction="none"
    output: Tensor = model(input)
    losses = criterion(output.squeeze(dim=1), target)  # shape: [B]
    gramian = engine.compute_gramian(losses)  # shape: [B, B]
    weights = weighting(gramian)  # shape: [B]
    losses.backward(weights)  # the gradient of weights @ losses is wᵀ J: the UPGrad update
    detached: Tensor = losses.detach()
    return detached


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
    weighting = UPGradWeighting()
    # Create the engine before the backward pass, and only once: it hooks the modules.
    engine = Engine(model.modules(), batch_dim=0)
    inputs, targets = make_data(steps, batch_size, device)

    history: list[float] = []
    for step, (input, target) in enumerate(zip(inputs, targets, strict=True), start=1):
        optimizer.zero_grad()
        losses = compute_update(engine, model, input, target, weighting)
        optimizer.step()
        history.append(float(losses.mean()))
        if step % max(1, steps // 10) == 0:
            print(f"step {step:4d}  mean loss {history[-1]:.4f}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
