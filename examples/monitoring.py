"""Monitoring Jacobian descent: weights, conflicts between objectives, and the update direction.

Three regression tasks share a trunk. At each step we log:

- the weights UPGrad gives to the tasks;
- the pairwise cosine similarities between the task gradients, read from the Gramian
  ``G = J Jᵀ``: ``cos(g_i, g_j) = G_ij / sqrt(G_ii G_jj)`` (negative values are conflicts);
- the cosine between the update ``d = wᵀ J`` and the mean gradient ``ḡ = 1ᵀ J / m`` (what SGD
  would follow), also from the Gramian: ``d·ḡ = wᵀ G 1 / m``, ``|d|² = wᵀ G w``,
  ``|ḡ|² = 1ᵀ G 1 / m²``.

UPGrad computes its weights from the Gramian with its ``gramian_weighting``; a forward hook on it
sees both the Gramian (its input) and the weights (its output), at no extra cost. (Without hooks,
``jac_to_grad`` also returns the weights, after ``mtl_backward`` without aggregator.) Use these
numbers to see whether your tasks conflict and how far JD departs from plain gradient descent.
"""

import argparse

import torch
from torch import Tensor
from torch.nn import Linear, Module, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import UPGrad
from torchjd.autojac import mtl_backward


def gramian_statistics(gramian: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Return the pairwise cosines ``[m, m]`` and the cosine of the update to the mean gradient."""
    norms = gramian.diagonal().clamp_min(1e-12).sqrt()
    cosines = (gramian / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)
    mean_weights = torch.full_like(weights, 1.0 / weights.numel())
    dot = weights @ gramian @ mean_weights
    update_norm = (weights @ gramian @ weights).clamp_min(1e-24).sqrt()
    mean_norm = (mean_weights @ gramian @ mean_weights).clamp_min(1e-24).sqrt()
    return cosines, (dot / (update_norm * mean_norm)).clamp(-1.0, 1.0)


def main(
    *,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 0.1,
    log_every: int = 10,
    device: str = "cpu",
    seed: int = 0,
) -> list[dict[str, Tensor]]:
    """Train and return, for each step, the weights, the pairwise cosines and the update cosine."""
    torch.manual_seed(seed)
    n_tasks = 3
    shared = Sequential(Linear(10, 32), ReLU(), Linear(32, 16), ReLU()).to(device)
    heads = [Linear(16, 1).to(device) for _ in range(n_tasks)]
    params = [*shared.parameters(), *(p for head in heads for p in head.parameters())]
    optimizer = SGD(params, lr=lr)
    loss_fn = MSELoss()
    aggregator = UPGrad()
    seen: dict[str, Tensor] = {}

    def record(_module: Module, inputs: tuple[Tensor, ...], weights: Tensor) -> None:
        seen["gramian"], seen["weights"] = inputs[0].detach(), weights.detach()

    aggregator.gramian_weighting.register_forward_hook(record)

    inputs = torch.randn(steps, batch_size, 10, device=device)
    # Task 2 is the opposite of task 0: their gradients conflict.
    base = torch.tanh(inputs[..., :4].sum(-1, keepdim=True))
    targets = [base, torch.sin(inputs[..., 4:8].sum(-1, keepdim=True)), -base]

    log: list[dict[str, Tensor]] = []
    for step in range(steps):
        features = shared(inputs[step])
        losses = [
            loss_fn(head(features), target[step])
            for head, target in zip(heads, targets, strict=True)
        ]
        optimizer.zero_grad()
        mtl_backward(losses, features, aggregator, tasks_params=[h.parameters() for h in heads])
        optimizer.step()

        weights = seen["weights"]
        cosines, update_cosine = gramian_statistics(seen["gramian"], weights)
        log.append(
            {
                "losses": torch.stack(losses).detach(),
                "weights": weights,
                "cosines": cosines,
                "update_cosine": update_cosine,
            }
        )
        if (step + 1) % log_every == 0:
            off_diagonal = cosines[~torch.eye(n_tasks, dtype=torch.bool, device=device)]
            print(
                f"step {step + 1:4d}  losses {[round(float(x), 3) for x in log[-1]['losses']]}  "
                f"weights {[round(float(x), 3) for x in weights]}  "
                f"min cos(g_i, g_j) {float(off_diagonal.min()):+.3f}  "
                f"cos(update, mean) {float(update_cosine):+.3f}"
            )
    return log


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
