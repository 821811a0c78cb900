"""Architectures for the exactness tests, each with an input and a differentiated output."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from settings import DEVICE, DTYPE


@dataclass
class Case:
    """A model, how to build its input and how to turn its output into the tensor to differentiate.

    ``forward(model, input)`` returns the differentiated output; ``batch_dim`` is its batch
    dimension (or ``None``).
    """

    name: str
    model: Callable[[], nn.Module]
    input: Callable[[int], Tensor]
    forward: Callable[[nn.Module, Tensor], Tensor]
    batch_dims: tuple[int | None, ...]

    def __str__(self) -> str:
        return self.name


def x_(*shape: int) -> Tensor:
    return torch.randn(*shape, device=DEVICE, dtype=DTYPE)


def tokens_(*shape: int, high: int = 11) -> Tensor:
    return torch.randint(0, high, shape, device=DEVICE)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


class TiedEmbedding(nn.Module):
    """A language-model-like net whose output head reuses the embedding matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(11, 6, padding_idx=0)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 11)
        self.head.weight = self.embedding.weight

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(torch.tanh(self.norm(self.embedding(x))))
        result: Tensor = logits.logsumexp(dim=-1)
        return result


class CalledTwiceWithFreeParameter(nn.Module):
    """One Linear used twice, a free parameter used before it, another used after."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 5)
        self.scale = nn.Parameter(torch.randn(5))
        self.shift = nn.Parameter(torch.randn(5))

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.tanh(self.linear(x * self.scale))
        result: Tensor = self.linear(hidden) + self.shift
        return result


class SharedParameter(nn.Module):
    """Two Linear modules that share a weight, and a parent that reads a child's parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4, bias=False)
        self.second.weight = self.first.weight
        self.unused_child = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.sigmoid(self.first(x))
        # The parent reads a parameter of a child that it never calls.
        result: Tensor = self.second(hidden) @ self.unused_child.weight.T
        return result


class Frozen(nn.Module):
    """A frozen layer between trainable ones, and a frozen parameter in a trainable layer."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(5, 6)
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.last = nn.Linear(6, 2)
        self.last.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.last(torch.relu(self.frozen(torch.relu(self.first(x)))))
        return out


class DictModule(nn.Module):
    """A module with pytree inputs and outputs (a dict in, a tuple with a dict out)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
        return {"sum": self.a(inputs["x"]) * self.b + inputs["y"], "x": inputs["x"]}, "tag"


class PytreeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = DictModule()
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.inner({"x": x, "y": x[:, :1].expand(-1, 4)})
        result: Tensor = self.head(out["sum"])
        return result


class Recurrent(nn.Module):
    def __init__(self, kind: type[nn.RNN | nn.LSTM | nn.GRU], batch_first: bool) -> None:
        super().__init__()
        self.rnn = kind(4, 5, num_layers=2, batch_first=batch_first, bidirectional=True)
        self.head = nn.Linear(10, 2)
        self.batch_first = batch_first

    def forward(self, x: Tensor) -> Tensor:
        out = self.rnn(x)[0]
        result: Tensor = self.head(out)  # [B, T, 2] or [T, B, 2]
        return result


