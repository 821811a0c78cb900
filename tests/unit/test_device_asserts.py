"""On accelerators, checks of tensor values are device-side assertions: check them in subprocesses.

A failed device-side assertion leaves the CUDA context of its process unusable, so these cases
cannot run in the test process (the in-process tests marked ``device_assert`` are skipped on
accelerators). Each case runs once with a bad value, which must abort the process with a
device-side assertion, and once with finite values, which must succeed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from settings import DEVICE

pytestmark = pytest.mark.skipif(
    DEVICE.type == "cpu", reason="on the CPU these checks raise ValueError (tested in-process)"
)

_CASES = {
    "matrix": "Mean()(torch.tensor([[1.0, BAD], [0.0, 1.0]], device=DEVICE))",
    "gramian_of_matrix": "UPGrad()(torch.tensor([[1.0, BAD], [0.0, 1.0]], device=DEVICE))",
    "gramian": "UPGradWeighting()(torch.tensor([[1.0, BAD], [BAD, 1.0]], device=DEVICE))",
}


def _run(call: str, bad: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import torch\n"
        "from torchjd.aggregation import Mean, UPGrad, UPGradWeighting\n"
        f"DEVICE = {str(DEVICE)!r}\n"
        f"BAD = {bad}\n"
        f"result = {call}\n"
        "torch.cuda.synchronize()\n"
    )
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("name", list(_CASES))
def test_non_finite_input_fails_on_the_device(name: str) -> None:
    failed = _run(_CASES[name], "float('nan')")
    assert failed.returncode != 0
    assert "device-side assert" in failed.stderr, failed.stderr[-2000:]
    passed = _run(_CASES[name], "0.5")
    assert passed.returncode == 0, passed.stderr[-2000:]
