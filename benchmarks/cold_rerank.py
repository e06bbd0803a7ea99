"""Re-ranking candidates from a vector file that is not in the page cache: a plain memory map against the
``MADV_RANDOM`` map that :class:`clipface.index.vectors.VectorStore` re-ranks through (vector files of
:data:`clipface.index.rows.SCATTERED_MIN_BYTES` and more).

An index larger than memory (10M x 512 float32 is 20 GB) re-ranks each query's candidates with
scattered reads of 2 KB rows from its memory-mapped ``vectors.f32``. Around every page fault the
kernel reads ahead (128 KB by default), which suits exact search's sequential pass but turns each
2 KB row into a 128 KB read. The script writes ``--n`` random rows, drops the file from the page
cache (``posix_fadvise(DONTNEED)``) before every trial, and re-ranks ``--queries`` queries x
``--candidates`` random candidates through each map, the two alternating, ``--repeats`` times.
It records the wall time and the bytes the process read from disk (``/proc/self/io``).

    python benchmarks/cold_rerank.py                     # 1M rows (a 2 GB file), about a minute
    python benchmarks/cold_rerank.py --n 50000 --tmp /tmp   # a 100 MB file, where read-ahead wins

Writes ``benchmarks/results/cold_rerank.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine_info  # (benchmarks/ is on sys.path when run as a script)
from clipface.files import write_json, write_text
from clipface.index.ann.exact import rerank
from clipface.index.rows import scattered_view
from clipface.report.markdown import md_table
from clipface.versions import versions

DIM = 512


def read_bytes() -> int:
    """Bytes this process has read from storage so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes"):
            return int(line.split()[1])
    return 0


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="rows in the vector file")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--candidates", type=int, default=80, help="candidates per query (k_factor x k)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tmp", type=Path, default=None, help="folder for the temporary vector file")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    info = machine_info()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "vectors.f32"
        with open(path, "wb") as fh:
            for i in range(0, args.n, 100_000):
                fh.write(rng.standard_normal((min(100_000, args.n - i), DIM), dtype=np.float32).tobytes())
        queries = rng.standard_normal((args.queries, DIM)).astype(np.float32)
        trials: dict[str, list[dict[str, float]]] = {"plain map": [], "MADV_RANDOM map": []}
        for _ in range(args.repeats):
            for name in trials:
                candidates = rng.integers(0, args.n, (args.queries, args.candidates))
                drop_cache(path)
                mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(args.n, DIM))
                view = mapped if name == "plain map" else scattered_view(mapped, min_bytes=0)
                before, start = read_bytes(), time.perf_counter()
                rerank(view, queries, candidates, 10)
                seconds, read = time.perf_counter() - start, read_bytes() - before
                trials[name].append({"seconds": seconds, "read_mb": read / 2**20})
                del view, mapped
    rows_read = args.queries * args.candidates
    summary = {
        name: {
            "median_ms": float(np.median([t["seconds"] for t in ts]) * 1000),
            "median_read_mb": float(np.median([t["read_mb"] for t in ts])),
            "bytes_per_row": float(np.median([t["read_mb"] for t in ts]) * 2**20 / rows_read),
        }
        for name, ts in trials.items()
    }
    doc = {
        "benchmark": "cold_rerank",
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "tmp")},
        "machine": info,
        "versions": versions(),
        "trials": trials,
        "summary": summary,
    }
    plain, scattered = summary["plain map"], summary["MADV_RANDOM map"]
    md = [
        "# Re-ranking from a vector file outside the page cache",
        "",
        f"{args.n:,} x {DIM} float32 rows ({args.n * DIM * 4 / 2**30:.1f} GB), dropped from the page cache before "
        f"each trial; {args.queries} queries x {args.candidates} random candidates ({rows_read:,} rows of "
        f"{DIM * 4:,} bytes) re-ranked by `clipface.index.ann.exact.rerank`; median of {args.repeats} trials, the "
        f"two maps alternating. {info['cpu']}, {info['physical_cores']} physical cores (`benchmarks/cold_rerank.py`).",
        "",
        md_table(
            ["map", "ms", "MB read from disk", "bytes read per row"],
            [
                [name, f"{s['median_ms']:,.0f}", f"{s['median_read_mb']:,.0f}", f"{s['bytes_per_row']:,.0f}"]
                for name, s in summary.items()
            ],
        ),
        "",
        f"The `MADV_RANDOM` map reads {plain['median_read_mb'] / max(scattered['median_read_mb'], 1e-9):,.0f}x "
        f"fewer bytes and re-ranks {plain['median_ms'] / scattered['median_ms']:.1f}x faster.",
        "",
    ]
    write_json(args.out / "cold_rerank.json", doc)
    write_text(args.out / "cold_rerank.md", "\n".join(md))
    print(f"wrote {args.out / 'cold_rerank'}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
