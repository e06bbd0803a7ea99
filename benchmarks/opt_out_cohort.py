"""The fused opt-out rule's cohorts: one LFW photo of each of 1,400-odd people, by each face model.

The people are one half of those who calibrate the rule (:func:`opt_out_faces.served_cohort`),
none of those who measure it (``benchmarks/opt_out_faces.py``); each gives the first of their
photos by file name, embedded as an index keeps faces (mirror-summed). The calibration
(``benchmarks/opt_out_calibration.py``) normalises each of its collections by a cohort made the
same way of the other half's people.

    python benchmarks/opt_out_cohort.py --dataset ../shared/datasets/lfw-deepfunneled

Writes ``src/clipface/assets/cohorts/<model>.npy`` (float16, one row per face) and ``cohorts.json``
(where they come from); rerun the calibration after it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from clipface.data.dataset import FaceDataset
from clipface.embed.cache import EmbeddingCache
from clipface.files import write_json
from opt_out_calibration import MODELS, vectors
from opt_out_faces import SPLIT_SEED, cohort_photos, served_cohort


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=str(here.parents[1] / "shared" / "datasets" / "lfw-deepfunneled"))
    p.add_argument("--out", type=Path, default=here.parent / "src" / "clipface" / "assets" / "cohorts")
    args = p.parse_args()
    t0 = time.perf_counter()
    photos = cohort_photos(served_cohort(FaceDataset.from_folder(args.dataset)))
    args.out.mkdir(parents=True, exist_ok=True)
    faces = {}
    for model in MODELS:
        v, found = vectors(model, photos, EmbeddingCache())
        np.save(args.out / f"{model}.npy", v[found].astype(np.float16), allow_pickle=False)
        faces[model] = int(found.sum())
    write_json(
        args.out / "cohorts.json",
        {
            "source": "LFW deep-funneled: one photo (the first by file name) of each person of one half of the "
            f"people who calibrate the opt-out rule (split seed {SPLIT_SEED}, then halves seed 0)",
            "people": len(photos),
            "faces": faces,
            "vectors": "mirror-summed face vectors, unit rows, float16",
            "written_by": "benchmarks/opt_out_cohort.py",
        },
    )
    print(f"{len(photos)} people: {faces} faces in {time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
