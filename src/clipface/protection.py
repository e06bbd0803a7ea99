"""How well cloaks protect people against face recognisers and CLIP search: evaluation.

* **FaceCure protocol** (Radiya-Dixit and Tramer, 2022; github.com/ftramer/FaceCure ``eval.py``):
  each person's photos are split at random into 70 % gallery and 30 % probes (``int(0.3 n)``
  probes). For each protected user in turn, the user's gallery photos are replaced by their
  cloaks while everyone else's stay clean; the user's clean probes are searched with a 1-nearest
  neighbour over gallery images (cosine similarity; a tie goes to the first gallery image). The
  **protection rate** is the share of those probes whose nearest neighbour is not the user. The
  clean baseline is the same search with the user's own clean gallery.
* **Linkability** (the question of the Bhat and Jain paper: does a search engine still link a
  cloak to its original?): the cosine similarity of each cloak to its own original, and the
  share of cloaks whose nearest neighbour among all original photos is that original.
* **Zero-shot names** (CLIP models): :func:`clipface.evaluate.zeroshot` on the cloaked photos
  and on the same photos uncloaked.
* **Index poisoning**: k extra images per person injected into a search gallery, either
  mislabelled (photos of other people filed under the person's name) or cloaked (cloaks of the
  person's own photos), and the rank-1 identification of clean probes as k grows.

Cloaks are made by :mod:`clipface.cloak` (or read from a folder made elsewhere) once per
surrogate set and reused from their folder on later runs.
"""

from __future__ import annotations

import re
import time
import zlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .cloak import CloakRun, CloakSettings, budget_measure, cloak_images, load_surrogates, within_budget
from .cloak.io import CloakedTriple
from .dataset import FaceDataset, FaceImage
from .embed import embed_images
from .encoders.base import Encoder
from .errors import ClipfaceError
from .evaluate import RunOptions, each_model, zeroshot
from .report import fmt, md_table, params_m, skipped_section, versions, write_json


#: Share of each person's photos used as probes (FaceCure ``test_frac``).
TEST_FRAC = 0.3


# -- pure metrics -------------------------------------------------------------------------------
def facecure_split(labels: Sequence[str], test_frac: float = TEST_FRAC, seed: int = 0) -> np.ndarray:
    """Boolean mask of probes: ``int(test_frac * n)`` random photos per person (at least one, never all)."""
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    labels = list(labels)
    probe = np.zeros(len(labels), dtype=bool)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    rng = np.random.default_rng(seed)
    for label in sorted(groups):
        idx = groups[label]
        if len(idx) < 2:
            continue
        n_probe = min(max(1, int(test_frac * len(idx))), len(idx) - 1)
        probe[rng.choice(idx, size=n_probe, replace=False)] = True
    return probe


