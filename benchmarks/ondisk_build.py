"""One process against a build in parts on Ray: the codes trained once, added by 2 Ray tasks, merged on disk.

Both builds share the same trained codes (trained once, timed once), so their answers must agree;
the single-process build adds every vector in memory (as ``FaceIndex`` does without Ray), the
other is :class:`clipface.index.parts.PartsBuild` on a local Ray cluster (``add_parts_on_ray``: a
task per slice of ``vectors.f32``, memory-mapped; ``merge_ondisk`` into ``ann.ivfdata``). Both are
then tuned (``tune_nprobe``) and searched: recall@10 against exact search, p50 latency of one query,
the memory of the opened index (heap and mapped file pages, from ``/proc/self/status``), and the
size of its files. Synthetic clustered vectors, as ``benchmarks/sharded_serving.py`` makes them::

    python benchmarks/ondisk_build.py --size 500000

Writes ``benchmarks/results/ondisk_build-SIZE.json`` and ``.md`` (with the machine's CPU).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from _common import machine_info  # (benchmarks/ is on sys.path when run as a script)
from clipface.files import write_json, write_text
from clipface.index.ann.exact import exact_search
from clipface.index.ann.faiss_backend import default_params
from clipface.index.ann.tune import tune_nprobe
from clipface.index.parts import PARTS, PartsBuild
from clipface.index.ray import add_parts_on_ray
from clipface.index.vectors import ANN, IVFDATA, VECTORS, VectorStore
from clipface.report.tables import md_table
from index_speed import CHUNK, Embeddings, latency, recall, timed
from sharded_serving import write_vectors

K = 10


def status_mb() -> dict[str, float]:
    """This process's resident memory by kind, MB (``RssAnon``: heap; ``RssFile``: mapped file pages)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def measure(folder: Path, kind: str, params: dict[str, Any], n: int, dim: int, queries, truth, single) -> dict:
    """Open the index folder as a server does, search it, and measure what it holds."""
    before = status_mb()
    store = VectorStore.open(folder, dim, kind, params, n)
    opened = status_mb()
    _, ids = store.search(queries, K)
    lat = latency(lambda q: store.search(q, K), single, 3)
    files = [folder / ANN] + ([folder / IVFDATA] if (folder / IVFDATA).is_file() else [])
    return {
        "recall_at_10": recall(ids, truth),
        **lat,
        "heap_mb": opened["RssAnon"] - before["RssAnon"],
        "mapped_mb_after_search": status_mb()["RssFile"] - before["RssFile"],
        "files_mb": sum(f.stat().st_size for f in files) / 2**20,
        "nprobe": params.get("nprobe"),
    }


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--kind", default="ivfpq", choices=("ivfpq", "ivfsq8"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--latency-queries", type=int, default=100)
    p.add_argument("--work", type=Path, default=None, help="folder for the vectors (default: a temporary one)")
    p.add_argument("--out", type=Path, default=here / "results")
    args = p.parse_args()
    import ray

    t0 = time.perf_counter()
    gen = Embeddings(max(1, args.size // 100), args.dim, seed=0)
    queries, single = gen.draw(args.queries, seed=7), gen.draw(args.latency_queries, seed=8)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        ray_dir, one_dir = Path(tmp) / "ray", Path(tmp) / "single"
        ray_dir.mkdir()
        one_dir.mkdir()
        mapped, write_s = timed(lambda: write_vectors(ray_dir / VECTORS, gen, args.size))
        os.link(ray_dir / VECTORS, one_dir / VECTORS)
        _, truth = exact_search(mapped, queries, K)
        params = default_params(args.kind, args.size, args.dim)

        parts = PartsBuild(add_parts_on_ray, args.workers)
        trained, train_s = timed(lambda: parts.train(ray_dir, args.kind, args.dim, params, mapped))

        # one process: the same trained codes, every vector added in memory, written as one ann.faiss
        one = faiss.read_index(str(parts.trained))
        t = time.perf_counter()
        for i in range(0, args.size, CHUNK):
            one.add(np.ascontiguousarray(mapped[i : i + CHUNK]))
        store = VectorStore(one_dir, args.dim, args.kind, dict(params), mapped, one)
        add_s = time.perf_counter() - t
        one_params, tune_s = timed(lambda: tune_nprobe(store))
        os.replace(store.write_ann(), one_dir / ANN)
        store = one = None
        rows.append(
            {"setup": f"one process ({args.kind})", "train_s": train_s, "add_s": add_s, "merge_s": 0.0}
            | {"tune_s": tune_s}
            | measure(one_dir, args.kind, one_params, args.size, args.dim, queries, truth, single)
        )

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            jobs_s: dict[str, float] = {}  # the tasks, then the merge, timed apart

            def run(jobs):
                out, jobs_s["add"] = timed(lambda: add_parts_on_ray(jobs))
                return out

            parts.run = run
            ray_params = dict(params)
            merged, total_s = timed(lambda: parts.add(ray_dir, trained, args.size, args.dim, ray_params))
        finally:
            ray.shutdown()
        store = VectorStore(ray_dir, args.dim, args.kind, ray_params, mapped, merged)
        ray_params, tune_s = timed(lambda: tune_nprobe(store))
        os.replace(store.write_ann(), ray_dir / ANN)
        store = merged = trained = None
        rows.append(
            {"setup": f"Ray, {args.workers} workers, merged on disk", "train_s": train_s, "add_s": jobs_s["add"]}
            | {"merge_s": total_s - jobs_s["add"], "tune_s": tune_s, "parts": parts.report}
            | measure(ray_dir, args.kind, ray_params, args.size, args.dim, queries, truth, single)
        )
        shutil.rmtree(ray_dir / PARTS, ignore_errors=True)
    doc = {
        "task": "ondisk_build",
        "args": {k: str(v) for k, v in vars(args).items()},
        "factory": params["factory"],
        "write_vectors_s": write_s,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_info(),
    }
    mach = doc["machine"]
    head = ["setup", "train (s)", "add (s)", "merge (s)", "tune (s)", "recall@10", "p50 (ms)", "heap (MB)"]
    table = md_table(
        [*head, "mapped after search (MB)", "ann files (MB)"],
        [
            [r["setup"]]
            + [f"{r[k]:.1f}" for k in ("train_s", "add_s", "merge_s", "tune_s")]
            + [f"{r['recall_at_10']:.3f}", f"{r['latency_p50_ms']:.2f}", f"{r['heap_mb']:.0f}"]
            + [f"{r['mapped_mb_after_search']:.0f}", f"{r['files_mb']:.0f}"]
            for r in rows
        ],
    )
    md = (
        f"# Building in parts on Ray and merging on disk ({args.size:,} vectors, {args.dim}-d, {params['factory']})\n\n"
        f"`python benchmarks/ondisk_build.py --size {args.size} --kind {args.kind}`; {mach['cpu']}, "
        f"{mach['physical_cores']} cores, {', '.join(mach['isa'])}; {doc['seconds']:.0f} s. The codes are trained "
        "once and shared; the Ray workers run on this machine's cores. Heap: resident anonymous memory added by "
        "opening the index; mapped: file pages resident after the searches (vectors.f32 and ann.ivfdata).\n\n"
        + table
        + "\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"ondisk_build-{args.size}"
    write_json(args.out / f"{stem}.json", doc)
    write_text(args.out / f"{stem}.md", md)
    print(md)


if __name__ == "__main__":
    main()
