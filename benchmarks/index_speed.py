"""Search speed at 100k to 10M vectors: clipface's exact search against the plain matrix product and FAISS's flat
index, and the approximate kinds (with exact re-ranking) against the first release's IVF-PQ, in one run.

For each size the script measures, on the same synthetic 512-d vectors and queries:

* ``numpy product``: ``queries @ vectors.T`` alone, the ceiling of any exact search (sizes up to
  ``--ceiling-max``; it needs ``queries x n`` floats of memory);
* ``exact``: :func:`clipface.index.ann.exact.exact_search` over the vectors memory-mapped from disk
  (blocked BLAS products and a running top-k), as a ``flat`` index searches;
* ``faiss flat``: FAISS's ``IndexFlatIP`` over the same vectors in memory;
* ``previous ivfpq``: the first release's index (``IndexRefineFlat`` over IVF-PQ, ``sqrt(n) / 2``
  lists, 64 x 8-bit codes, 16 lists probed, 4 k re-ranked);
* each approximate kind of :mod:`clipface.index.ann.faiss_backend`, built as ``FaceIndex`` builds it
  (:class:`clipface.index.vectors.VectorStore`: codes trained on a sample, vectors in a
  memory-mapped file, ``nprobe`` measured by :mod:`clipface.index.ann.tune`, candidates re-ranked
  exactly), at its default (tuned) settings and at the ``--sweep`` settings.

Columns: build time, file size (codes plus vectors), one query per call on one thread (p50/p95
latency over ``--latency-queries``), ``--queries`` queries in one call on ``--threads`` threads
(queries/s), recall@10 against exact search. Peak memory (resident anonymous memory and resident
total, sampled) is recorded per size. From ``--stream-above`` vectors on, the vectors are made and
written in chunks and never held in memory at once (the 10M run).

The vectors imitate face embeddings rather than uniform noise (on which every approximate index
fails): ``n / 100`` "identities", each a centre in a 64-d latent space mapped to 512-d by a fixed
random linear map, images scattered around their centre, plus isotropic noise, all L2-normalised;
queries are new images of the same identities.

    python benchmarks/index_speed.py --sweep --hnsw-max 100000 --merge   # 100k and 1M, keeping 10M
    python benchmarks/index_speed.py --sizes 10000000 --kinds ivfpqfs --sweep --merge --memory-limit 8
    python benchmarks/index_speed.py --quick                 # 20k, seconds

Writes ``benchmarks/results/NAME.json`` and ``.md`` (``NAME`` = ``index_speed`` by default); ``--merge`` keeps
the sizes already there that this run does not measure, each with the machine and command it was measured by.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from _common import (  # (benchmarks/ is on sys.path when run as a script)
    cgroup_memory,
    enter_memory_cgroup,
    machine_info,
)
from clipface.files import write_json, write_text
from clipface.index.ann.exact import exact_search
from clipface.index.ann.faiss_backend import APPROXIMATE, default_params, set_search_params
from clipface.index.ann.tune import needs_tuning, tune_nprobe
from clipface.index.vectors import ANN, VECTORS, VectorStore
from clipface.report.markdown import md_table
from clipface.versions import versions

K = 10
#: Calls timed per approximate setting (one takes tens of milliseconds; the median is kept).
APPROX_REPEATS = 7
#: Passes through the single queries per approximate setting (latency percentiles over all of them).
APPROX_PASSES = 5
LATENT = 64
CHUNK = 250_000


class Embeddings:
    """A seeded generator of face-like unit vectors (see the module docstring)."""

    def __init__(self, n_identities: int, dim: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.centres = rng.standard_normal((n_identities, LATENT)).astype(np.float32)
        self.mix = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)

    def chunks(self, n: int, seed: int, chunk: int = CHUNK):
        rng = np.random.default_rng(seed)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            z = self.centres[rng.integers(0, len(self.centres), m)] + 0.6 * rng.standard_normal(
                (m, LATENT), dtype=np.float32
            )
            x = z @ self.mix + 0.15 * rng.standard_normal((m, self.dim), dtype=np.float32)
            yield x / np.linalg.norm(x, axis=1, keepdims=True)

    def draw(self, n: int, seed: int) -> np.ndarray:
        return np.concatenate(list(self.chunks(n, seed))) if n else np.zeros((0, self.dim), np.float32)


class Memory:
    """Peak resident memory of this process, sampled every 0.2 s: anonymous (heap) and total (with mapped files)."""

    def __init__(self) -> None:
        self.anon = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            fields = {}
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("RssAnon", "VmRSS"):
                    fields[key] = int(value.split()[0]) * 1024
            self.anon = max(self.anon, fields.get("RssAnon", 0))
            self.total = max(self.total, fields.get("VmRSS", 0))
            self._stop.wait(0.2)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_anon_mb": self.anon / 2**20, "peak_rss_total_mb": self.total / 2**20}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def latency(search: Callable[[np.ndarray], Any], single: np.ndarray, passes: int = 1) -> dict[str, float]:
    """p50/p95 of one query per call, on one thread, over ``passes`` passes through ``single`` (a pass over 50
    queries takes 50 ms on an approximate index, and one such pass moved 1.7x with the machine's load)."""
    import faiss

    faiss.omp_set_num_threads(1)
    with threadpool_limits(1):
        for q in single[:10]:  # warm up on the path being timed: one query per call
            search(q[None])
        lat = [timed(lambda q=q: search(q[None]))[1] * 1000 for _ in range(passes) for q in single]
    return {"latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95))}


def throughput(search: Callable[[np.ndarray], Any], queries: np.ndarray, threads: int, repeats: int = 3):
    """``search(queries)``'s answer and queries per second: the median of ``repeats`` calls (one call takes
    tens of milliseconds on an approximate index, where a single reading moves with the machine's load)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    rates = []
    with threadpool_limits(threads):
        for _ in range(max(1, repeats)):
            out, seconds = timed(lambda: search(queries))
            rates.append(len(queries) / seconds)
    return out, float(np.median(rates))


def side_by_side(mapped: np.ndarray, queries: np.ndarray, single: np.ndarray, args: argparse.Namespace, stream: bool):
    """Exact search timed again just before an approximate setting (one batch call and ``--adjacent-single``
    single queries), so that each speed-up is a ratio of two readings taken seconds apart: on this shared
    machine exact search at 1M moved between 80 and 112 queries/s from one run to the next."""
    if not args.adjacent:
        return {}
    _, qps = throughput(lambda q: exact_search(mapped, q, K), queries, args.threads, 1)
    out = {"exact_qps_adjacent": qps}
    if not stream and args.adjacent_single:
        out["exact_p50_adjacent_ms"] = latency(lambda q: exact_search(mapped, q, K), single[: args.adjacent_single])[
            "latency_p50_ms"
        ]
    return out


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / K for a, b in zip(ids, truth)]))


def write_vectors(path: Path, gen: Embeddings, n: int, seed: int, sample: int) -> np.ndarray:
    """Write ``n`` vectors to ``path`` chunk by chunk; return a training sample (the first ``sample``, i.i.d.)."""
    train = []
    with open(path, "wb") as fh:
        for x in gen.chunks(n, seed):
            if sum(len(t) for t in train) < sample:
                train.append(x[: sample - sum(len(t) for t in train)].copy())
            fh.write(x.tobytes())
    return np.concatenate(train)


def run_size(n: int, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import faiss

    memory = Memory()
    gen = Embeddings(max(10, n // 100), args.dim, args.seed)
    queries = gen.draw(args.queries, seed=args.seed + 2)
    single = queries[: args.latency_queries]
    tmp = Path(tempfile.mkdtemp(prefix=f"index-speed-{n}-", dir=args.tmp))
    stream = n > args.stream_above
    t = time.perf_counter()
    sample = write_vectors(tmp / VECTORS, gen, n, args.seed + 1, 262_144)
    mapped = np.memmap(tmp / VECTORS, dtype=np.float32, mode="r", shape=(n, args.dim))
    data = None if stream else np.array(mapped)
    log(f"n={n:,}: vectors written in {time.perf_counter() - t:.0f} s ({'streamed' if stream else 'in memory'})")
    rows: list[dict[str, Any]] = []
    tunings: list[dict[str, Any]] = []
    file_mb = n * args.dim * 4 / 2**20

    def add(index: str, params: Any, build: float, mb: float, lat: dict[str, float], qps: float, rec: float) -> None:
        row = {"n": n, "index": index, "params": params, "build_s": build, "size_mb": mb, **lat, "qps_batch": qps}
        row["recall_at_10"] = rec
        rows.append(row)
        log(
            f"n={n:,} {index} {params}: build {build:.0f} s, p50 {lat.get('latency_p50_ms', float('nan')):.2f} ms, "
            f"{qps:,.1f} q/s, recall@10 {rec:.3f}"
        )

    ceiling = None
    if n <= args.ceiling_max and data is not None:
        _, ceiling = throughput(lambda q: q @ data.T, queries, args.threads)
        add("numpy product (ceiling)", "queries @ vectors.T", 0.0, file_mb, {}, ceiling, float("nan"))
    (truth_s, truth), qps = throughput(lambda q: exact_search(mapped, q, K), queries, args.threads)
    lat = latency(lambda q: exact_search(mapped, q, K), single) if not stream else {}
    add("exact (clipface, memory-mapped)", "blocked BLAS + running top-k", 0.0, file_mb, lat, qps, 1.0)
    exact_qps = qps
    if data is not None:
        flat = faiss.IndexFlatIP(args.dim)
        _, build = timed(lambda: flat.add(data))
        (_, ids), qps = throughput(lambda q: flat.search(q, K), queries, args.threads)
        lat = latency(lambda q: flat.search(q, K), single)
        add("faiss IndexFlatIP", "exact", build, file_mb, lat, qps, recall(ids, truth))
        flat = None
        if "previous" in args.kinds:
            nlist = max(1, min(2 ** round(np.log2(max(1.0, np.sqrt(n) / 2))), n // 39))
            t = time.perf_counter()
            ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(args.dim), args.dim, nlist, args.dim // 8, 8, 1)
            ivf.cp.min_points_per_centroid = 1
            ivf.pq.cp.max_points_per_centroid = 128
            ivf.train(sample[: max(65_536, 64 * nlist)])
            old = faiss.IndexRefineFlat(ivf)
            old.add(data)
            build = time.perf_counter() - t
            ivf.nprobe, old.k_factor = 16, 4
            beside = side_by_side(mapped, queries, single, args, stream)
            (_, ids), qps = throughput(lambda q: old.search(q, K), queries, args.threads, APPROX_REPEATS)
            lat = latency(lambda q: old.search(q, K), single, APPROX_PASSES) | beside
            params = {"nlist": nlist, "m": args.dim // 8, "nbits": 8, "nprobe": 16, "k_factor": 4}
            add("previous ivfpq (release 1)", params, build, file_mb + n * (args.dim // 8 + 8) / 2**20, lat, qps,
                recall(ids, truth))  # fmt: skip
            old = ivf = None
    for kind in [k for k in args.kinds if k in APPROXIMATE]:
        if kind == "hnsw" and n > args.hnsw_max:
            continue
        params = default_params(kind, n, args.dim)
        t = time.perf_counter()
        (tmp / kind).mkdir()
        store = VectorStore.create(tmp / kind, kind, args.dim, params, sample)
        for i in range(0, n, CHUNK):  # the codes, chunk by chunk (the vectors file is already written)
            store.ann.add(np.ascontiguousarray(mapped[i : i + CHUNK]))
        build = time.perf_counter() - t
        faiss.write_index(store.ann, str(tmp / kind / ANN))
        mb = file_mb + os.path.getsize(tmp / kind / ANN) / 2**20
        store.vectors = mapped
        if needs_tuning(store):  # as FaceIndex does after a build: nprobe measured on the stored vectors
            with threadpool_limits(args.threads):
                (params, tune_s) = timed(lambda st=store: tune_nprobe(st))
            tunings.append({"kind": kind, "seconds": tune_s, **params["tuned"], "nprobe": params["nprobe"]})
            log(f"n={n:,} {kind}: tuned in {tune_s:.0f} s: nprobe {params['nprobe']}, {params['tuned']}")
        base = {k: v for k, v in params.items() if k != "tuned"}
        settings = [base] + [{**base, **s} for s in args.sweep_settings.get(kind, [])]
        for s in [s for i, s in enumerate(settings) if s not in settings[:i]]:
            store.params = s
            set_search_params(store.ann, s)
            beside = side_by_side(mapped, queries, single, args, stream)
            (_, ids), qps = throughput(lambda q, st=store: st.search(q, K), queries, args.threads, APPROX_REPEATS)
            lat = latency(lambda q, st=store: st.search(q, K), single, APPROX_PASSES)
            add(kind + (" (default)" if s == base else ""), s, build, mb, lat | beside, qps, recall(ids, truth))
        store = None
        (tmp / kind / ANN).unlink(missing_ok=True)
        (tmp / kind).rmdir()
    mapped = data = None  # close the mapping before the file goes
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    mem = memory.stop()
    cgroup = cgroup_memory()
    if cgroup is not None:
        mem |= {"cgroup_limit_mb": cgroup["limit_mb"], "cgroup_peak_mb": cgroup["peak_mb"]}
    log(f"n={n:,}: peak memory {mem}")
    return {
        "n": n,
        "rows": rows,
        "tuning": tunings,
        "memory": mem,
        "exact_qps": exact_qps,
        "ceiling_qps": ceiling,
        "streamed": stream,
    }


def kept_sizes(path: Path, sizes: list[int]) -> list[dict[str, Any]]:
    """The results of an earlier run in ``path`` at sizes other than ``sizes``, each stamped with that run's
    machine, so that one file holds 100k, 1M and 10M although 10M takes its own command (and memory limit)."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    stamp = {"machine": old["machine"], "faiss": old.get("versions", {}).get("faiss-cpu")}
    return [stamp | r for r in old["results"] if r["n"] not in sizes]


def markdown(doc: dict[str, Any]) -> str:
    c = doc["config"]
    repeats = (
        f" (the median of {c['approx_repeats']} calls for approximate indexes, of 3 for exact ones)"
        if c.get("approx_repeats")
        else " (median of 3 calls)"
        if c.get("median_of_3")
        else ""
    )
    passes = f", {c['approx_passes']} passes for approximate indexes" if c.get("approx_passes") else ""
    out = [
        "# Index speed: exact and approximate search",
        "",
        f"Synthetic face-like {c['dim']}-d unit vectors (see `benchmarks/index_speed.py`), k={K}. Latency: one "
        f"query per call on one thread ({c['latency_queries']} queries{passes}); throughput: {c['queries']} "
        f"queries in one call on {c['threads']} threads{repeats}; recall@10 "
        f"against clipface's exact search. File size: the vectors (float32) plus the codes."
        + (
            f" x exact: against exact search timed again just before each approximate setting (one batch call, "
            f"{c['adjacent_single']} single queries)."
            if c.get("adjacent")
            else ""
        ),
        "",
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
        "x exact (batch)",
        "x exact (one query)",
        "recall@10",
    ]
    for size in doc["results"]:
        m = size.get("machine", doc["machine"])
        out += [
            f"## {size['n']:,} vectors",
            "",
            f"{m['cpu']} ({', '.join(i for i in m.get('isa', []) if i.startswith(('avx', 'amx')))}), "
            f"{m['physical_cores']} physical cores, FAISS {size.get('faiss', doc['versions'].get('faiss-cpu', '?'))}, "
            f"load average {m['load_average_1m_at_start']} at start (the machine is shared)"
            + (f"; measured {size['date']} by `{size['command']}`." if "command" in size else "."),
            "",
        ]
        rows = []
        exact_row = next((r for r in size["rows"] if r["index"].startswith("exact")), {})
        for r in size["rows"]:
            exact_p50 = r.get("exact_p50_adjacent_ms", exact_row.get("latency_p50_ms"))
            one = f"{exact_p50 / r['latency_p50_ms']:,.1f}" if "latency_p50_ms" in r and exact_p50 else "-"
            params = (
                r["params"] if isinstance(r["params"], str) else ", ".join(f"{k}={v}" for k, v in r["params"].items())
            )
            rows.append(
                [
                    f"{r['n']:,}",
                    r["index"],
                    params,
                    f"{r['build_s']:.0f}",
                    f"{r['size_mb']:,.0f}",
                    f"{r['latency_p50_ms']:.2f}" if "latency_p50_ms" in r else "-",
                    f"{r['latency_p95_ms']:.2f}" if "latency_p95_ms" in r else "-",
                    f"{r['qps_batch']:,.1f}",
                    f"{r['qps_batch'] / r.get('exact_qps_adjacent', size['exact_qps']):,.1f}",
                    one,
                    "-" if r["recall_at_10"] is None or np.isnan(r["recall_at_10"]) else f"{r['recall_at_10']:.3f}",
                ]
            )
        out.append(md_table(head, rows))
        for t in size.get("tuning", []):
            tried = ", ".join(f"{p} lists {r:.3f}" for p, r in t["recall_at_10"].items())
            out += [
                "",
                f"{t['kind']}: nprobe {t['nprobe']} chosen at build (`index.ann.tune`) in {t['seconds']:.0f} s, "
                f"recall@10 of {t['queries']} stored vectors against exact search: {tried} (target {t['target']}).",
            ]
        mem = size["memory"]
        ratio = f", {size['exact_qps'] / size['ceiling_qps']:.2f} of the plain product" if size["ceiling_qps"] else ""
        out += [
            "",
            f"{size['n']:,} vectors: exact search {size['exact_qps']:,.1f} queries/s{ratio}; peak memory "
            f"{mem['peak_rss_anon_mb']:,.0f} MB anonymous, {mem['peak_rss_total_mb']:,.0f} MB resident with "
            f"memory-mapped pages{' (vectors streamed, never all in memory)' if size['streamed'] else ''}"
            + (
                f"; run in a memory cgroup limited to {mem['cgroup_limit_mb'] / 1024:,.1f} GB (page cache included), "
                f"peak {mem['cgroup_peak_mb'] / 1024:,.2f} GB."
                if "cgroup_limit_mb" in mem
                else "."
            ),
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20k vectors and fewer queries (CI scale)")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--kinds", nargs="+", default=["previous", *APPROXIMATE])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200, help="batched queries (throughput, recall)")
    p.add_argument("--latency-queries", type=int, default=50)
    p.add_argument("--hnsw-max", type=int, default=1_000_000, help="largest size at which HNSW is built")
    p.add_argument("--ceiling-max", type=int, default=2_000_000, help="largest size the plain product is timed at")
    p.add_argument("--stream-above", type=int, default=2_000_000, help="sizes above this are never held in memory")
    p.add_argument("--sweep", action="store_true", help="also time other nprobe / k_factor settings")
    p.add_argument("--no-adjacent", dest="adjacent", action="store_false", help="no exact timing beside each setting")
    p.add_argument("--adjacent-single", type=int, default=10, help="single exact queries timed beside each setting")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", type=Path, default=None, help="folder for the temporary vector files")
    p.add_argument("--name", default=None)
    p.add_argument("--merge", action="store_true", help="keep the other sizes already in NAME.json (the 10M run)")
    p.add_argument("--memory-limit", type=float, default=None, metavar="GB", help="run in a memory cgroup (root)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    if args.memory_limit:
        enter_memory_cgroup(int(args.memory_limit * 2**30), "index-speed")
    if args.quick:
        args.sizes, args.queries, args.latency_queries = [20_000], 100, 20
    sweep = {
        "ivfpqfs": [
            {"k_factor": 4},
            {"k_factor": 16},
            {"nprobe": 8},
            {"nprobe": 16},
            {"nprobe": 64},
            {"nprobe": 128},
            {"nprobe": 256},
        ],
        "ivfsq8": [{"nprobe": 16}, {"nprobe": 64}],
        "ivfpq": [{"k_factor": 16}],
        "hnsw": [{"ef_search": 64}, {"ef_search": 256}],
    }
    args.sweep_settings = sweep if args.sweep else {}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    info = machine_info()
    name = args.name or ("index_speed_quick" if args.quick else "index_speed")
    kept = kept_sizes(args.out / f"{name}.json", args.sizes) if args.merge else []
    start = time.perf_counter()
    command = " ".join(["python benchmarks/index_speed.py", *(sys.argv[1:] if argv is None else argv)])
    stamp = {"machine": info, "faiss": info.get("faiss-cpu"), "command": command, "date": time.strftime("%Y-%m-%d")}
    results = sorted([run_size(n, args, log) | stamp for n in args.sizes] + kept, key=lambda r: r["n"])
    doc = {
        "benchmark": "index_speed",
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "tmp", "sweep_settings", "merge")}
        | {"median_of_3": True, "approx_repeats": APPROX_REPEATS, "approx_passes": APPROX_PASSES},
        "machine": info,
        "seconds": time.perf_counter() - start,
        "versions": versions(),
        "results": results,
    }
    write_json(args.out / f"{name}.json", doc)
    write_text(args.out / f"{name}.md", markdown(doc))
    log(f"wrote {args.out / name}.json and .md in {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
