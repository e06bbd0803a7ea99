"""Query speed of the search index: exact FAISS Flat against IVF-PQ and HNSW, on synthetic 512-d embeddings.

For each size (100k and 1M vectors by default) the script builds the indexes exactly as
``FaceIndex`` does (:func:`clipface.search.faiss_backend.new_faiss_index` with :func:`default_params`) and
measures build time, size, single-query latency (p50/p95 over ``--latency-queries`` queries,
k=10), batched throughput (queries per second over ``--queries`` queries in one call) and
recall@10 of the approximate indexes against the exact one.

The vectors imitate face embeddings rather than uniform noise (on which every approximate
index fails): ``n / 100`` "identities", each a centre in a 64-d latent space mapped to 512-d by
a fixed random linear map, images scattered around their centre, plus isotropic noise, all
L2-normalised; queries are new images of the same identities.

    python benchmarks/index_speed.py            # 100k and 1M (about 10 minutes on 2 busy cores)
    python benchmarks/index_speed.py --quick    # 20k, seconds

Writes ``benchmarks/results/index_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from clipface._util import versions, write_json, write_text
from clipface.report.markdown import md_table
from clipface.search.faiss_backend import default_params, new_faiss_index, set_search_params

K = 10
LATENT = 64


class Embeddings:
    """A seeded generator of face-like unit vectors (see the module docstring)."""

    def __init__(self, n_identities: int, dim: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.centres = rng.standard_normal((n_identities, LATENT)).astype(np.float32)
        self.mix = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)

    def draw(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), dtype=np.float32)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            z = self.centres[rng.integers(0, len(self.centres), m)] + 0.6 * rng.standard_normal(
                (m, LATENT), dtype=np.float32
            )
            x = z @ self.mix + 0.15 * rng.standard_normal((m, self.dim), dtype=np.float32)
            out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def size_mb(index: Any, kind: str, n: int, dim: int) -> float:
    if kind == "flat":
        return n * dim * 4 / 2**20
    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path) / 2**20


def measure(
    index: Any, queries: np.ndarray, single: np.ndarray, truth: np.ndarray | None, threads: int
) -> dict[str, Any]:
    """Latency of one query per call on one thread (a request thread), then batched throughput on ``threads``."""
    import faiss

    faiss.omp_set_num_threads(1)
    index.search(single[:5], K)  # warm up
    lat = []
    for q in single:
        t = time.perf_counter()
        index.search(q[None], K)
        lat.append((time.perf_counter() - t) * 1000)
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    _, ids = index.search(queries, K)
    qps = len(queries) / (time.perf_counter() - t)
    recall = 1.0 if truth is None else float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth)]))
    return {
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p95_ms": float(np.percentile(lat, 95)),
        "qps_batch": float(qps),
        "recall_at_10": recall,
        "ids": ids,
    }


def run_size(n: int, args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    gen = Embeddings(max(10, n // 100), args.dim, args.seed)
    t = time.perf_counter()
    data = gen.draw(n, seed=args.seed + 1)
    queries = gen.draw(args.queries, seed=args.seed + 2)
    single = queries[: args.latency_queries]
    log(f"n={n}: data in {time.perf_counter() - t:.1f} s")
    rows: list[dict[str, Any]] = []
    truth = None
    kinds = ["flat", "ivfpq"] + (["hnsw"] if n <= args.hnsw_max else [])
    for kind in kinds:
        t = time.perf_counter()
        index, params = new_faiss_index(kind, args.dim, data, default_params(kind, n, args.dim))
        index.add(data)
        set_search_params(index, params)
        build = time.perf_counter() - t
        mb = size_mb(index, kind, n, args.dim)
        settings = [dict(params)]
        if kind == "ivfpq":  # without re-ranking (PQ order), the default, and more lists probed
            settings = [{**params, "k_factor": 1}, dict(params), {**params, "nprobe": min(params["nlist"], 64)}]
        for s in settings:
            set_search_params(index, s)
            m = measure(index, queries, single, truth, args.threads)
            if kind == "flat":
                truth = m["ids"]
            row = {
                "n": n,
                "dim": args.dim,
                "index": kind,
                "params": s,
                "build_s": build,
                "size_mb": mb,
                **{k: v for k, v in m.items() if k != "ids"},
            }
            rows.append(row)
            log(
                f"n={n} {kind} {s}: build {build:.1f} s, p50 {row['latency_p50_ms']:.2f} ms, "
                f"p95 {row['latency_p95_ms']:.2f} ms, {row['qps_batch']:.0f} q/s, recall@10 {row['recall_at_10']:.3f}"
            )
        del index
    return rows


def markdown(doc: dict[str, Any]) -> str:
    c = doc["config"]
    rows = [
        [
            f"{r['n']:,}",
            r["index"],
            ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "exact",
            f"{r['build_s']:.1f}",
            f"{r['size_mb']:.0f}",
            f"{r['latency_p50_ms']:.2f}",
            f"{r['latency_p95_ms']:.2f}",
            f"{r['qps_batch']:,.0f}",
            f"{r['recall_at_10']:.3f}",
        ]
        for r in doc["results"]
    ]
    head = [
        "vectors",
        "index",
        "parameters",
        "build s",
        "file MB",
        "p50 ms",
        "p95 ms",
        "queries/s (batch)",
        "recall@10",
    ]
    skipped = [n for n in c["sizes"] if n > c["hnsw_max"]]
    note = (
        f" HNSW was not built at {', '.join(f'{n:,}' for n in skipped)} vectors (over --hnsw-max, build time on "
        f"{c['threads']} cores)."
        if skipped
        else ""
    )
    note += (
        " The IVF-PQ file holds the PQ codes (searched in memory) and the exact vectors, memory-mapped and read only "
        "for the"
        " `k_factor x k` candidates re-ranked; `k_factor=1` shows the PQ ranking alone."
    )
    return (
        f"# Index speed: exact vs approximate search\n\n"
        f"Synthetic face-like {c['dim']}-d unit vectors (see `benchmarks/index_speed.py`), k={K}. Latency: one query "
        "per call "
        f"on one thread ({c['latency_queries']} queries); throughput: {c['queries']} queries in one call on "
        f"{c['threads']} "
        f"threads; recall@10 against the exact Flat index. FAISS {doc['versions'].get('faiss-cpu', '?')}, {c['cpus']} "
        "CPUs "
        f"(load average {c['load_average']:.1f} at start: the machine was shared).{note}\n\n"
        + md_table(head, rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20k vectors and fewer queries (CI scale)")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200, help="batched queries (throughput, recall)")
    p.add_argument("--latency-queries", type=int, default=50)
    p.add_argument("--hnsw-max", type=int, default=200_000, help="largest size at which HNSW is built")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.latency_queries = [20_000], 100, 20
    import faiss

    faiss.omp_set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    start, load = time.perf_counter(), os.getloadavg()[0]
    results = [row for n in args.sizes for row in run_size(n, args, log)]
    doc = {
        "benchmark": "index_speed",
        "config": {
            "sizes": args.sizes,
            "dim": args.dim,
            "queries": args.queries,
            "latency_queries": args.latency_queries,
            "hnsw_max": args.hnsw_max,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "seed": args.seed,
            "quick": args.quick,
            "load_average": load,
        },
        "seconds": time.perf_counter() - start,
        "versions": versions(),
        "results": results,
    }
    name = "index_speed_quick" if args.quick else "index_speed"
    write_json(args.out / f"{name}.json", doc)
    write_text(args.out / f"{name}.md", markdown(doc))
    log(f"wrote {args.out / name}.json and .md in {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
