"""Opt out by face at scale: how long enrolling one person takes against millions of stored faces (exact matching).

An opt-out is matched exactly against every stored face (:meth:`clipface.index.facestore.FaceStore.person_scores`,
a matrix product block by block over the memory-mapped ``faces.f32``; the fused rule adds the second
model's store and a normalisation by each model's cohort, :class:`clipface.index.fusion.FusedScorer`, whose
start computes every stored face's cohort statistics once: ``fused start``). An approximate face index would propose
candidates faster, but every true match it missed would be a photo of the person served: exact
matching is what the promise needs, so this measures what it costs. Synthetic unit vectors (dlib's 128
dimensions, FaceNet's 512), written to memory-mapped files of ``--sizes`` faces, one central face per
image; each size is timed cold (the file's pages dropped from the page cache where the OS lets us:
``posix_fadvise(DONTNEED)``) and warm, for one person enrolled with 3 photos, and the process's peak
resident memory is recorded (block-wise matching keeps it bounded by the block, not by the store).

    python benchmarks/opt_out_scale.py --sizes 1000000 10000000

Writes ``benchmarks/results/opt_out_scale.json`` and ``.md`` (with the machine's CPU).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import machine_info  # (benchmarks/ is on sys.path when run as a script)
from clipface.files import write_json, write_text
from clipface.index.facestore import FaceStore
from clipface.index.fusion import FusedCalibration, FusedRule, FusedScorer
from clipface.index.rows import map_rows
from clipface.report.tables import md_table

DIMS = {"dlib": 128, "facenet-casia": 512}
CHUNK = 1 << 18


def write_faces(path: Path, n: int, dim: int, seed: int) -> None:
    """``n`` random unit vectors of ``dim`` to ``path`` (float32 rows, no header), a chunk at a time."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for a in range(0, n, CHUNK):
            x = rng.standard_normal((min(CHUNK, n - a), dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            fh.write(x.tobytes())


def drop_cache(path: Path) -> bool:
    """Ask the OS to drop ``path``'s pages from the page cache (whether it could be asked)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (AttributeError, OSError):
        return False


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--work", type=Path, default=None, help="folder for the face files (default: a temporary one)")
    p.add_argument("--out", type=Path, default=here / "results")
    args = p.parse_args()
    rng = np.random.default_rng(7)
    rule = FusedRule("dlib", "facenet-casia", 100, (FusedCalibration(3, 2.5),))  # the bundled cohorts
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for n in args.sizes:
            stores, files = {}, {}
            for model, dim in DIMS.items():
                files[model] = Path(tmp) / f"{model}-{n}.f32"
                write_faces(files[model], n, dim, seed=n + dim)
                stores[model] = FaceStore(Path(tmp), dim, map_rows(files[model], n, dim), np.arange(n, dtype=np.int64))
            refs = {m: rng.standard_normal((3, d)).astype(np.float32) for m, d in DIMS.items()}
            refs = {m: r / np.linalg.norm(r, axis=1, keepdims=True) for m, r in refs.items()}
            row: dict[str, Any] = {"faces": n, "rss_before_mb": round(peak_rss_mb(), 1)}
            row["cache_dropped_before_start"] = all(drop_cache(f) for f in files.values())
            t = time.perf_counter()
            scorer = FusedScorer(rule, (stores["dlib"], stores["facenet-casia"]), n)
            row["fused_start_s"] = round(time.perf_counter() - t, 3)
            for state in ("cold", "warm"):
                if state == "cold":
                    row["cache_dropped"] = all(drop_cache(f) for f in files.values())
                t = time.perf_counter()
                stores["dlib"].person_scores(refs["dlib"], "mean")
                row[f"dlib_mean_{state}_s"] = round(time.perf_counter() - t, 3)
                t = time.perf_counter()
                scorer.removals((refs["dlib"], refs["facenet-casia"]))
                row[f"fused_{state}_s"] = round(time.perf_counter() - t, 3)
            row["peak_rss_mb"] = round(peak_rss_mb(), 1)
            row["face_files_mb"] = round(sum(f.stat().st_size for f in files.values()) / 2**20)
            rows.append(row)
            print(row, flush=True)
            for f in files.values():
                f.unlink()
    doc = {"task": "opt_out_scale", "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    doc["machine"] = mach = machine_info()
    md = (
        "# Opt out by face at scale: enrolling one person against every stored face (exact)\n\n"
        "Synthetic unit vectors, one face per image, memory-mapped; one person enrolled with 3 photos; the dlib "
        "mean rule (one store, 128-d) and the fused rule (dlib and FaceNet, 128-d and 512-d). Cold: the files' "
        "pages dropped from the page cache first; the fused rule's start (every face's cohort statistics, once) "
        "reads every page, and the process keeps them mapped, so the cold times after it are warm in fact. "
        "Peak RSS counts the mapped pages of the face files once read "
        "(page cache, shared and reclaimable), not only the heap. "
        f"`python benchmarks/opt_out_scale.py`; {mach['cpu']}, "
        f"{mach['physical_cores']} cores, {', '.join(mach['isa'])}; {doc['seconds']:.0f} s.\n\n"
        + md_table(
            [
                "faces",
                "dlib mean, cold",
                "dlib mean, warm",
                "fused start (once)",
                "fused, cold",
                "fused, warm",
                "peak RSS",
                "face files",
            ],
            [
                [
                    f"{r['faces']:,}",
                    f"{r['dlib_mean_cold_s']:.2f} s",
                    f"{r['dlib_mean_warm_s']:.2f} s",
                    f"{r['fused_start_s']:.1f} s",
                    f"{r['fused_cold_s']:.2f} s",
                    f"{r['fused_warm_s']:.2f} s",
                    f"{r['peak_rss_mb']:,.0f} MB",
                    f"{r['face_files_mb']:,} MB",
                ]
                for r in rows
            ],
        )
        + "\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "opt_out_scale.json", doc)
    write_text(args.out / "opt_out_scale.md", md)
    print(md)


if __name__ == "__main__":
    main()