def nearest(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query's nearest gallery row by cosine similarity (first on ties)."""
    return np.argmax(np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T, axis=1)


def identified_as(gallery: np.ndarray, gallery_labels: Sequence[str], probes: np.ndarray) -> np.ndarray:
    """The label of each probe's nearest gallery image (``None`` for every probe when the gallery is empty)."""
    if len(gallery) == 0:
        return np.full(len(probes), None, dtype=object)
    return np.asarray(gallery_labels, dtype=object)[nearest(gallery, probes)]


def protection_rate(gallery: np.ndarray, gallery_labels: Sequence[str], probes: np.ndarray, user: str) -> float:
    """Share of ``probes`` (the user's clean photos) whose nearest gallery image is not the user's."""
    return float(np.mean(identified_as(gallery, gallery_labels, probes) != user))


def link_stats(originals: np.ndarray, cloaks: np.ndarray, own: Sequence[int]) -> dict[str, float | int]:
    """Cosine of each cloak to its own original (``originals[own[i]]``), and how often that is its nearest original."""
    own = np.asarray(own, dtype=np.int64)
    cos = np.sum(np.asarray(cloaks, np.float64) * np.asarray(originals, np.float64)[own], axis=1)
    return {
        "n": int(len(own)),
        "mean_cosine": float(cos.mean()),
        "nn_own_share": float(np.mean(nearest(originals, cloaks) == own)),
    }


# -- cloaks -------------------------------------------------------------------------------------
def _slug(names: Sequence[str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "+".join(names))


def make_cloaks(
    images: Sequence[FaceImage],
    dataset: FaceDataset,
    surrogates: Sequence[str],
    settings: CloakSettings,
    opts: RunOptions,
    cloak_root: Path,
    batch_size: int,
) -> tuple[Path, CloakRun]:
    """Cloak ``images`` with one surrogate set into ``cloak_root/METHOD-MODE-SURROGATES-HASH``; Fawkes targets other dataset identities.

    ``HASH`` starts the settings' digest, so each setting has its own folder and is reused by any later run.
    """
    encoders = load_surrogates(surrogates, opts)
    folder = cloak_root / f"{settings.method}-{settings.mode}-{_slug(surrogates)}-{settings.digest(encoders)[:8]}"
    run = cloak_images(images, dataset.root, folder, settings, encoders, opts, dataset.by_identity(), batch_size)
    write_json(folder / "cloak_summary.json", run.summary())
    return folder, run


def _embed_map(encoder: Encoder, images: Sequence[FaceImage], opts: RunOptions) -> tuple[dict[Path, np.ndarray], Any]:
    res = embed_images(encoder, images, opts.cache, batch_size=opts.batch_size, workers=opts.workers, progress=opts.progress)
    return {im.path: e for im, e in zip(res.images, res.embeddings)}, res


# -- protection ---------------------------------------------------------------------------------
def protection_metrics(
    images: Sequence[FaceImage],
    is_probe: np.ndarray,
    users: Sequence[str],
    original: dict[Path, np.ndarray],
    cloaked: dict[Path, np.ndarray],
) -> dict[str, Any]:
    """FaceCure protection of each user, with ``cloaked`` (source path -> cloak embedding).

    Photos missing from ``original`` (the model's front end could not use them) take no part; a
    user's cloak missing from ``cloaked`` is simply not in the gallery, as a search engine would
    not index it.
    """
    gallery = [im for im, p in zip(images, is_probe) if not p and im.path in original]
    probes = [im for im, p in zip(images, is_probe) if p and im.path in original]
    per_user = []
    hits = {"cloaked": 0, "clean": 0}
    others_correct, others_total = 0, 0
    for user in users:
        mine = [im for im in probes if im.identity == user]
        if not mine:
            continue
        rest = [im for im in gallery if im.identity != user]
        own = [im for im, p in zip(images, is_probe) if im.identity == user and not p]
        q = np.stack([original[im.path] for im in mine])
        rows = {}
        for kind, user_gallery in (
            ("cloaked", [cloaked[im.path] for im in own if im.path in cloaked]),
            ("clean", [original[im.path] for im in own if im.path in original]),
        ):
            g = np.asarray([original[im.path] for im in rest] + user_gallery, np.float32)
            labels = [im.identity for im in rest] + [user] * len(user_gallery)
            missed = int(np.sum(identified_as(g, labels, q) != user))
            rows[kind] = missed / len(mine)
            hits[kind] += missed
            others = [im for im in probes if im.identity != user]
            if kind == "cloaked" and others:
                pred = identified_as(g, labels, np.stack([original[im.path] for im in others]))
                others_correct += int(np.sum(pred == np.asarray([im.identity for im in others], dtype=object)))
                others_total += len(others)
        per_user.append(
            {
                "user": user,
                "n_probes": len(mine),
                "n_gallery_cloaks": sum(im.path in cloaked for im in own),
                "n_gallery_own": len(own),
                "protection_rate": rows["cloaked"],
                "protection_rate_clean": rows["clean"],
            }
        )
    n = sum(u["n_probes"] for u in per_user)
    return {
        "protection_rate": hits["cloaked"] / n if n else None,
        "protection_rate_clean": hits["clean"] / n if n else None,
        "others_rank1": others_correct / others_total if others_total else None,
        "n_users": len(per_user),
        "n_probes": n,
        "per_user": per_user,
    }


def _zeroshot_pair(encoder: Encoder, dataset: FaceDataset, pairs: list[tuple[FaceImage, Path]], opts: RunOptions) -> dict[str, Any]:
    quiet = replace(opts, progress=False)
    orig = FaceDataset(root=dataset.root, images=[im for im, _ in pairs], name="originals of the cloaks")
    clk = FaceDataset(root=dataset.root, images=[FaceImage(c, im.identity) for im, c in pairs], name="cloaks")
    a, b = zeroshot(encoder, orig, quiet), zeroshot(encoder, clk, quiet)
    return {"top1_original": a["top1"], "top1_cloaked": b["top1"], "n_original": a["n_images"], "n_cloaked": b["n_images"]}


def evaluate_protection(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    settings: CloakSettings,
    surrogate_sets: Sequence[Sequence[str]],
    cloak_root: Path,
    users: Sequence[str] | None = None,
    test_frac: float = TEST_FRAC,
    batch_size: int = 4,
    external: Sequence[CloakedTriple] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Cloak each user's gallery photos with each surrogate set (or take ``external`` cloaks), then measure every target model.

    Returns the ``results.json`` document: one entry per (surrogate set, target model) in
    ``results``, the cloak settings and the achieved budget with per-image statistics.
    """
    images = list(dataset.images)
    known = set(dataset.identities)
    users = list(users) if users else sorted(known)
    missing = [u for u in users if u not in known]
    if missing:
        raise ClipfaceError(f"{dataset.root}: protected user {missing[0]!r} is not in the dataset (after filtering)")
    is_probe = facecure_split([im.identity for im in images], test_frac, settings.seed)
    to_cloak = [im for im, p in zip(images, is_probe) if not p and im.identity in users]

    rows: list[dict[str, Any]] = []
    if external is not None:
        by_source = {t.original.resolve(): t.cloaked for t in external}
        found = {im.path: by_source[im.path.resolve()] for im in to_cloak if im.path.resolve() in by_source}
        rows.append({"surrogates": ["external"], "cloaks": found, "records": []})
    else:
        for names in surrogate_sets:
            folder, run = make_cloaks(to_cloak, dataset, names, settings, opts, cloak_root, batch_size)
            records = sorted(run.records, key=lambda r: r["source"])
            rows.append(
                {
                    "surrogates": list(names),
                    "folder": str(folder),
                    "cloaks": {Path(r["source"]): Path(r["cloak"]) for r in records},
                    "records": records,
                    "summary": {k: v for k, v in run.summary().items() if k != "settings"},
                }
            )

    def per_model(encoder: Encoder) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        start = time.perf_counter()
        original, res = _embed_map(encoder, images, opts)
        all_paths = [im.path for im in images if im.path in original]
        orig_matrix = np.stack([original[p] for p in all_paths])
        row_of = {p: i for i, p in enumerate(all_paths)}
        for row in rows:
            pairs = [(im, row["cloaks"][im.path]) for im in to_cloak if im.path in row["cloaks"]]
            emb, cres = _embed_map(encoder, [FaceImage(c, im.identity) for im, c in pairs], opts)
            cloaked = {im.path: emb[c] for im, c in pairs if c in emb}
            linked = [(row_of[src], v) for src, v in cloaked.items() if src in row_of]
            entry = {
                "model": encoder.name,
                "is_test_model": encoder.is_test_model,
                "encoder": encoder.info(),
                "surrogates": row["surrogates"],
                "white_box": encoder.name in row["surrogates"],
                **protection_metrics(images, is_probe, users, original, cloaked),
                "link": link_stats(orig_matrix, np.stack([v for _, v in linked]), [i for i, _ in linked]) if linked else None,
                "zeroshot": _zeroshot_pair(encoder, dataset, pairs, opts) if encoder.has_text and pairs else None,
                "n_cloaks": len(pairs),
                "cloaks_unusable": [str(c) for _, c in pairs if c not in emb],
                "embeddings": {"computed": res.computed + cres.computed, "cached": res.cached + cres.cached},
                "skipped": [s.to_dict() for s in [*dataset.skipped, *res.skipped]],
                "seconds": round(time.perf_counter() - start, 2),
            }
            entries.append(entry)
        return entries

    results, errors = each_model(models, opts, per_model, on_error)

    records = [r for row in rows for r in row["records"]]
    dssims = [r["dssim"] for r in records]
    crops = [r["dssim_crop"] for r in records]
    doc: dict[str, Any] = {
        "task": "protection",
        "dataset": dataset.name or str(dataset.root),
        "protocol": {"test_frac": test_frac, "seed": settings.seed, "users": users, "classifier": "1-NN, cosine"},
        "cloak": {**settings.to_dict(), "source": "external" if external is not None else "clipface"},
        "budget": settings.budget if external is None else None,
        "budget_measure": budget_measure(settings.region),
        "dssim_max": max(dssims) if dssims else None,
        "dssim_mean": float(np.mean(dssims)) if dssims else None,
        "dssim_crop_max": max(crops) if crops else None,
        "dssim_crop_mean": float(np.mean(crops)) if crops else None,
        "within_budget": within_budget(records, settings.budget),
        "surrogate_sets": [{k: v for k, v in row.items() if k not in ("cloaks", "records")} for row in rows],
        "results": results,
        "errors": errors,
        "per_image": records,
        "versions": versions(),
    }
    return doc


# -- poisoning ----------------------------------------------------------------------------------
def poisoning_split(labels: Sequence[str], n_gallery: int, n_pool: int, seed: int = 0) -> tuple[list[int], dict[str, list[int]], list[int]]:
    """Per person: ``n_gallery`` gallery photos, ``n_pool`` photos kept for poisons, the rest probes.

    People with fewer than ``n_gallery + n_pool + 1`` photos take no part.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    rng = np.random.default_rng(seed)
    gallery, probes, pool = [], [], {}
    for label in sorted(groups):
        idx = groups[label]
        if len(idx) < n_gallery + n_pool + 1:
            continue
        order = [idx[j] for j in rng.permutation(len(idx))]
        gallery += order[:n_gallery]
        pool[label] = order[n_gallery : n_gallery + n_pool]
        probes += order[n_gallery + n_pool :]
    return sorted(gallery), pool, sorted(probes)


def poison_gallery(
    kind: str, k: int, pool: dict[str, list[int]], seed: int, cloak_of: dict[int, int] | None = None
) -> list[tuple[int, str]]:
    """The ``k`` poisons per person as ``(index, label)``: ``mislabel`` files k photos of other
    people (from their pools, seeded) under the person's name; ``cloak`` files the cloaks of the
    person's first k pool photos (``cloak_of``: pool index -> index of its cloak)."""
    out = []
    for label in sorted(pool):
        if kind == "mislabel":
            others = [i for other, idx in sorted(pool.items()) if other != label for i in idx]
            order = np.random.default_rng([seed, zlib.crc32(label.encode())]).permutation(others)
            out += [(int(i), label) for i in order[:k]]
        elif kind == "cloak":
            assert cloak_of is not None
            out += [(cloak_of[i], label) for i in pool[label][:k] if i in cloak_of]
        else:
            raise ValueError(f"unknown poison kind {kind!r}: choose mislabel or cloak")
    return out


def poisoning_metrics(
    emb: np.ndarray, labels: Sequence[str], gallery: Sequence[int], probes: Sequence[int], poisons: Sequence[tuple[int, str]]
) -> dict[str, float]:
    """Rank-1 identification of ``probes`` against ``gallery`` plus ``poisons``, and the share whose nearest image is a poison."""
    g_idx = list(gallery) + [i for i, _ in poisons]
    g_labels = np.asarray([labels[i] for i in gallery] + [lab for _, lab in poisons], dtype=object)
    nn = nearest(emb[g_idx], emb[list(probes)])
    truth = np.asarray([labels[i] for i in probes], dtype=object)
    return {"rank1": float(np.mean(g_labels[nn] == truth)), "poison_hits": float(np.mean(nn >= len(gallery)))}


def evaluate_poisoning(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    ks: Sequence[int],
    kinds: Sequence[str],
    n_gallery: int,
    settings: CloakSettings | None = None,
    surrogates: Sequence[str] = (),
    cloak_root: Path | None = None,
    batch_size: int = 4,
    on_error: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rank-1 identification of clean probes as ``k`` poisons per person are added to the gallery."""
    ks = sorted({int(k) for k in ks} | {0})
    images = list(dataset.images)
    labels = [im.identity for im in images]
    seed = settings.seed if settings is not None else 0
    gallery, pool, probes = poisoning_split(labels, n_gallery, max(ks), seed)
    if not probes:
        raise ClipfaceError(f"{dataset.root}: no person has {n_gallery + max(ks) + 1} photos (gallery + poisons + a probe); try --min-images")
    cloak_info = None
    cloaks: list[tuple[int, FaceImage]] = []  # (index of the source photo, its cloak)
    if "cloak" in kinds:
        if settings is None or not surrogates or cloak_root is None:
            raise ClipfaceError("poisons of kind cloak need a cloak method and --surrogate")
        sources = [i for idx in pool.values() for i in idx]
        folder, run = make_cloaks([images[i] for i in sources], dataset, surrogates, settings, opts, cloak_root, batch_size)
        by_source = {Path(r["source"]): Path(r["cloak"]) for r in run.records}
        cloaks = [(i, FaceImage(by_source[images[i].path], labels[i])) for i in sources if images[i].path in by_source]
        cloak_info = {"folder": str(folder), **{k: v for k, v in run.summary().items() if k != "settings"}}
    everything = images + [c for _, c in cloaks]
    all_labels = labels + [c.identity for _, c in cloaks]
    def per_model(encoder: Encoder) -> dict[str, Any]:
        emb_map, res = _embed_map(encoder, everything, opts)
        usable = [i for i, im in enumerate(everything) if im.path in emb_map]
        emb = np.zeros((len(everything), encoder.dim), np.float32)
        emb[usable] = np.stack([emb_map[everything[i].path] for i in usable])
        ok = set(usable)
        cloak_of = {src: len(images) + j for j, (src, _) in enumerate(cloaks) if len(images) + j in ok}
        g = [i for i in gallery if i in ok]
        p = [i for i in probes if i in ok]
        usable_pool = {lab: [i for i in idx if i in ok] for lab, idx in pool.items()}
        rows = []
        for kind in kinds:
            for k in ks:
                poisons = [(i, lab) for i, lab in poison_gallery(kind, k, usable_pool, seed, cloak_of) if i in ok]
                rows.append({"kind": kind, "k": k, "n_poisons": len(poisons), **poisoning_metrics(emb, all_labels, g, p, poisons)})
        base = {r["kind"]: r["rank1"] for r in rows if r["k"] == 0}
        for r in rows:
            r["drop"] = base[r["kind"]] - r["rank1"]
        return {
            "model": encoder.name,
            "is_test_model": encoder.is_test_model,
            "encoder": encoder.info(),
            "n_identities": len(pool),
            "n_gallery": len(g),
            "n_probes": len(p),
            "curve": rows,
            "embeddings": res.counts(),
            "skipped": [s.to_dict() for s in [*dataset.skipped, *res.skipped]],
        }

    results, errors = each_model(models, opts, per_model, on_error)
    return {
        "task": "poisoning",
        "dataset": dataset.name or str(dataset.root),
        "protocol": {"ks": ks, "kinds": list(kinds), "n_gallery_per_identity": n_gallery, "seed": seed},
        "cloak": {**settings.to_dict(), "surrogates": list(surrogates), **(cloak_info or {})} if cloak_info else None,
        "results": results,
        "errors": errors,
        "versions": versions(),
    }


# -- reports ------------------------------------------------------------------------------------
def _model_cell(r: dict[str, Any]) -> str:
    return r["model"] + (" (TEST MODEL, random weights)" if r.get("is_test_model") else "")


def _errors(doc: dict[str, Any]) -> list[str]:
    return [f"- **{e['model']}** not evaluated: {e['error']}" for e in doc.get("errors", [])]


def protection_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval protection``: the surrogate x target table, budget, per-user rates."""
    c = doc["cloak"]
    rows = []
    for r in doc["results"]:
        link, zs = r.get("link") or {}, r.get("zeroshot") or {}
        rows.append(
            [
                " + ".join(r["surrogates"]), _model_cell(r), "white-box" if r["white_box"] else "transfer",
                r["protection_rate"], r["protection_rate_clean"], r["others_rank1"], r["n_users"], r["n_probes"],
                link.get("mean_cosine"), link.get("nn_own_share"), zs.get("top1_original"), zs.get("top1_cloaked"),
            ]
        )
    headers = [
        "surrogates", "target model", "setting", "protection rate", "clean baseline", "others' rank-1", "users", "probes",
        "cloak-original cosine", "cloak's NN is its original", "zero-shot top-1 originals", "zero-shot top-1 cloaks",
    ]
    budget = doc.get("budget")
    lines = [
        f"# Cloaking protection on {doc['dataset']}",
        "",
        f"Cloaks: **{c['method']}**, mode `{c['mode']}` ({c['source']}"
        + (f", face-box jitter {c['jitter']} px" if c.get("jitter") else "")
        + f"), DSSIM budget {fmt(budget, 4)} measured on the {c['region']} region. Protocol: FaceCure, {int(doc['protocol']['test_frac'] * 100)} % of each "
        "person's photos are probes, the rest the gallery; each protected user's gallery photos are cloaked in turn; "
        "1-nearest-neighbour search. Protection rate = share of the user's clean probes whose nearest gallery photo "
        "is someone else's (clean baseline: the same with no cloaks).",
        "",
        md_table(headers, rows),
        "",
        *_errors(doc),
        "",
        "## Achieved budget",
        "",
        f"DSSIM over the whole image: max {fmt(doc['dssim_max'], 5)}, mean {fmt(doc['dssim_mean'], 5)}; over the "
        f"surrogates' crops (the face for face recognisers, where Fawkes measures it): max {fmt(doc['dssim_crop_max'], 5)}, "
        f"mean {fmt(doc['dssim_crop_mean'], 5)}"
        + (f". Every cloak within {fmt(budget, 4)} on `{doc['budget_measure']}`: {'yes' if doc['within_budget'] else 'NO'}" if budget is not None else "")
        + ".",
        "",
    ]
    for s in doc["surrogate_sets"]:
        summ = s.get("summary")
        if summ:
            lines.append(
                f"- {' + '.join(s['surrogates'])}: {summ['n_cloaks']} cloaks ({summ['computed']} made, {summ['reused']} reused), "
                f"DSSIM max {fmt(summ['dssim_max'], 5)} mean {fmt(summ['dssim_mean'], 5)}, L-inf max {fmt(summ['linf_max'], 0)}, "
                f"PSNR mean {fmt(summ['psnr_mean'], 1)} dB, {fmt(summ['seconds_per_image_when_made'], 1)} s per image when made; "
                f"folder `{s['folder']}`"
            )
    lines += ["", "## Per user", ""]
    user_rows = [
        [" + ".join(r["surrogates"]), r["model"], u["user"], u["n_gallery_cloaks"], u["n_probes"], u["protection_rate"], u["protection_rate_clean"]]
        for r in doc["results"]
        for u in r["per_user"]
    ]
    lines += [md_table(["surrogates", "target model", "user", "gallery cloaks", "probes", "protection rate", "clean baseline"], user_rows)]
    skipped = doc["results"][0]["skipped"] if doc["results"] else []
    lines += ["", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines)


def poisoning_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval poisoning``: rank-1 against k poisons per person."""
    rows = [
        [_model_cell(r), params_m(r["encoder"]["n_params"]), p["kind"], p["k"], p["n_poisons"], p["rank1"], p["drop"], p["poison_hits"]]
        for r in doc["results"]
        for p in r["curve"]
    ]
    proto = doc["protocol"]
    lines = [
        f"# Index poisoning on {doc['dataset']}",
        "",
        f"Gallery: {proto['n_gallery_per_identity']} clean photos per person; k poisons per person are added "
        "(mislabel: photos of other people filed under the person's name; cloak: cloaks of the person's own photos). "
        "Probes: the person's remaining clean photos. Rank-1 = share of probes whose nearest gallery photo carries their name.",
        "",
        md_table(["model", "params", "poison", "k", "poisons", "rank-1", "drop vs k=0", "nearest is a poison"], rows),
        "",
        *_errors(doc),
        "",
    ]
    return "\n".join(lines)
