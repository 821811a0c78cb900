"""The data: 1024-example subsets of scikit-learn's digits (1,797 8×8 images, shipped offline)."""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch import Tensor

SUBSET_SIZE = 1024


@dataclass(frozen=True)
class Subset:
    """A training subset: images ``[n, 1, 8, 8]`` (normalised) and labels ``[n]``, on a device."""

    images: Tensor
    labels: Tensor


def load_subset(seed: int, device: torch.device, size: int = SUBSET_SIZE) -> Subset:
    """Draw the training subset of one run.

    The images are normalised with the mean and standard deviation of all 1,797 images (one
    channel, as the paper does per channel with statistics of the full training split). Each seed
    draws a different subset, like each rerun of the paper.

    Args:
        seed: The seed of the run; it fixes the subset.
        device: Where the tensors live.
        size: The number of examples (at most 1,797).
    """
    images_np, labels_np = load_digits(return_X_y=True)
    if not 1 <= size <= len(labels_np):
        raise ValueError(
            f"Parameter `size` must be between 1 and {len(labels_np)}. Found size={size}."
        )
    images = torch.as_tensor(np.asarray(images_np, dtype=np.float32)).reshape(-1, 1, 8, 8)
    labels = torch.as_tensor(np.asarray(labels_np, dtype=np.int64))
    images = (images - images.mean()) / images.std()
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(labels), generator=generator)[:size]
    return Subset(images[chosen].to(device), labels[chosen].to(device))


def batch_order(seed: int, n_examples: int, batch_size: int, n_epochs: int) -> list[Tensor]:
    """The index batches of a run: a fresh shuffle per epoch, the last partial batch dropped.

    Every aggregator of a seed sees the same batches in the same order, so the curves differ only
    by the aggregation.

    Args:
        seed: The seed of the run.
        n_examples: The size of the subset.
        batch_size: The number of examples (objectives) per step.
        n_epochs: The number of passes over the subset.
    """
    generator = torch.Generator().manual_seed(seed + 1_000_003)
    batches: list[Tensor] = []
    for _ in range(n_epochs):
        permutation = torch.randperm(n_examples, generator=generator)
        for start in range(0, n_examples - batch_size + 1, batch_size):
            batches.append(permutation[start : start + batch_size])
    return batches
