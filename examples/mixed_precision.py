"""Mixed precision with torchjd: ``torch.autocast`` around the forward pass, ``GradScaler`` on CUDA.

The forward pass and the losses run under ``torch.autocast`` (bfloat16 on the CPU, float16 on
CUDA); the parameters, their ``.grad`` and the aggregation stay in float32. With float16, small
gradients underflow, so the losses are multiplied by the ``GradScaler``'s scale before the
backward pass and the update is divided by it in ``scaler.step``. Scaling the losses scales every
row of the Jacobian by the same positive factor, and UPGrad (like Mean, DualProj, MGDA) is
positively homogeneous, so the scaled update is exactly the scaled UPGrad update: the scaler works
unchanged. (bfloat16 has the exponent range of float32 and needs no scaler.)

Both routes are shown. With ``autojac.backward``, a Jacobian that overflowed gives a NaN update,
so the scaler skips that step by itself. With ``autogram.Engine``, the Gramian of scaled losses
is computed in float32 (the losses' dtype) and overflows far less often, but when it does, the
weighting refuses it (a weighting is not defined on an infinite Gramian): NaN weights then play
the part of the NaN update, and the scaler skips the step and lowers the scale.
"""

import argparse

import torch
from torch import Tensor
from torch.nn import Linear, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd.aggregation import UPGrad, UPGradWeighting
from torchjd.autogram import Engine
from torchjd.autojac import backward


def main(
    *,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 0.05,
    device: str = "cpu",
    amp_dtype: torch.dtype | None = None,
    autogram: bool = False,
    seed: int = 0,
) -> tuple[list[float], Sequential]:
    """Train IWRM in mixed precision; return the mean loss per step and the model."""
    torch.manual_seed(seed)
    device_type = torch.device(device).type
    if amp_dtype is None:
        amp_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    model = Sequential(Linear(10, 64), ReLU(), Linear(64, 1)).to(device)  # float32 parameters
    optimizer = SGD(model.parameters(), lr=lr)
    # A no-op when disabled, so the loop is the same on every device.
    scaler = torch.amp.GradScaler(device_type, enabled=amp_dtype == torch.float16)
    criterion = MSELoss(reduction="none")
    aggregator = UPGrad()
    weighting = UPGradWeighting()
    engine = Engine(model, batch_dim=0) if autogram else None

    inputs = torch.randn(steps, batch_size, 10, device=device)
    targets = torch.tanh(inputs[..., :3].sum(dim=-1))

    history: list[float] = []
    for step, (input, target) in enumerate(zip(inputs, targets, strict=True), start=1):
        with torch.autocast(device_type=device_type, dtype=amp_dtype):
            output = model(input).squeeze(dim=1)  # computed in amp_dtype
            losses: Tensor = criterion(output, target)  # autocast computes losses in float32
        optimizer.zero_grad()
        scaled = scaler.scale(losses)
        if engine is None:
            backward(scaled, aggregator)  # .grad is float32, like the parameters
        else:
            gramian = engine.compute_gramian(scaled)  # float32, like the losses
            if bool(gramian.isfinite().all()):  # scaler.step synchronises anyway
                weights = weighting(gramian)
            else:
                weights = torch.full_like(scaled, float("nan"))
            torch.autograd.backward(scaled, weights)  # .grad: wᵀ J, scaled
        scaler.step(optimizer)  # unscales; skips the step if the grads are not finite
        scaler.update()
        history.append(float(losses.detach().mean()))
        if step % max(1, steps // 10) == 0:
            print(f"step {step:4d}  mean loss {history[-1]:.4f}  ({amp_dtype} forward)")
    return history, model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--autogram", action="store_true", help="use autogram.Engine")
    arguments = parser.parse_args()
    main(device=arguments.device, autogram=arguments.autogram)
