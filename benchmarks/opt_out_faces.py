"""Opt out by face on LFW: how many of an opted-out person's unlabelled photos still come back, how many others go.

LFW's people are split once (:data:`SPLIT_SEED`) into those who calibrate the served rule
(``benchmarks/opt_out_calibration.py``) and those who measure it here, so these figures are held
out. ``--people 20`` of the latter with at least 10 photos (seeded) ask to be removed,
each with ``--enrol 8`` of their photos (seeded); the rest of their photos are indexed with no
label (a flat folder of links), among ``--others`` photos of other LFW people with their labels
(of the same measuring people: those with >= 10 photos first, at most ``--per-other`` each, then people with fewer).
Two indexes of the same collection, each keeping the faces as ``index build --face-model dlib
--second-face-model facenet-casia`` keeps them (mirror-summed, central), so the opt-out runs at its
served default (the fused rule, :mod:`clipface.index.fusion`):

* ``clip``: the random-weight test CLIP (``test-tiny-random``: real CLIP weights cannot be
  downloaded on our build machines) for the image vectors, real face vectors beside them; asked
  by text (``/api/search/text``, clip-retrieval ``/knn-service``), by name audits (``/api/audit``)
  and by the engine audit of
  ``clipface audit`` through the clip-retrieval API. Random CLIP weights say nothing about
  recognition: these queries show that the routes filter, not what a real CLIP would find;
* ``dlib``: dlib's own index (dlib's image vectors, and the same face vectors beside them);
  asked with each enrolment photo (``/api/search/image``,
  ``/knn-service``) and by photo audits (``/api/audit``). Here the control (the same server
  without ``--opt-out-faces``) finds most of the person's photos, so the share left is a real
  measure.

The decision itself (which image ids the enrolment removes) is the same exact computation on both
indexes' face vectors: ``leaked`` is the share of the opted-out people's indexed photos not removed
(returnable by a query close enough), ``wrongly removed`` the share of the other people's photos
removed. Every route is served in-process (FastAPI's test client; the engine audit through
uvicorn on loopback), the answers asked for ``k`` = 100 results.

    python benchmarks/opt_out_faces.py --dataset ../shared/datasets/lfw-deepfunneled

Writes ``benchmarks/results/opt_out_faces.json`` and ``.md`` (with the machine's CPU); with another
``--enrol N`` (``--enrol 3``: what fewer photos cost), ``opt_out_faces-enrolN.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import machine_info  # (benchmarks/ is on sys.path when run as a script)
from clipface.data.dataset import FaceDataset, FaceImage, display_name
from clipface.embed.cache import EmbeddingCache
from clipface.files import write_json, write_text
from clipface.index.store import FaceIndex
from clipface.models.registry import get_spec
from clipface.models.runtime import LoadOptions, load_encoder
from clipface.report.tables import md_table
from clipface.server.app import create_app
from clipface.server.face_optout import FaceOptOut

GOAL, LEAK_GOAL = 0.01, 0.005
K = 100
#: Results per query of the engine audit (each is judged by dlib).
K_ENGINE = 20


#: The seed of LFW's one split of its people into those the opt-out rules are calibrated on
#: (``benchmarks/opt_out_calibration.py``) and those they are measured on here.
SPLIT_SEED = 2026


class People:
    """Some of a dataset's people and their photos (what :func:`collection` reads)."""

    def __init__(self, groups: dict[str, list[FaceImage]]) -> None:
        self.groups = groups

    def by_identity(self) -> dict[str, list[FaceImage]]:
        return self.groups


def halves(ds: FaceDataset | People, seed: int) -> tuple[People, People]:
    """The people split in two halves, seeded."""
    people = sorted(ds.by_identity())
    random.Random(seed).shuffle(people)
    groups = ds.by_identity()
    mid = len(people) // 2
    return People({p: groups[p] for p in people[:mid]}), People({p: groups[p] for p in people[mid:]})


