"""Batched backward passes under ``torch.vmap``, shared by autojac and autogram's generic rule."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def vmap_fallback_allowed() -> Iterator[None]:
    """Silence torch's warning for an operation without a batching rule: torch then falls back
    to a correct loop over the batch, which only costs speed.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*performance drop.*")
        yield
