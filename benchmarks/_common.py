"""Shared by every benchmark: what machine it ran on (CPU model, instruction sets, cores, load, versions).

Timings move 20% or more between runs and machines here, so every result records this, and
ratios are only quoted between paths measured side by side in one run.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """CPU, cores, instruction sets that matter to GEMMs, load and library versions."""
    import importlib.metadata as md

    from clipface.models.backends.threads import physical_cores

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass

    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "fma"}),
        "cpu_flags": sorted(flags),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        **{
            pkg: version(pkg)
            for pkg in ("torch", "onnxruntime", "onnx", "transformers", "numpy", "pillow", "dlib-bin", "faiss-cpu")
        },
    }


def cgroup_memory() -> dict[str, float] | None:
    """This process's memory cgroup (v1 or v2): its limit and peak use in MB, page cache included; ``None`` if
    there is no limit (a benchmark run under ``--memory-limit`` shows here what the limit held it to)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        candidates = []
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            candidates.append((base / "memory.limit_in_bytes", base / "memory.max_usage_in_bytes"))
        if controllers == "":
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            candidates.append((base / "memory.max", base / "memory.peak"))
        for limit_file, peak_file in candidates:
            try:
                limit = limit_file.read_text().strip()
                peak = peak_file.read_text().strip() if peak_file.is_file() else "0"
            except OSError:
                continue
            if limit == "max" or int(limit) >= 1 << 60:
                continue
            return {"limit_mb": int(limit) / 2**20, "peak_mb": int(peak) / 2**20}
    return None


def enter_memory_cgroup(limit_bytes: int, name: str) -> None:
    """Move this process into a new memory cgroup limited to ``limit_bytes``, page cache included (v2
    ``memory.max`` or v1 ``memory.limit_in_bytes``; needs root), so that a benchmark's own command shows that
    it fits in that much memory. Raises ``SystemExit`` with one line if the cgroup cannot be made."""
    root = Path("/sys/fs/cgroup")
    v2 = (root / "cgroup.controllers").is_file()
    group = (root if v2 else root / "memory") / f"clipface-{name}-{os.getpid()}"
    limit_file = group / ("memory.max" if v2 else "memory.limit_in_bytes")
    try:
        group.mkdir(exist_ok=True)
        limit_file.write_text(str(limit_bytes))
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        raise SystemExit(f"--memory-limit: cannot make the memory cgroup {group}: {exc.strerror or exc}") from None
