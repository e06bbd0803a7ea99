"""Cloaking speed: images per second of each method and mode on this machine.

Cloaks the same few LFW photos (two people, so that Fawkes has a target) from scratch with each
method and mode, and writes ``benchmarks/results/cloak_speed-<N>threads.json`` and ``.md``. The
time counted is that of :func:`clipface.cloak.run.cloak_images` after the target selection: the
optimisation, the budget fit, the PNG and JSON writing and the feature statistics. The load
average is recorded before and after, since a shared machine slows every figure down.

    python benchmarks/cloak_speed.py --images 4 --threads 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from _common import machine_info  # noqa: E402
from clipface.cloak import MODES, CloakSettings, cloak_images, load_surrogates
from clipface.data.dataset import FaceDataset
from clipface.embed.cache import NullCache
from clipface.embed.options import RunOptions
from clipface.files import write_json, write_text
from clipface.report.markdown import md_table
from clipface.versions import versions

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(HERE.parent.parent / "shared" / "datasets" / "lfw-deepfunneled"))
    ap.add_argument("--surrogate", default="facenet-casia")
    ap.add_argument(
        "--images", type=int, default=4, help="Photos cloaked per method and mode (half from each of two people)."
    )
    ap.add_argument("--methods", nargs="+", default=["fawkes", "lowkey"])
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the physical cores).")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()

    ds = FaceDataset.from_folder(
        args.dataset, min_images=args.images, max_identities=2, max_per_identity=args.images, seed=0
    )
    per_person = max(1, args.images // 2)
    images = [im for ims in ds.by_identity().values() for im in ims[:per_person]]
    opts = RunOptions(cache=NullCache(), progress=False, threads=args.threads)
    surrogates = load_surrogates([args.surrogate], opts)
    rows = []
    load_before = os.getloadavg()
    for method in args.methods:
        for mode in args.modes:
            settings = CloakSettings(method=method, mode=mode)
            with tempfile.TemporaryDirectory() as tmp:
                run = cloak_images(
                    images, ds.root, Path(tmp), settings, surrogates, opts, ds.by_identity(), batch_size=len(images)
                )
            summary = run.summary()
            rows.append(
                {
                    "method": method,
                    "mode": mode,
                    "steps": settings.steps,
                    "images": run.computed,
                    "seconds": round(run.seconds, 2),
                    "seconds_per_image": round(run.seconds / run.computed, 2) if run.computed else None,
                    "images_per_second": summary["images_per_second"],
                    "budget": settings.budget,
                    "dssim_max": summary["dssim_max"],
                    "skipped": summary["skipped"],
                }
            )
            print(f"{method} {mode}: {rows[-1]['seconds_per_image']} s per image", flush=True)
    doc = {
        "task": "cloak_speed",
        "surrogate": args.surrogate,
        "images": [str(im.path) for im in images],
        "machine": {
            **machine_info(),
            "cpu": machine_info()["cpu"],
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "results": rows,
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    name = f"cloak_speed-{torch.get_num_threads()}threads"
    write_json(args.out / f"{name}.json", doc)
    m = doc["machine"]
    table = md_table(
        ["method", "mode", "steps", "images", "seconds per image", "images per second", "DSSIM budget", "DSSIM max"],
        [
            [
                r["method"],
                r["mode"],
                r["steps"],
                r["images"],
                r["seconds_per_image"],
                r["images_per_second"],
                r["budget"],
                r["dssim_max"],
            ]
            for r in rows
        ],
    )
    write_text(
        args.out / f"{name}.md",
        "\n".join(
            [
                f"# Cloaking speed ({args.surrogate} surrogate)",
                "",
                f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), CPU only; load average "
                f"{m['load_average_before'][0]:.1f} before and {m['load_average_after'][0]:.1f} after (a shared "
                "machine: "
                "other jobs ran at the same time). Each row cloaks the same photos from scratch, batched together. "
                'Fawkes\' README: "The perturbation generation takes ~60 seconds per image on a CPU machine" (its own '
                "extractors on aligned 112 px faces).",
                "",
                table,
                "",
                f"Command: `python benchmarks/cloak_speed.py --images {args.images}"
                + (f" --threads {args.threads}" if args.threads else "")
                + "`",
                "",
            ]
        ),
    )


if __name__ == "__main__":
    main()
