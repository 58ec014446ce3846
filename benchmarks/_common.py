"""Helpers shared by the benchmark scripts: environment record, timing, tables.

Benchmarks are scripts, not part of the package: nothing in ``geomrob`` imports this, and the
peer libraries they compare against are optional imports (never dependencies of geomrob).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def package_version(dist: str) -> str | None:
    """Installed version of a distribution, or ``None`` when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def loadavg() -> list[float] | None:
    """``os.getloadavg()`` as a list (``None`` where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device, dists: Sequence[str] = ()) -> dict[str, Any]:
    """Where and with what a benchmark ran: versions, device, threads, CPU."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "versions": {d: package_version(d) for d in ("geomrob", "torch", "numpy", *dists)},
    }
    env["versions"]["torch"] = torch.__version__
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], device: torch.device, repeats: int, budget: float = float("inf")
) -> tuple[Any, list[float]]:
    """Run ``fn`` up to ``repeats`` times; return the last output and every wall time (s).

    After the first call, no further call starts once ``budget`` seconds have been spent (so
    that a very slow method is timed once instead of ``repeats`` times).
    """
    times, out = [], None
    for _ in range(repeats):
        if times and sum(times) >= budget:
            break
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return out, times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: a killed run leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_json(obj: Any, path: Path) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
