"""Multi-task learning in PyTorch Lightning, with manual optimisation and ``mtl_backward``.

Lightning's automatic optimisation calls ``loss.backward()`` itself, which would average the
tasks. With ``self.automatic_optimization = False``, ``training_step`` owns the backward pass: it
calls ``mtl_backward`` (instead of ``self.manual_backward``) and steps the optimiser. Because
Lightning's precision plugins act in ``manual_backward``, use 32-bit or bf16 precision here, not
fp16 with a scaler (see ``mixed_precision.py`` for that). Requires ``pip install lightning``;
lightning is imported inside ``main`` so that this file can be imported without it.
"""

import argparse

import torch
from torch import Tensor
from torch.nn import Linear, Module, MSELoss, ReLU, Sequential
from torch.optim import SGD
from torch.utils.data import DataLoader, TensorDataset

from torchjd.aggregation import UPGrad
from torchjd.autojac import mtl_backward


class MultiTaskNet(Module):
    """A shared trunk and two heads (plain PyTorch; the Lightning wrapper is built in ``main``)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = Sequential(Linear(10, 32), ReLU(), Linear(32, 16), ReLU())
        self.head1 = Linear(16, 1)
        self.head2 = Linear(16, 1)


def main(
    *,
    epochs: int = 5,
    n_examples: int = 512,
    batch_size: int = 32,
    lr: float = 0.1,
    device: str = "cpu",
    seed: int = 0,
) -> list[float]:
    """Train with a Lightning ``Trainer``; return the sum of the task losses at each step."""
    import lightning  # type: ignore[import-not-found, unused-ignore]

    class LitMultiTask(lightning.LightningModule):  # type: ignore[misc, unused-ignore]
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False  # training_step does the backward pass
            self.net = MultiTaskNet()
            self.aggregator = UPGrad()
            self.loss_fn = MSELoss()
            self.history: list[float] = []

        def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
            input, target1, target2 = batch
            features = self.net.shared(input)
            loss1 = self.loss_fn(self.net.head1(features), target1)
            loss2 = self.loss_fn(self.net.head2(features), target2)
            optimizer = self.optimizers()
            optimizer.zero_grad()
            mtl_backward(
                losses=[loss1, loss2],
                features=features,
                tasks_params=[self.net.head1.parameters(), self.net.head2.parameters()],
                shared_params=self.net.shared.parameters(),
                A=self.aggregator,
            )
            optimizer.step()
            total = (loss1 + loss2).detach()
            self.log("train_loss", total, prog_bar=True)
            self.history.append(float(total))

        def configure_optimizers(self) -> SGD:
            return SGD(self.parameters(), lr=lr)

    torch.manual_seed(seed)
    inputs = torch.randn(n_examples, 10)
    targets1 = torch.tanh(inputs[:, :4].sum(-1, keepdim=True))
    targets2 = torch.sin(inputs[:, 2:6].sum(-1, keepdim=True))
    loader = DataLoader(
        TensorDataset(inputs, targets1, targets2), batch_size=batch_size, shuffle=True
    )

    module = LitMultiTask()
    trainer = lightning.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if torch.device(device).type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    history: list[float] = module.history
    per_epoch = len(history) // max(1, epochs)
    for epoch in range(epochs):
        chunk = history[epoch * per_epoch : (epoch + 1) * per_epoch]
        print(f"epoch {epoch + 1}  mean loss1 + loss2 {sum(chunk) / max(1, len(chunk)):.4f}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    main(device=parser.parse_args().device)
