"""How many threads inference should use: the physical cores this process may run on.

Logical CPUs (hyper-threads) share one core's vector units, so a GEMM-bound model gains nothing
from them, and a container's CPU quota can be far below the host's core count that torch and
ONNX Runtime see by default; both oversubscribe and slow inference down. ``$CLIPFACE_THREADS``
overrides the choice.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path

ENV_VAR = "CLIPFACE_THREADS"


def _allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cgroup_cpu_limit() -> float | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max``), if one is set."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use, capped by the cgroup CPU quota.

    The topology is read once per set of allowed CPUs (a search asks for every query)."""
    return _physical_cores(tuple(_allowed_cpus()))


@functools.lru_cache(maxsize=16)
def _physical_cores(cpus: tuple[int, ...]) -> int:
    cores: set[object] = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:  # no sysfs topology (macOS, Windows, some sandboxes): count logical CPUs
            cores = set(cpus)
            break
    n = len(cores)
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.ceil(limit))
    return max(1, n)


def inference_threads(threads: int | None = None) -> int:
    """``threads`` if given, else ``$CLIPFACE_THREADS``, else :func:`physical_cores`."""
    if threads is not None:
        return max(1, int(threads))
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a whole number of threads, not {env!r}") from None
    return physical_cores()


def configure_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count to :func:`inference_threads` and return it."""
    import torch

    n = inference_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def prefer_passive_waits() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless already set; return whether the policy is passive.

    OpenMP reads the variable when torch loads it, so this must run before ``import torch``; once
    torch is imported it changes nothing and returns whether the policy already in force is passive.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
