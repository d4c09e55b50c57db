"""Shared helpers for stk's benchmarks: thread setup, alternated timing, FLOPs, matmul peak, tables.

Import this module *before* torch in a benchmark script: it sets ``OMP_WAIT_POLICY=PASSIVE``
(unless the caller set it), without which OpenMP spin-waiting makes a 2-thread step 10× slower
on a machine whose other core is busy (see ``shared/notes/environment.md``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the OpenMP policy is set)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads and one inter-op thread."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


def median(xs: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return float(statistics.median(xs))


def time_once(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(fns: dict[str, Callable[[], Any]], steps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Time each function ``steps`` times, interleaved round-robin (A B C A B C …).

    Interleaving spreads the load of a shared machine evenly over the implementations, so their
    medians and ratios stay comparable even when absolute times drift. The start of each round
    rotates so no implementation always runs right after the same one.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(steps):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(time_once(fns[name]))
    return times


def matmul_gflops(n: int = 2048, reps: int = 3) -> float:
    """Best-of-``reps`` fp32 ``n×n @ n×n`` throughput in GFLOP/s (one measurement of the peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = min(time_once(lambda: torch.mm(a, b, out=out)) for _ in range(reps))
    return 2.0 * n**3 / best / 1e9


def count_flops(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """Total FLOPs of one call of ``fn`` (``FlopCounterMode``) and the per-operator split."""
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = {str(op): float(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return float(counter.get_total_flops()), per_op


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, load and library versions for a benchmark record."""
    from stk.report import cpu_name

    cpu = cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "load_avg_1_5_15": [round(x, 2) for x in load],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Write a benchmark record as indented JSON, creating parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(record, indent=2) + "\n")
