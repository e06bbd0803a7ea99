"""Sharded search on Ray Serve against one index, side by side in one run: recall@10, latency, queries/s, memory.

The same synthetic face-like vectors as ``benchmarks/index_speed.py`` (``n / 100`` identities, 512-d) are
written once to a vectors file. Then, in this order on this machine:

* ``single``: one index of ``--kind`` over all rows, built as ``FaceIndex`` builds it (codes trained on a
  sample, ``nprobe`` tuned for recall@10 0.95 on stored vectors, candidates re-ranked exactly), searched in
  this process;
* ``sharded``: ``--shards`` Ray Serve deployments on a local Ray cluster
  (:func:`clipface.index.sharded.deploy_shards`, what ``clipface serve --ray local --shards N`` runs), each
  over its slice of the same file, memory-mapped, with codes of its own trained and tuned on its rows;
  searched through :class:`~clipface.index.sharded.ShardedSearch` (fan-out, merge by score), as the server
  does.

Latency is one query per call (p50/p95 over ``--latency-queries``); throughput is ``--queries`` queries in one
call; recall@10 is against exact search over every row. Memory per shard is the resident memory of its
replica process (``/proc/PID/status``; mapped vector pages count when read) and its codes on disk. On a
2-core machine the shards share the cores with each other and with the driver: the figures show the cost
of fanning out, not the speed of N machines; the README's sizing table says which figures are measured.

    python benchmarks/sharded_serving.py --size 1000000 --shards 4
    python benchmarks/sharded_serving.py --size 10000000 --shards 4     # 20 GB of vectors

Writes ``benchmarks/results/sharded_serving-SIZE.json`` and ``.md`` (with the machine's CPU).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import machine_info  # (benchmarks/ is on sys.path when run as a script)
from clipface.files import write_json, write_text
from clipface.index.ann.exact import exact_search
from clipface.index.ann.faiss_backend import default_params, train_sample
from clipface.index.ann.tune import tune_nprobe
from clipface.index.sharded import deploy_shards
from clipface.index.vectors import ANN, VECTORS, VectorStore
from clipface.report.tables import md_table
from index_speed import CHUNK, Embeddings, latency, recall, throughput, timed

K = 10


def write_vectors(path: Path, gen: Embeddings, n: int) -> np.ndarray:
    with open(path, "wb") as fh:
        for x in gen.chunks(n, seed=1):
            fh.write(np.ascontiguousarray(x, np.float32).tobytes())
    return np.memmap(path, np.float32, "r", shape=(n, gen.dim))


def single_index(folder: Path, mapped: np.ndarray, kind: str) -> tuple[VectorStore, float, float]:
    """The one-index baseline (built and tuned as :class:`FaceIndex` builds it); its build seconds and codes MB."""
    t = time.perf_counter()
    folder.mkdir()
    params = default_params(kind, len(mapped), mapped.shape[1])
    store = VectorStore.create(folder, kind, mapped.shape[1], params, train_sample(mapped, params))
    for i in range(0, len(mapped), CHUNK):
        store.ann.add(np.ascontiguousarray(mapped[i : i + CHUNK]))
    store.vectors = mapped
    store.params = tune_nprobe(store)
    seconds = time.perf_counter() - t
    tmp = store.write_ann()
    assert tmp is not None
    mb = os.path.getsize(tmp) / 2**20
    os.unlink(tmp)
    return store, seconds, mb


def replica_memory(sharded: Any) -> list[dict[str, Any]]:
    """Each shard replica's own account of its rows, search and resident memory (``ShardSearcher.describe``)."""
    return [h.describe.remote().result(timeout_s=60) for h in sharded.handles]


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--kind", default="ivfpqfs")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--latency-queries", type=int, default=100)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--work", type=Path, default=None, help="folder for the vectors (default: a temporary one)")
    p.add_argument("--out", type=Path, default=here / "results")
    args = p.parse_args()
    import ray

    t0 = time.perf_counter()
    gen = Embeddings(max(1, args.size // 100), args.dim, seed=0)
    queries = gen.draw(args.queries, seed=7)
    single_q = gen.draw(args.latency_queries, seed=8)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        folder = Path(tmp)
        mapped, write_s = timed(lambda: write_vectors(folder / VECTORS, gen, args.size))
        (_, truth), exact_qps = throughput(lambda q: exact_search(mapped, q, K), queries, args.threads, 1)

        one, build_s, codes_mb = single_index(folder / "single", mapped, args.kind)
        (_, ids), qps = throughput(lambda q: one.search(q, K), queries, args.threads, 5)
        lat = latency(lambda q: one.search(q, K), single_q, 3)
        rows.append(
            {"setup": f"single {args.kind}", "build_s": build_s, "qps": qps, "recall_at_10": recall(ids, truth)}
            | lat
            | {"codes_mb": codes_mb, "nprobe": one.params.get("nprobe")}
        )
        one = None
        (folder / "single" / ANN).unlink(missing_ok=True)

        ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            sharded, deploy_s = timed(
                lambda: deploy_shards(folder, args.size, args.dim, args.shards, 1, timeout=120.0, kind=args.kind)
            )
            (_, ids), qps = throughput(lambda q: sharded.search(q, K), queries, args.threads, 5)
            lat = latency(lambda q: sharded.search(q, K), single_q, 3)
            memory = replica_memory(sharded)
            codes = sorted((folder / "shards").glob("*/" + ANN))
            rows.append(
                {"setup": f"{args.shards} shards {args.kind}", "build_s": deploy_s, "qps": qps}
                | {"recall_at_10": recall(ids, truth)}
                | lat
                | {"codes_mb": sum(c.stat().st_size for c in codes) / 2**20, "per_shard_memory": memory}
            )
            sharded.close()
        finally:
            ray.shutdown()
    doc = {
        "task": "sharded_serving",
        "args": {k: str(v) for k, v in vars(args).items()},
        "vectors_gb": args.size * args.dim * 4 / 2**30,
        "write_vectors_s": write_s,
        "exact_qps": exact_qps,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_info(),
    }
    mach = doc["machine"]
    table = md_table(
        ["setup", "build (s)", "recall@10", "p50 (ms)", "p95 (ms)", "queries/s (batch)", "codes (MB)"],
        [
            [
                r["setup"],
                f"{r['build_s']:.0f}",
                f"{r['recall_at_10']:.3f}",
                f"{r['latency_p50_ms']:.1f}",
                f"{r['latency_p95_ms']:.1f}",
                f"{r['qps']:.0f}",
                f"{r['codes_mb']:.0f}",
            ]
            for r in rows
        ],
    )
    mem = rows[-1].get("per_shard_memory") or []
    mem_md = ", ".join(
        f"rows {m['rows'][0]:,}-{m['rows'][1]:,}: {m.get('VmRSS_mb', 0):.0f} MB ({m.get('RssAnon_mb', 0):.0f} MB heap)"
        for m in mem
    )
    md = (
        f"# Sharded search on Ray Serve against one index ({args.size:,} vectors, {args.dim}-d)\n\n"
        f"{doc['vectors_gb']:.1f} GB of vectors; exact search {exact_qps:.0f} queries/s in a batch. "
        f"`python benchmarks/sharded_serving.py --size {args.size} --shards {args.shards}`; {mach['cpu']}, "
        f"{mach['physical_cores']} cores, {', '.join(mach['isa'])}; {doc['seconds']:.0f} s. Every shard runs on "
        "this one machine: the ratios show the cost of the fan-out, not the speed of separate machines.\n\n"
        + table
        + f"\n\nResident memory per shard replica: {mem_md or 'not read'}.\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"sharded_serving-{args.size}"
    write_json(args.out / f"{stem}.json", doc)
    write_text(args.out / f"{stem}.md", md)
    print(md)


if __name__ == "__main__":
    main()
