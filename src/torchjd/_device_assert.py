"""Device-side assertions: checks that do not make the host wait for an accelerator."""

from __future__ import annotations

import torch
from torch import Tensor


def device_assert(condition: Tensor, message: str) -> None:
    """Queue a device-side assertion of the boolean scalar ``condition``.

    Reading ``condition`` on the host would make it wait for the device. The assertion fails
    the device's stream instead: the next synchronising call raises an error (as for an
    out-of-range index in PyTorch), and the CUDA context cannot be used afterwards. Run with
    ``CUDA_LAUNCH_BLOCKING=1`` to see which check failed.

    Example:
        >>> import torch
        >>> device_assert(torch.tensor(True), "never shown")  # on the CPU: checked at once
    """
    # CUDA limits the message to 255 bytes.
    torch._assert_async(condition, message[:250])
