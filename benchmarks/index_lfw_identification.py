"""Acceptance check of the search index: rank-1 identification of held-out LFW photos (target >= 0.95).

People of LFW (deep-funneled) with at least ``--min-images`` photos: ``--probes-per-person``
photos of each (seeded choice) are held out as probes, the rest are indexed with ``--model``
(default ``dlib``), and each probe queries the index by image (through the model's own face
front end). Rank-1 is the share of probes whose best result is the same person; probes or
gallery photos in which no face is found are listed as skipped.

    python benchmarks/index_lfw_identification.py --dataset ../shared/datasets/lfw-deepfunneled

Writes ``benchmarks/results/index_lfw_identification.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import clipface
from clipface.audit.identification import evaluate_index_identification
from clipface.data.dataset import FaceDataset, FaceImage
from clipface.embed.cache import EmbeddingCache
from clipface.files import write_json, write_text
from clipface.index.store import FaceIndex
from clipface.report.markdown import md_table
from clipface.versions import versions

TARGET = 0.95


def split(ds: FaceDataset, per_person: int, seed: int) -> tuple[list[FaceImage], FaceDataset]:
    """Seeded probes (``per_person`` per identity) and the dataset of the remaining photos."""
    rng = random.Random(seed)
    probes = [im for _, imgs in sorted(ds.by_identity().items()) for im in rng.sample(imgs, per_person)]
    held = set(probes)
    return probes, replace(ds, images=[im for im in ds.images if im not in held])


def markdown(doc: dict[str, Any]) -> str:
    r = doc["result"]
    verdict = "PASS" if r["rank1"] >= TARGET else "FAIL"
    topk = r["top{}".format(doc["k"])]
    rows = [
        [
            doc["model"],
            doc["people"],
            doc["gallery_images"],
            len(doc["gallery_skipped"]),
            r["n_probes"],
            len(r["skipped"]),
            f"{r['rank1']:.4f}",
            f"{topk:.4f}",
            f"{verdict} (target {TARGET})",
        ]
    ]
    misses = [
        [Path(p["probe"]).name, p["top_identity"], f"{p['top_score']:.3f}"] for p in r["per_probe"] if not p["correct"]
    ]
    return (
        "# Face search index: LFW rank-1 identification\n\n"
        f"LFW deep-funneled people with >= {doc['min_images']} photos; {doc['probes_per_person']} photo(s) per person "
        "held "
        f"out as probes (seed {doc['seed']}), the others indexed ({doc['index_kind']} index); each probe queries the "
        "index by "
        f"image. Rank-1: share of probes whose best result is the same person. {doc['seconds']:.0f} s.\n\n"
        + md_table(
            [
                "model",
                "people",
                "indexed images",
                "gallery skipped",
                "probes",
                "probes skipped",
                "rank-1",
                f"top-{doc['k']}",
                "verdict",
            ],
            rows,
        )
        + ("\n\n## Misses\n\n" + md_table(["probe", "rank-1 result", "score"], misses) if misses else "")
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=str(here.parents[1] / "shared" / "datasets" / "lfw-deepfunneled"))
    p.add_argument("--model", default="dlib")
    p.add_argument("--min-images", type=int, default=10)
    p.add_argument("--probes-per-person", type=int, default=1)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", type=Path, default=here.parent / "runs" / "lfw-index", help="index folder (rebuilt)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=here / "results")
    args = p.parse_args(argv)

    start = time.perf_counter()
    ds = FaceDataset.from_folder(args.dataset, min_images=args.min_images)
    probes, gallery = split(ds, args.probes_per_person, args.seed)
    encoder = clipface.create_encoder(args.model)
    cache = EmbeddingCache(args.cache_dir)
    index, update = FaceIndex.build(encoder, gallery, args.index, cache=cache, overwrite=True, progress=True)
    result = evaluate_index_identification(index, probes, encoder, k=args.k, cache=cache, progress=True)
    doc = {
        "benchmark": "index_lfw_identification",
        "model": args.model,
        "dataset": args.dataset,
        "min_images": args.min_images,
        "probes_per_person": args.probes_per_person,
        "seed": args.seed,
        "k": args.k,
        "people": len(ds.identities),
        "gallery_images": index.count,
        "gallery_skipped": [s.to_dict() for s in update.skipped],
        "index_kind": index.kind,
        "target_rank1": TARGET,
        "result": result.to_dict(),
        "seconds": time.perf_counter() - start,
        "versions": versions(),
    }
    write_json(args.out / "index_lfw_identification.json", doc)
    write_text(args.out / "index_lfw_identification.md", markdown(doc))
    print(
        f"rank-1 {result.rank1:.4f} over {result.n_probes} probes ({len(result.skipped)} skipped); "
        f"wrote {args.out / 'index_lfw_identification.md'}",
        file=sys.stderr,
    )
    return 0 if result.rank1 >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
