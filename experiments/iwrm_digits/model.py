"""The model: the paper's small MNIST CNN (users.md §3.4) adapted to 8×8 inputs."""

import torch
from torch import nn


def make_model(seed: int, device: torch.device) -> nn.Sequential:
    """Build the CNN with PyTorch's default initialisation, seeded.

    The paper's MNIST network is Conv(1→32) ELU, Conv(32→64), MaxPool2, ELU, Conv(64→64), MaxPool3,
    ELU, Flatten, Linear(576→128) ELU, Linear(128→10). On 8×8 images two unpadded 3×3
    convolutions already shrink the map to 4×4, so the pools and the third convolution go and the
    widths are halved: Conv(1→16, 3) ELU, Conv(16→32, 3) ELU, Flatten (32·4·4 = 512),
    Linear(512→64) ELU, Linear(64→10): 42,410 parameters, 3×3 kernels, stride 1, no padding, bias.

    Args:
        seed: Fixes the initial parameters (the same for every aggregator of a seed).
        device: Where the parameters live.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3),
            nn.ELU(),
            nn.Conv2d(16, 32, 3),
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(512, 64),
            nn.ELU(),
            nn.Linear(64, 10),
        )
    return model.to(device)