class Transformer(nn.Module):
    def __init__(self, batch_first: bool, dropout: float = 0.2) -> None:
        super().__init__()
        # Declares the layout of the model's own tensors (the token indices) to the engine.
        self.batch_first = batch_first
        self.embedding = nn.Embedding(11, 8)
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=dropout, batch_first=batch_first)
        self.decoder = nn.TransformerDecoderLayer(
            8, 2, 16, dropout=dropout, batch_first=batch_first
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.layer(self.embedding(x))
        result: Tensor = self.head(self.decoder(hidden, hidden))
        return result


class ConvTwice(nn.Module):
    """One convolution applied twice (its per-sample gradients are summed over the uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.head = nn.Linear(2 * 4 * 4, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.conv(torch.tanh(self.conv(x))).flatten(start_dim=1))
        return out


class ResidualInPlace(nn.Module):
    """A ResNet-like block with in-place ReLUs and an in-place residual addition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(1, 3)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(3, 3)
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += x
        out = self.relu(out)
        result: Tensor = self.head(out.flatten(start_dim=1))
        return result


class _Scale(nn.Module):
    """A parametrization with a learnable parameter of its own."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, size))

    def forward(self, tensor: Tensor) -> Tensor:
        return tensor * self.scale.unsqueeze(-1)


class Parametrized(nn.Module):
    """Layers whose parameters are computed from others: ``torch.nn.utils.parametrize`` (weight
    and spectral normalisation, orthogonality, a learnable parametrization, on a Linear, a
    convolution, a recurrent layer and an attention's output projection) and the older
    hook-based ``weight_norm`` and ``spectral_norm``.
    """

    def __init__(self) -> None:
        super().__init__()
        new = nn.utils.parametrizations
        self.linear = new.weight_norm(nn.Linear(4, 6))
        self.orthogonal = new.orthogonal(nn.Linear(6, 6))
        self.scaled = nn.Linear(6, 6)
        nn.utils.parametrize.register_parametrization(self.scaled, "weight", _Scale(6))
        self.conv = new.spectral_norm(nn.Conv1d(6, 6, 2, padding=1))
        self.attention = nn.MultiheadAttention(6, 2, batch_first=True)
        new.weight_norm(self.attention.out_proj)
        self.recurrent = new.weight_norm(nn.GRU(6, 6, batch_first=True), name="weight_hh_l0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # (deprecated, still in use)
            self.old_weight_norm = nn.utils.weight_norm(nn.Linear(6, 6))
        self.old_spectral_norm = nn.utils.spectral_norm(nn.Conv1d(6, 3, 1))

    def forward(self, x: Tensor) -> Tensor:  # x: [B, T, 4]
        h = torch.tanh(self.scaled(self.orthogonal(torch.tanh(self.linear(x)))))
        h = self.conv(h.transpose(1, 2))[..., :-1].transpose(1, 2)
        h = h + self.attention(h, h, h, need_weights=False)[0]
        h = self.recurrent(h)[0]
        h = torch.tanh(self.old_weight_norm(h))
        out: Tensor = self.old_spectral_norm(h.transpose(1, 2)).sum(dim=2)
        return out


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, stride=2),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 2, groups=2, dilation=2, padding=1, padding_mode="circular"),
        nn.Conv2d(4, 3, (3, 1), padding="same", padding_mode="reflect", bias=False),
        nn.Flatten(),
        nn.Linear(3 * 5 * 5, 3),
    )


def convs() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(3, 4, 3, padding="same", dilation=2),
        nn.Unflatten(1, (1, 4, 1)),  # [B, 1, 4, 1, 6]
        nn.Conv3d(1, 2, (1, 1, 2), stride=(2, 1, 1), padding=(0, 1, 0), padding_mode="replicate"),
        nn.ConvTranspose3d(2, 2, 2),  # [B, 2, 3, 4, 6]
        nn.Flatten(),
        nn.Linear(2 * 3 * 4 * 6, 2),
    )


def norms() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 6),
        nn.LayerNorm(6),
        nn.RMSNorm(6),
        nn.Unflatten(2, (3, 2)),
        nn.InstanceNorm2d(3, affine=True),
        nn.Flatten(2),
        nn.Linear(6, 2),
    )


def embeddings() -> nn.Module:
    return nn.Sequential(
        nn.Embedding(11, 6, padding_idx=3),
        nn.Linear(6, 3),
    )


def per_token(model: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = model(x)
    return out


def first_column(model: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = model(x)
    return out[:, 0]


def summed(model: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = model(x)
    return out.sum(dim=tuple(range(1, out.ndim)))


def transposed(model: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = model(x)
    return out.transpose(0, 1)


def total(model: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = model(x)
    return out.sum()


def recurrent_case(kind: type[nn.RNN | nn.LSTM | nn.GRU], batch_first: bool) -> Case:
    def input(batch_size: int) -> Tensor:
        return x_(batch_size, 3, 4) if batch_first else x_(3, batch_size, 4)

    return Case(
        f"{kind.__name__}-batch-first-{batch_first}",
        lambda: Recurrent(kind, batch_first),
        input,
        per_token,
        (0 if batch_first else 1, None),
    )


CASES = [
    Case("mlp-1d", mlp, lambda b: x_(b, 5), first_column, (0, None)),
    Case("mlp-2d", mlp, lambda b: x_(b, 5), per_token, (0, None)),
    Case("mlp-2d-transposed", mlp, lambda b: x_(b, 5), transposed, (1, -1, None)),
    Case("mlp-0d", mlp, lambda b: x_(b, 5), total, (None,)),
    Case("mlp-3d", mlp, lambda b: x_(b, 2, 5), per_token, (0, None)),
    Case("cnn-groupnorm", cnn, lambda b: x_(b, 2, 9, 9), per_token, (0, None)),
    Case("residual-in-place", ResidualInPlace, lambda b: x_(b, 3, 4, 4), per_token, (0, None)),
    Case("conv-twice", ConvTwice, lambda b: x_(b, 2, 4, 4), per_token, (0, None)),
    Case("conv1d-conv3d-convtranspose", convs, lambda b: x_(b, 3, 6), summed, (0, None)),
    Case("norms", norms, lambda b: x_(b, 3, 4), per_token, (0, None)),
    Case("embedding", embeddings, lambda b: tokens_(b, 4), summed, (0, None)),
    Case("tied-embedding", TiedEmbedding, lambda b: tokens_(b, 3), per_token, (0, None)),
    Case("called-twice", CalledTwiceWithFreeParameter, lambda b: x_(b, 5), summed, (0, None)),
    Case("shared-parameter", SharedParameter, lambda b: x_(b, 3, 4), per_token, (0, None)),
    Case("frozen", Frozen, lambda b: x_(b, 5), per_token, (0, None)),
    Case("pytree", PytreeNet, lambda b: x_(b, 3), per_token, (0, None)),
    Case("parametrized", Parametrized, lambda b: x_(b, 3, 4), per_token, (0, None)),
    Case(
        "transformer-batch-first",
        lambda: Transformer(batch_first=True),
        lambda b: tokens_(b, 3),
        summed,
        (0, None),
    ),
    Case(
        "transformer-sequence-first",
        lambda: Transformer(batch_first=False),
        lambda b: tokens_(3, b),
        lambda m, x: per_token(m, x).sum(dim=2),
        (1, None),
    ),
    Case(
        "transformer-sequence-first-pooled",
        lambda: Transformer(batch_first=False),
        lambda b: tokens_(3, b),
        lambda m, x: per_token(m, x).sum(dim=(0, 2)),
        (0, None),
    ),
    Case(
        "transformer-no-dropout-batch-first",
        lambda: Transformer(batch_first=True, dropout=0.0),
        lambda b: tokens_(b, 3),
        per_token,
        (0, None),
    ),
    Case(
        "transformer-no-dropout-sequence-first",
        lambda: Transformer(batch_first=False, dropout=0.0),
        lambda b: tokens_(3, b),
        per_token,
        (1, None),
    ),
    *[
        recurrent_case(kind, batch_first)
        for kind in (nn.RNN, nn.LSTM, nn.GRU)
        for batch_first in (True, False)
    ],
]