def split(ds: FaceDataset) -> tuple[People, People]:
    """LFW's people who calibrate the opt-out rules and the others, who measure them (:data:`SPLIT_SEED`)."""
    return halves(ds, SPLIT_SEED)


def cohort_photos(people: People) -> list[Path]:
    """One photo of each person (the first by file name): a cohort of faces (:class:`clipface.index.fusion.Cohort`)."""
    return [min(ims, key=lambda im: im.path.name).path for _, ims in sorted(people.by_identity().items())]


def served_cohort(ds: FaceDataset) -> People:
    """The people whose faces make the bundled cohorts (``benchmarks/opt_out_cohort.py``): one half of the
    calibrating people, so that the calibration can normalise each of its collections by people of the other."""
    return halves(split(ds)[0], 0)[0]


def collection(ds: FaceDataset | People, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Lay out the enrolment folders and the indexed folder (links); which indexed files are whose."""
    rng = random.Random(args.seed)
    by_id = ds.by_identity()
    big = sorted(p for p, ims in by_id.items() if len(ims) >= args.min_images)
    opted = sorted(rng.sample(big, args.people))
    shutil.rmtree(work, ignore_errors=True)
    images, enrol = work / "collection", work / "optout"
    images.mkdir(parents=True)
    hidden: dict[str, str] = {}  # indexed link name -> person
    for n, person in enumerate(opted):
        photos = sorted(by_id[person], key=lambda im: im.path.name)
        chosen = set(rng.sample(range(len(photos)), args.enrol))
        (enrol / person).mkdir(parents=True)
        for i, im in enumerate(photos):
            if i in chosen:
                (enrol / person / im.path.name).symlink_to(im.path.resolve())
            else:
                name = f"u{n:02d}_{i:04d}.jpg"  # neither the name nor the folder says who it is
                (images / name).symlink_to(im.path.resolve())
                hidden[name] = person
    rest = [p for p in big if p not in opted]
    rng.shuffle(rest)
    small = sorted(p for p, ims in by_id.items() if len(ims) < args.min_images)
    rng.shuffle(small)
    others = 0
    for person in rest + small:
        if others >= args.others:
            break
        photos = sorted(by_id[person], key=lambda im: im.path.name)[: args.per_other]
        (images / person).mkdir()
        for im in photos[: args.others - others]:
            (images / person / im.path.name).symlink_to(im.path.resolve())
            others += 1
    return {"opted": opted, "hidden": hidden, "images": images, "enrol": enrol, "others": others}


def decision(index: FaceIndex, enrol: Path, hidden: dict[str, str]) -> tuple[FaceOptOut, dict[str, Any]]:
    """The removal set and its two error shares, from the image metadata (labels and link names)."""
    t = time.perf_counter()
    opt = FaceOptOut(index, enrol)
    seconds = time.perf_counter() - t
    meta = index.meta.images(range(index.count))
    theirs = {i for i, im in meta.items() if im.identity is None}
    others = set(meta) - theirs
    kept = sorted(theirs - opt.removed)
    no_face = set()
    if index.faces is not None:
        with_face = set(index.faces.store.image_ids.tolist())
        no_face = theirs - with_face
    sweep = threshold_sweep(opt, theirs, others, index.count)
    return opt, {
        "threshold_sweep": sweep,
        "opted_out_photos": len(theirs),
        "other_photos": len(others),
        "leaked": len(kept),
        "leaked_share": len(kept) / max(1, len(theirs)),
        "leaked_without_detected_face": len(no_face & set(kept)),
        "wrongly_removed": len(opt.removed & others),
        "wrongly_removed_share": len(opt.removed & others) / max(1, len(others)),
        "enrolment_seconds": round(seconds, 2),
        "per_person": opt.people,
        "leaked_examples": [meta[i].relpath + " (" + hidden.get(meta[i].relpath, "?") + ")" for i in kept[:20]],
    }


def threshold_sweep(opt: FaceOptOut, theirs: set[int], others: set[int], count: int) -> list[dict[str, Any]]:
    """Both shares at other thresholds of the served rule (the fused one: its fused threshold moved, dlib's alone
    kept; a cosine rule: the cosine), the served one among them."""
    step = 0.25 if opt.rule == "fused" else 0.01
    rows = []
    for t in sorted({opt.threshold + step * d for d in (-3, -2, -1, 1, 2, 3)} | {opt.threshold}):
        removed = opt.removed_at(t)
        rows.append({
            "threshold": round(float(t), 5),
            "served": t == opt.threshold,
            "leaked_share": len(theirs - removed) / max(1, len(theirs)),
            "wrongly_removed_share": len(others & removed) / max(1, len(others)),
        })  # fmt: skip
    return rows


def client(index_dir: Path, enrol: Path | None) -> Any:
    from fastapi.testclient import TestClient

    app = create_app(index_dir, require_token=False, rate_limit=None, clip_retrieval=True, opt_out_faces=enrol)
    return TestClient(app)


def returned(theirs: set[int], answers: list[list[int]]) -> dict[str, Any]:
    got = set().union(*map(set, answers)) if answers else set()
    return {"queries": len(answers), "returned": len(got & theirs), "share": len(got & theirs) / max(1, len(theirs))}


def ask_clip(cl: Any, names: list[str], indice: str) -> dict[str, list[list[int]]]:
    out: dict[str, list[list[int]]] = {"text /api/search/text": [], "text /knn-service": [], "audit /api/audit": []}
    for name in names:
        query = f"a photo of {name}."
        r = cl.post("/api/search/text", json={"query": query, "k": K}).json()
        out["text /api/search/text"].append([h["id"] for h in r["results"]])
        body = {"text": query, "modality": "image", "num_images": K, "num_result_ids": K, "indice_name": indice}
        out["text /knn-service"].append([h["id"] for h in cl.post("/knn-service", json=body).json()])
        r = cl.post("/api/audit", data={"name": name, "k": str(K)}).json()
        out["audit /api/audit"].append([h["id"] for h in r["results"]])
    return out


def ask_dlib(cl: Any, photos: dict[str, list[Path]], indice: str) -> dict[str, list[list[int]]]:
    out: dict[str, list[list[int]]] = {"image /api/search/image": [], "image /knn-service": [], "audit /api/audit": []}
    for person, files in photos.items():
        for p in files:
            data = p.read_bytes()
            r = cl.post("/api/search/image", files={"file": data}, data={"k": str(K)}).json()
            out["image /api/search/image"].append([h["id"] for h in r["results"]])
            body = {
                "image": base64.b64encode(data).decode(),
                "modality": "image",
                "num_images": K,
                "indice_name": indice,
            }
            out["image /knn-service"].append([h["id"] for h in cl.post("/knn-service", json=body).json()])
            r = cl.post("/api/audit", data={"name": display_name(person), "k": str(K)}, files={"file": data}).json()
            out["audit /api/audit"].append([h["id"] for h in r["results"]])
    return out


def engine_audit(index_dir: Path, enrol: Path | None, photos: Path, opted: list[str]) -> dict[str, Any]:
    """``clipface audit`` (the engine audit) of each opted-out person through the clip-retrieval API on loopback.

    The audit judges every result with dlib; ``returned`` is the number of distinct images it
    found to show the person (summed over the people), out of their indexed photos.
    """
    import uvicorn

    from clipface.audit.engine import EngineClient, audit_engine

    app = create_app(index_dir, require_token=False, rate_limit=None, clip_retrieval=True, opt_out_faces=enrol)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    dlib = load_encoder("dlib", LoadOptions())
    found, queries = 0, 0
    try:
        client_ = EngineClient(f"http://127.0.0.1:{port}/knn-service", index_dir.name)
        for person in opted:
            doc = audit_engine(
                client_, sorted((photos / person).iterdir()), dlib, float(get_spec("dlib").verify_threshold or 0),
                person, k=K_ENGINE, prompts=("a photo of {}.",), echo=lambda m: None,
            )  # fmt: skip
            found += doc["images_found"]
            queries += sum(q["queries"] for q in doc["queries"].values())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return {"queries": queries, "returned": found}


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=str(here.parents[1] / "shared" / "datasets" / "lfw-deepfunneled"))
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--enrol", type=int, default=8, help="enrolment photos a person (the served goals hold from 8)")
    p.add_argument("--min-images", type=int, default=10)
    p.add_argument("--others", type=int, default=2500)
    p.add_argument("--per-other", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=here.parent / "runs" / "opt_out_faces")
    p.add_argument("--out", type=Path, default=here / "results")
    args = p.parse_args()
    t0 = time.perf_counter()
    ds = FaceDataset.from_folder(args.dataset)
    lay = collection(split(ds)[1], args, args.work)  # people the served rule was not calibrated on
    print(
        f"{len(lay['hidden'])} unlabelled photos of {args.people} opted-out people, {lay['others']} others", flush=True
    )
    cache = EmbeddingCache()
    tiny, dlib = load_encoder("test-tiny-random"), load_encoder("dlib")
    # the faces as `index build --face-model dlib --second-face-model facenet-casia` keeps them (mirror-summed)
    face, second = (load_encoder(m, LoadOptions(flip=True)) for m in ("dlib", "facenet-casia"))
    builds = {}
    for name, enc in (("clip", tiny), ("dlib", dlib)):
        t = time.perf_counter()
        FaceIndex.build(
            enc,
            lay["images"],
            args.work / name,
            cache=cache,
            face_encoder=face,
            second_face_encoder=second,
            overwrite=True,
            progress=True,
        )
        builds[name] = round(time.perf_counter() - t, 1)
    doc: dict[str, Any] = {"task": "opt_out_faces", "args": {k: str(v) for k, v in vars(args).items()}}
    doc.update(machine=machine_info(), build_seconds=builds, k=K)
    names = [display_name(p) for p in lay["opted"]]
    photos = {p: sorted((lay["enrol"] / p).iterdir()) for p in lay["opted"]}
    for name in ("clip", "dlib"):
        index = FaceIndex.load(args.work / name)
        opt, dec = decision(index, lay["enrol"], lay["hidden"])
        doc["rule"] = {"rule": opt.rule, "threshold": opt.threshold, "fused": opt.stats()["fused"]}
        meta = index.meta.images(range(index.count))
        theirs = {i for i, im in meta.items() if im.identity is None}
        routes: dict[str, Any] = {}
        for label, enrol in (("with opt-out", lay["enrol"]), ("control, no opt-out", None)):
            cl = client(args.work / name, enrol)
            answers = ask_clip(cl, names, name) if name == "clip" else ask_dlib(cl, photos, name)
            routes[label] = {kind: returned(theirs, a) for kind, a in answers.items()}
            if name == "clip":
                eng = engine_audit(args.work / name, enrol, lay["enrol"], lay["opted"])
                eng["share"] = eng["returned"] / max(1, len(theirs))
                routes[label][f"audit: clipface audit, engine API, k={K_ENGINE} (judged by dlib)"] = eng
            print(name, label, {k: v["share"] for k, v in routes[label].items()}, flush=True)
        doc[name] = {"decision": dec, "routes": routes, "count": index.count}
        print(name, "leaked", dec["leaked_share"], "wrongly removed", dec["wrongly_removed_share"], flush=True)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "opt_out_faces" + ("" if args.enrol == 8 else f"-enrol{args.enrol}")
    write_json(args.out / f"{stem}.json", doc)
    write_text(args.out / f"{stem}.md", markdown(doc))
    print(f"wrote {args.out / f'{stem}.md'}")


def rule_text(rule: dict[str, Any]) -> str:
    if rule["rule"] == "fused":
        f = rule["fused"]
        cal = ", ".join(f"{c['photos']}+ photos: {c['threshold']:.4f}" for c in f["calibrations"])
        near = f"each normalised by its {f['cohort_k']} nearest cohort faces"
        return f"dlib and {f['with']} centroid scores, {near}, fused, at {cal}"
    return f"dlib {rule['rule']} at {rule['threshold']:.4f}"


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Opt out by face on LFW",
        "",
        f"{doc['args']['people']} LFW people with >= {doc['args']['min_images']} photos opted out with "
        f"{doc['args']['enrol']} photos each; the rest of their photos indexed without labels among other people's "
        f"labelled photos. dlib and FaceNet face vectors; the served default rule ({rule_text(doc['rule'])}); "
        f"answers of k = {doc['k']}. Goals: under {pct(LEAK_GOAL)} leaked, under {pct(GOAL)} of others removed.",
        "",
        "## The decision (exact, over every indexed face)",
        "",
    ]
    rows = []
    for name in ("clip", "dlib"):
        d = doc[name]["decision"]
        rows.append([
            name, d["opted_out_photos"], d["other_photos"], f"{d['leaked']} ({pct(d['leaked_share'])})",
            d["leaked_without_detected_face"], f"{d['wrongly_removed']} ({pct(d['wrongly_removed_share'])})",
        ])  # fmt: skip
    headers = ["index", "opted-out photos indexed", "other photos", "still returnable (leaked)",
               "of which no face detected", "others wrongly removed"]  # fmt: skip
    lines += [md_table(headers, rows), "", "The same rule at other thresholds (dlib index):", ""]
    sweep = doc["dlib"]["decision"]["threshold_sweep"]
    fused = doc["rule"]["rule"] == "fused"  # its thresholds depend on the photos enrolled: shown as a shift
    rows = [
        [(f"{round(r['threshold'] - doc['rule']['threshold'], 6) + 0.0:+.2f}" if fused else f"{r['threshold']:.5f}")]
        + [("served" if r.get("served") else ""), pct(r["leaked_share"]), pct(r["wrongly_removed_share"])]
        for r in sweep
    ]
    head = "shift of the fused thresholds" if fused else f"{doc['rule']['rule']} threshold"
    lines += [md_table([head, "", "leaked", "others wrongly removed"], rows), ""]
    lines += ["## Through the routes: share of the opted-out photos returned", ""]
    rows = []
    for name in ("clip", "dlib"):
        with_, without = doc[name]["routes"]["with opt-out"], doc[name]["routes"]["control, no opt-out"]
        for kind in with_:
            rows.append([name, kind, with_[kind]["queries"], pct(with_[kind]["share"]), pct(without[kind]["share"])])
    lines += [md_table(["index", "queries", "n", "with --opt-out-faces", "control (no opt-out)"], rows), ""]
    lines += [
        "The `clip` index's image vectors come from the random-weight test CLIP (real CLIP weights cannot be "
        "downloaded on this machine), so its text queries and name audits find the opted-out photos only by "
        "chance in the control: they show that every route filters, not what a real CLIP would return. The "
        "face decision uses real dlib weights on both indexes; the `dlib` index's image queries are real face "
        "searches, and its control shows how much the opt-out has to remove.",
        "",
        f"Machine: {m['cpu']}, {m['physical_cores']} physical cores, ISA {', '.join(m['isa'])}; "
        f"build {doc['build_seconds']} s; total {doc['seconds']} s.",
        "",
        "Rerun: `python benchmarks/opt_out_faces.py --dataset ../shared/datasets/lfw-deepfunneled"
        + ("" if doc["args"]["enrol"] == "8" else f" --enrol {doc['args']['enrol']}")
        + "` (its people are LFW's measuring half: none of them calibrated the served rule or gave a cohort face).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
