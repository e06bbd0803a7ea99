"""Pure metrics of cloaking and poisoning: FaceCure's protection rate, linkability and index poisoning.

* **FaceCure protocol** (Radiya-Dixit and Tramer, 2022; github.com/ftramer/FaceCure ``eval.py``):
  each person's photos are split at random into 70 % gallery and 30 % probes (``int(0.3 n)``
  probes). For each protected user in turn, the user's gallery photos are replaced by their
  cloaks while everyone else's stay clean; the user's clean probes are searched with a 1-nearest
  neighbour over gallery images (cosine similarity; a tie goes to the first gallery image). The
  **protection rate** is the share of those probes whose nearest neighbour is not the user.
* **Linkability**: the cosine of each cloak to its own original, and the share of cloaks whose
  nearest original is their own.
* **Index poisoning**: k extra images per person in a gallery (mislabelled photos of others, or
  cloaks of the person's own), and the rank-1 identification of clean probes as k grows.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...data.dataset import FaceImage
from ...textsafe import key_bytes

#: Share of each person's photos used as probes (FaceCure ``test_frac``).
TEST_FRAC = 0.3


def nearest(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query's nearest gallery row by inner product (cosine for unit rows; first on ties)."""
    return np.argmax(np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T, axis=1)


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


def poisoning_split(
    labels: Sequence[str], n_gallery: int, n_pool: int, seed: int = 0
) -> tuple[list[int], dict[str, list[int]], list[int]]:
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
            order = np.random.default_rng([seed, zlib.crc32(key_bytes(label))]).permutation(others)
            out += [(int(i), label) for i in order[:k]]
        elif kind == "cloak":
            assert cloak_of is not None
            out += [(cloak_of[i], label) for i in pool[label][:k] if i in cloak_of]
        else:
            raise ValueError(f"unknown poison kind {kind!r}: choose mislabel or cloak")
    return out


def poisoning_metrics(
    emb: np.ndarray,
    labels: Sequence[str],
    gallery: Sequence[int],
    probes: Sequence[int],
    poisons: Sequence[tuple[int, str]],
) -> dict[str, float]:
    """Rank-1 identification of ``probes`` against ``gallery`` plus ``poisons``, and the share whose nearest image is a
    poison."""
    g_idx = list(gallery) + [i for i, _ in poisons]
    g_labels = np.asarray([labels[i] for i in gallery] + [lab for _, lab in poisons], dtype=object)
    nn = nearest(emb[g_idx], emb[list(probes)])
    truth = np.asarray([labels[i] for i in probes], dtype=object)
    return {"rank1": float(np.mean(g_labels[nn] == truth)), "poison_hits": float(np.mean(nn >= len(gallery)))}
