"""Peak memory of cloaking one large photo (a 12 Mpx phone photo up to 36 Mpx), the DSSIM budget checked on the file.

Each size is an LFW photo enlarged (so a real face fills the middle), saved as JPEG, and cloaked
by ``clipface cloak`` in its own process; the peak RSS is that process's. The saved PNG is then
measured again, in bounded memory (:func:`clipface.cloak.budget.ssim_sum` over the whole image in
bands), and must be within the budget and equal to the DSSIM the record states.

    python benchmarks/cloak_memory.py                        # 2000x2000, 4000x3000, 6000x6000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent
PHOTO = HERE.parent / "src" / "clipface" / "data" / "bundled" / "lfw-mini" / "Tony_Blair" / "Tony_Blair_0001.jpg"


def measure_saved(original: Path, cloak: Path) -> float:
    """DSSIM of the saved cloak against the original, over the whole image, in bounded memory."""
    import numpy as np

    from clipface.cloak.budget import ssim_sum
    from clipface.data.images import load_image

    a, b = np.asarray(load_image(original)), np.asarray(load_image(cloak))
    total, count = ssim_sum(a, b)
    return (1.0 - total / count) / 2.0


def one(size: tuple[int, int], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from PIL import Image

    person = work / f"in-{size[0]}x{size[1]}" / "Tony_Blair"
    person.mkdir(parents=True)
    src = person / "Tony_Blair_0001.jpg"
    Image.open(PHOTO).convert("RGB").resize(size, Image.BICUBIC).save(src, quality=92)
    out = work / f"out-{size[0]}x{size[1]}"
    cmd = [
        sys.executable,
        "-m",
        "clipface",
        "cloak",
        "--in",
        str(person),
        "--out",
        str(out),
        "--surrogate",
        args.surrogate,
        "--method",
        args.method,
        "--mode",
        args.mode,
        "-q",
        "--cache-dir",
        str(work / "cache"),
    ]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.method == "fawkes":  # Fawkes' targets: the other people of the bundled set
        cmd += ["--target-dir", str(PHOTO.parents[1])]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over finished children, in KB
    row: dict[str, Any] = {
        "size": list(size),
        "megapixels": round(size[0] * size[1] / 1e6, 1),
        "seconds": round(seconds, 1),
        "exit": proc.returncode,
        "peak_rss_gb": round(max(peak, before) / 2**20, 2),
    }
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return row
    record = json.loads((out / "Tony_Blair_0001.json").read_text())
    saved = measure_saved(src, out / "Tony_Blair_0001.png")
    row.update(
        budget=record["budget"],
        dssim_record=record["dssim"],
        dssim_saved=saved,
        within_budget=saved <= record["budget"],
        record_matches_saved=abs(saved - record["dssim"]) < 1e-9,
        crop=record["crop"],
        feature_shift=record["feature_shift"],
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["2000x2000", "4000x3000", "6000x6000"])
    ap.add_argument("--surrogate", default="facenet-casia")
    ap.add_argument("--method", default="fawkes")
    ap.add_argument("--mode", default="low")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cloak_memory.json")
    args = ap.parse_args()
    rows = []
    for text in args.sizes:
        w, h = (int(v) for v in text.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:  # one process per size: each peak is its own
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    text,
                    "--surrogate",
                    args.surrogate,
                    "--method",
                    args.method,
                    "--mode",
                    args.mode,
                    *(["--steps", str(args.steps)] if args.steps else []),
                    "--work",
                    tmp,
                ],
                capture_output=True,
                text=True,
            )
            try:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                row = {"size": [w, h], "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {
        "benchmark": "cloak_memory",
        "surrogate": args.surrogate,
        "method": args.method,
        "mode": args.mode,
        "steps": args.steps,
        "machine": machine_info(),
        "results": rows,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Cloaking a large photo: peak memory",
        "",
        f"`clipface cloak --method {args.method} --mode {args.mode} --surrogate {args.surrogate}"
        + (f" --steps {args.steps}" if args.steps else "")
        + "` on one enlarged LFW photo (JPEG), each size in its own process; DSSIM measured again on the saved PNG "
        "over the whole image. Memory does not grow with the steps (each step holds the same tensors). "
        f"{doc['machine']['cpu']}, {doc['machine']['physical_cores']} cores, `python benchmarks/cloak_memory.py"
        + (f" --steps {args.steps}" if args.steps else "")
        + "`.",
        "",
        "| size | Mpx | seconds | peak RSS GB | DSSIM (saved) | budget | within budget | record = saved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size'][0]}x{r['size'][1]} | — | — | — | failed: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['size'][0]}x{r['size'][1]} | {r['megapixels']} | {r['seconds']} | {r['peak_rss_gb']} | "
            f"{r['dssim_saved']:.5f} | {r['budget']} | {'yes' if r['within_budget'] else 'NO'} | "
            f"{'yes' if r['record_matches_saved'] else 'NO'} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    if "--one" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--one")
        ap.add_argument("--surrogate")
        ap.add_argument("--method")
        ap.add_argument("--mode")
        ap.add_argument("--steps", type=int, default=None)
        ap.add_argument("--work", type=Path)
        a = ap.parse_args()
        w, h = (int(v) for v in a.one.lower().split("x"))
        print(json.dumps(one((w, h), a, a.work)))
    else:
        main()
