"""GPU checks of the aggregators: host synchronisation, agreement with the CPU, and speed.

Run on a machine with CUDA: ``python benchmarks/gpu_check.py [--out FILE.json]``.

1. Sync: each aggregator is called under ``torch.cuda.set_sync_debug_mode("error")``, which makes
   every host-device synchronisation (``.item()``, ``.cpu()``, ``nonzero``, a blocking copy)
   raise. The first synchronising line of the library is reported.
2. Agreement: the CUDA result against the CPU result of the same aggregator (float32 and float64).
3. Speed: median time of each aggregator, and of ``J @ J.T``, with CUDA events (after warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import traceback
from collections.abc import Callable

import torch
from torch import Tensor

import torchjd.aggregation as agg
from torchjd.linalg import ActiveSetProjector


def _aggregators() -> dict[str, Callable[[Tensor], Tensor]]:
    upgrad_w = agg.UPGradWeighting()
    return {
        "UPGrad": agg.UPGrad(),
        "UPGrad(no graphs)": agg.UPGrad(projector=ActiveSetProjector(cuda_graphs=False)),
        "UPGradWeighting(G)": lambda J: upgrad_w(J @ J.T),
        "DualProj": agg.DualProj(),
        "MGDA": agg.MGDA(),
        "CAGrad": agg.CAGrad(c=0.5),
        "NashMTL": agg.NashMTL(n_tasks=1),  # n_tasks replaced per m below
        "PCGrad": agg.PCGrad(),
        "IMTLG": agg.IMTLG(),
        "AlignedMTL": agg.AlignedMTL(),
        "ConFIG": agg.ConFIG(),
        "GradDrop": agg.GradDrop(),
        "Krum": agg.Krum(n_byzantine=0),
        "TrimmedMean": agg.TrimmedMean(trim_number=0),
        "Mean": agg.Mean(),
        "Sum": agg.Sum(),
        "Random": agg.Random(),
    }


def _for_m(name: str, fn: Callable[[Tensor], Tensor], m: int) -> Callable[[Tensor], Tensor]:
    if name == "Krum" and m < 3:  # Krum needs m >= n_byzantine + 3
        return agg.Mean()
    if name == "NashMTL":
        return agg.NashMTL(n_tasks=m)
    return fn


def _first_library_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "torchjd" in f.filename]
    frame = ours[-1] if ours else frames[-1]
    return f"{frame.filename.split('src/')[-1]}:{frame.lineno} {frame.line}"


def check_sync(m: int, n: int) -> dict[str, str]:
    """Call each aggregator with synchronisation errors on; name the first line that syncs."""
    results = {}
    for name, fn in _aggregators().items():
        fn = _for_m(name, fn, m)
        J = torch.randn(m, n, device="cuda")
        fn(J)  # warm-up (lazy initialisations may synchronise once)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(J)
            results[name] = "sync-free"
        except RuntimeError as exc:
            results[name] = "SYNC at " + _first_library_frame(exc)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return results


def check_agreement(m: int, n: int, dtype: torch.dtype) -> dict[str, float]:
    """Relative difference between the CUDA and CPU results of each deterministic aggregator."""
    results = {}
    for name, fn in _aggregators().items():
        if name in ("Random", "GradDrop", "PCGrad"):  # random: the RNG streams differ by device
            continue
        fn = _for_m(name, fn, m)
        J = torch.randn(m, n, dtype=dtype, generator=torch.Generator().manual_seed(m))
        cpu = fn(J)
        gpu = fn(J.cuda()).cpu()
        results[name] = float((gpu - cpu).norm() / cpu.norm().clamp_min(1e-30))
    return results


def check_speed(m: int, n: int, repeats: int = 30) -> dict[str, float]:
    """Median milliseconds per call (CUDA events), with ``J @ J.T`` as the yardstick."""
    results = {}
    J = torch.randn(m, n, device="cuda")
    candidates: dict[str, Callable[[Tensor], Tensor]] = {"ref:J@J.T": lambda J: J @ J.T}
    candidates.update({k: _for_m(k, v, m) for k, v in _aggregators().items()})
    for name, fn in candidates.items():
        for _ in range(3):
            fn(J)
        times = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            fn(J)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        results[name] = statistics.median(times)
    return results


def main() -> None:
    """Run every check at a few sizes, print the report as JSON and optionally save it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for m, n in [(2, 1000), (8, 1000), (32, 100_000), (128, 100_000)]:
        key = f"m={m},n={n}"
        report[f"sync {key}"] = check_sync(m, n)
        report[f"agreement float32 {key}"] = check_agreement(m, n, torch.float32)
        report[f"agreement float64 {key}"] = check_agreement(m, n, torch.float64)
        report[f"speed ms {key}"] = check_speed(m, n)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text)


if __name__ == "__main__":
    main()
