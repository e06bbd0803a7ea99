"""Wall time and CPU use of ``clipface eval verify --model dlib`` over LFW's pairs, from a cold cache.

Runs the command as a user would (a fresh ``--cache-dir``, so every one of the 7,701 pair
photos is detected, aligned and embedded with its mirrored crop), and samples once a second the
CPU time of the command's process tree (``/proc/PID/stat`` of it and its children) and of the
whole machine (``/proc/stat``). Reports wall time, CPU use (process-tree CPU seconds per wall
second: 2.0 = both cores of a 2-core machine busy all the time), the share of the machine's
CPU time other processes took, and the accuracy from the command's own ``results.json``.

    python benchmarks/lfw_verify_speed.py                  # the default torch port, prep in processes
    python benchmarks/lfw_verify_speed.py --backend dlib   # dlib's own network, for comparison

Writes ``benchmarks/results/lfw_verify_speed[-BACKEND].json`` and ``.md``, and copies the
command's ``results.json``/``results.md`` to ``benchmarks/results/lfw-verify/dlib-BACKEND.*``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info  # (benchmarks/ is on sys.path when run as a script)
from clipface.files import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
LFW = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lfw-deepfunneled"
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its live descendants, plus their reaped children."""
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK  # utime stime cutime cstime
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK, sum(values) / TICK


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    cache = Path(tempfile.mkdtemp(prefix="lfw-verify-cold-"))
    out = Path(tempfile.mkdtemp(prefix="lfw-verify-out-"))
    cmd = [sys.executable, "-m", "clipface", "eval", "verify", "--model", "dlib", "--dataset", str(args.dataset)]
    cmd += ["--on-no-face", "center", "--cache-dir", str(cache), "--out", str(out), "-q", "--backend", args.backend]
    log("running: " + " ".join(cmd))
    busy0, total0 = machine_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    samples, peak = [], 0.0
    last_t, last_c = start, 0.0
    while proc.poll() is None:
        time.sleep(1.0)
        now, cpu = time.perf_counter(), tree_cpu(proc.pid)
        if cpu >= last_c:  # children reaped between reads can make one sample go back
            rate = (cpu - last_c) / (now - last_t)
            samples.append(round(rate, 2))
            peak = max(peak, rate)
            last_t, last_c = now, cpu
    wall = time.perf_counter() - start
    busy1, total1 = machine_cpu()
    if proc.returncode != 0:
        raise SystemExit(f"the command failed with exit code {proc.returncode}")
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = children.ru_utime + children.ru_stime
    doc = json.loads((out / "results.json").read_text())
    result = doc["results"][0] if "results" in doc else doc
    (RESULTS / "lfw-verify").mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "results.json", RESULTS / "lfw-verify" / f"dlib-{args.backend}.json")
    shutil.copy(out / "results.md", RESULTS / "lfw-verify" / f"dlib-{args.backend}.md")
    shutil.rmtree(cache, ignore_errors=True)
    machine_busy = busy1 - busy0
    return {
        "command": " ".join(["clipface", *cmd[3:]]),
        "backend": args.backend,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_s, 1),
        "cpu_use": round(cpu_s / wall, 3),
        "cpu_use_peak": round(peak, 2),
        "cpu_use_samples": samples,
        "machine_busy_share": round(machine_busy / (total1 - total0), 3),
        "other_processes_cpu_s": round(max(0.0, machine_busy - cpu_s), 1),
        "accuracy": result["accuracy"],
        "accuracy_std": result["accuracy_std"],
        "tar_at_far_1e-3": result["tar_at_far"]["0.001"],
        "embeddings": result["embeddings"],
        "skipped": len(result.get("skipped", [])),
        "encoder": result["encoder"],
        "embed_seconds": result.get("seconds"),
    }


def markdown(doc: dict[str, Any]) -> str:
    r, m = doc["result"], doc["machine"]
    base = doc.get("baseline")
    lines = [
        "# `clipface eval verify --model dlib` over LFW's pairs, cold cache",
        "",
        f"`{r['command']}`",
        "",
        f"{m['cpu']}, {m['physical_cores']} physical cores ({m['logical_cpus']} logical), load average "
        f"{m['load_average_1m_at_start']} at start. CPU use = CPU seconds of the command's process tree per wall "
        f"second ({m['physical_cores']}.0 = every core busy all the time).",
        "",
        "| backend | wall | CPU use (mean / peak) | other processes' share of the machine | accuracy (10 folds) | "
        "TAR at FAR 1e-3 | photos embedded |",
        "|---|---|---|---|---|---|---|",
        f"| {r['backend']} | {r['wall_s'] / 60:.1f} min | {r['cpu_use']:.2f} / {r['cpu_use_peak']:.2f} | "
        f"{r['other_processes_cpu_s']:.0f} CPU s | {r['accuracy']:.4f} ± {r['accuracy_std']:.4f} | "
        f"{r['tar_at_far_1e-3']:.3f} | {r['embeddings']['computed']} |",
    ]
    if base:
        lines.append(
            f"| previous release, dlib's network in threads ({base['source']}) | {base['wall_s'] / 60:.1f} min | "
            f"about 0.99 (reported) | - | {base['accuracy']:.4f} ± {base['accuracy_std']:.4f} | "
            f"{base['tar']:.3f} | {base['computed']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="torch", choices=["torch", "dlib"])
    p.add_argument("--dataset", type=Path, default=LFW)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    info = machine_info()
    result = run(args, log)
    doc: dict[str, Any] = {"benchmark": "lfw_verify_speed", "machine": info, "result": result}
    old = RESULTS / "lfw-verify" / "dlib.json"
    if old.is_file():
        prev = json.loads(old.read_text())
        doc["baseline"] = {
            "source": "benchmarks/results/lfw-verify/dlib.json",
            "wall_s": prev["seconds"],
            "accuracy": prev["accuracy"],
            "accuracy_std": prev["accuracy_std"],
            "tar": prev["tar_at_far"]["0.001"],
            "computed": prev["embeddings"]["computed"],
        }
    name = "lfw_verify_speed" + ("" if args.backend == "torch" else f"-{args.backend}")
    write_json(args.out / f"{name}.json", doc)
    write_text(args.out / f"{name}.md", markdown(doc))
    log(f"{result['wall_s'] / 60:.1f} min, CPU use {result['cpu_use']:.2f}, accuracy {result['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
