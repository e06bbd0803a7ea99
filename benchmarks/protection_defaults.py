"""Fawkes-style cloaks at mode high, robust (the default) and as published, each measured clean and reposted as JPEG.

    python benchmarks/protection_defaults.py                  # about 25 minutes on 2 cores (70 cloaks per setting)

Runs ``clipface eval protection`` (FaceCure's protocol, FaceNet as surrogate, FaceNet white-box and dlib
transfer, 10 LFW people with >= 10 photos) four times: robust and ``--published``, each as saved and with
``--repost-jpeg 75``. The reposted runs reuse their setting's cloaks. Each result is copied to
``benchmarks/results/protection/defaults-fawkes-high-SETTING[-repost].{json,md}`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "protection"
COMMON = [
    "--method", "fawkes", "--mode", "high", "--surrogate", "facenet-casia", "--model", "facenet-casia",
    "--model", "dlib", "--min-images", "10", "--max-identities", "10", "--max-per-identity", "10", "-q",
]  # fmt: skip
RUNS = {
    "robust": [],
    "robust-repost": ["--repost-jpeg", "75"],
    "published": ["--published"],
    "published-repost": ["--published", "--repost-jpeg", "75"],
}


def collect(name: str, out: Path, command: list[str], seconds: float | None, machine: dict) -> None:
    """Copy one run's results into ``RESULTS`` with the machine and the command that made them."""
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    doc["benchmark"] = {"command": " ".join(command), "seconds": seconds, "machine": machine}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"defaults-fawkes-high-{name}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    md = (out / "results.md").read_text(encoding="utf-8")
    flags = ", ".join(machine["isa"]) or "none of AVX2/AVX-512/AMX"
    tail = f"\n\nMeasured on {machine['cpu']} ({machine['physical_cores']} cores; {flags}) with `{' '.join(command)}`"
    stem.with_suffix(".md").write_text(md.rstrip() + tail + (f", {seconds:.0f} s.\n" if seconds else ".\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(HERE.parents[1] / "shared" / "datasets" / "lfw-deepfunneled"))
    parser.add_argument("--work", type=Path, default=Path("runs/protection-defaults"), help="runs and cloaks here")
    args = parser.parse_args()
    machine = machine_info()
    for name, extra in RUNS.items():
        out = args.work / name
        command = ["clipface", "eval", "protection", *COMMON, "--dataset", args.dataset, *extra]
        command += ["--cloak-dir", str(args.work / "cloaks"), "--out", str(out)]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clipface", *command[1:]], check=True)
        collect(name, out, command, time.perf_counter() - start, machine)
        print(f"{name}: {time.perf_counter() - start:.0f} s -> {RESULTS}/defaults-fawkes-high-{name}.md")


if __name__ == "__main__":
    main()
