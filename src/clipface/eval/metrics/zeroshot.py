"""Zero-shot name identification: which of many names does CLIP give a face photo?

Candidates are the dataset's people plus optional distractor names. Two read-outs:

* **Classification.** Each name's classifier is the mean of its normalised prompt embeddings
  (renormalised); an image's prediction ranks all candidates by cosine similarity. Top-1 and
  top-5 accuracy, micro (over images) and macro (mean over people), per person and per prompt.
* **Identity inference**, as the attack of "Does CLIP Know My Face?" (Hintersdorf et al.) defines
  it in its released code (``D0miH/does-clip-know-my-face``, ``laion400m_experiments/
  02_idia_laion_multiprompt.ipynb``, ``check_for_correct_prompt_majority``): for each prompt
  separately, each of a person's ``k`` images predicts a name (argmax over all candidates); the
  prompt's answer is the single most frequent name, and **a prompt whose top count is tied is
  skipped**. A person is *recognised* when at least ``tau`` prompts answer their own name. The
  true positive rate is the share of **members** recognised, the false positive rate the share of
  **non-members** (real people known not to be in the training data, whose photos and names are
  tested alike) recognised. The attack draws ``k`` images per person at random, 20 times for each
  ``k``, and plots the rates against ``k`` (:func:`idia_curve`); :func:`tau_curve` gives them for
  every ``tau``. ``wrong_name_rate`` (named ``fpr`` before) is the share of (person, other
  candidate) pairs whose other name is answered by at least ``tau`` prompts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import UsageError, check_int
from ...models.base import l2_normalize


@dataclass(frozen=True)
class IdiaSettings:
    """Identity-inference decision: ``tau`` agreeing prompts over ``k`` images per person, and its curves.

    ``ks``: the numbers of images per person of the curve over ``k`` (each drawn ``draws`` times,
    seeded by ``seed``; the attack uses 1, 3, ..., 29, 30 and 20 draws).
    """

    tau: int = 1
    k: int | None = None  # None: all images of the person
    ks: tuple[int, ...] = ()
    draws: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("tau", self.tau, 1, allow_none=False)
        check_int("idia_k", self.k, 1)
        for k in self.ks:
            check_int("idia_k", k, 1, allow_none=False)
        check_int("idia_draws", self.draws, 1, allow_none=False)

    def check(self, n_prompts: int) -> None:
        """:class:`~clipface.errors.UsageError` unless ``tau`` is at most the number of prompts."""
        if self.tau > n_prompts:
            raise UsageError("tau", self.tau, f"must be between 1 and the number of prompts ({n_prompts})")


def classifier_weights(text_emb: np.ndarray) -> np.ndarray:
    """``(T, N, d)`` prompt embeddings to ``(N, d)`` unit classifiers (mean over prompts)."""
    return l2_normalize(l2_normalize(text_emb).mean(axis=0))


def candidate_order(n_candidates: int, seed: int = 0) -> np.ndarray:
    """The seeded order in which candidates are offered: an exact tie goes to whichever comes first in it.

    The attack asks among its names in shuffled order; offered in the dataset's order (its people first),
    every exact tie would favour a real name over a distractor.
    """
    return np.random.default_rng(seed).permutation(n_candidates)


def _ranked(scores: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Candidate indices of each row from the highest score down, ties broken by ``order`` (else by index)."""
    if order is None:
        return np.argsort(-scores, axis=1, kind="stable")
    return order[np.argsort(-scores[:, order], axis=1, kind="stable")]


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int, order: np.ndarray | None = None) -> np.ndarray:
    """Whether each row's true label is among its ``k`` highest scores (ties broken by ``order``, else by index)."""
    k = min(k, scores.shape[1])
    top = _ranked(scores, order)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def prompt_vote(preds: np.ndarray) -> int | None:
    """The single most frequent of ``preds``, or ``None`` when the top count is tied (the attack skips that prompt)."""
    values, counts = np.unique(np.asarray(preds), return_counts=True)
    winners = values[counts == counts.max()]
    return int(winners[0]) if len(winners) == 1 else None


def prompt_predictions(image_emb: np.ndarray, text_emb: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """``(T, M)``: each prompt template's own top-1 candidate for each image (ties broken by ``order``)."""

    def top1(scores: np.ndarray) -> np.ndarray:
        return np.argmax(scores, axis=1) if order is None else order[np.argmax(scores[:, order], axis=1)]

    return np.stack([top1(image_emb @ l2_normalize(text_emb[t]).T) for t in range(text_emb.shape[0])])


def _answers(per_prompt_pred: np.ndarray, idx: np.ndarray) -> list[int | None]:
    return [prompt_vote(per_prompt_pred[t, idx]) for t in range(per_prompt_pred.shape[0])]


def _rates(recognised: dict[int, bool], members: np.ndarray) -> tuple[float | None, float | None, int, int]:
    mem = [v for p, v in recognised.items() if members[p]]
    non = [v for p, v in recognised.items() if not members[p]]
    tpr = float(np.mean(mem)) if mem else None
    fpr = float(np.mean(non)) if non else None
    return tpr, fpr, len(mem), len(non)


def _members(n_identities: int, members: np.ndarray | Sequence[bool] | None) -> np.ndarray:
    if members is None:
        return np.ones(n_identities, bool)
    out = np.asarray(members, bool)
    if out.shape != (n_identities,):
        raise ValueError(f"members must be {n_identities} booleans, one per identity")
    return out


def identity_inference(
    image_emb: np.ndarray,
    labels: np.ndarray,
    text_emb: np.ndarray,
    n_identities: int,
    settings: IdiaSettings,
    predictions: np.ndarray | None = None,
    members: np.ndarray | Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The identity-inference decision for every person (labels ``0..n_identities-1``), as the attack makes it.

    ``members[p]`` says whether person ``p`` is a member (default: everyone); ``predictions`` is
    :func:`prompt_predictions` of the same inputs, when already computed. With ``settings.k``, ``k``
    images of each person drawn at random (seeded, as the curve draws them) vote; without it, all of them.
    """
    n_prompts, n_cand = text_emb.shape[:2]
    settings.check(n_prompts)
    member = _members(n_identities, members)
    per_prompt_pred = predictions if predictions is not None else prompt_predictions(image_emb, text_emb)
    accepted_wrong, people, left_out = 0, [], 0
    recognised: dict[int, bool] = {}
    correct_counts: dict[int, int] = {}
    rng = np.random.default_rng(settings.seed)
    for person in range(n_identities):
        idx = np.flatnonzero(labels == person)
        if settings.k is not None:  # k random images, seeded, as the curve draws them; fewer than k: no vote
            if idx.size < settings.k:
                left_out += int(idx.size > 0)
                continue
            idx = np.sort(rng.choice(idx, size=settings.k, replace=False))
        if idx.size == 0:
            continue
        answers = _answers(per_prompt_pred, idx)
        votes = Counter(a for a in answers if a is not None)
        correct = votes.get(person, 0)
        wrong = sum(1 for c, v in votes.items() if c != person and v >= settings.tau)
        accepted_wrong += wrong
        recognised[person] = correct >= settings.tau
        correct_counts[person] = correct
        people.append(
            {
                "label": person,
                "member": bool(member[person]),
                "n_images": int(idx.size),
                "correct_prompts": correct,
                "tied_prompts": sum(a is None for a in answers),
                "recognised": recognised[person],
                "wrong_names_accepted": wrong,
            }
        )
    n = len(people)
    tpr, fpr, n_mem, n_non = _rates(recognised, member)
    return {
        "tau": settings.tau,
        "k": settings.k,
        "n_prompts": n_prompts,
        "n_people": n,
        "n_members": n_mem,
        "n_non_members": n_non,
        "n_left_out": left_out,  # people with fewer than k images (k given)
        "tpr": tpr,
        "fpr": fpr,
        "wrong_name_rate": accepted_wrong / (n * (n_cand - 1)) if n and n_cand > 1 else None,
        "tau_curve": tau_curve(correct_counts, member, n_prompts),
        "k_curve": idia_curve(per_prompt_pred, labels, n_identities, settings, member) if settings.ks else [],
        "people": people,
    }


def tau_curve(correct: dict[int, int], members: np.ndarray, n_prompts: int) -> list[dict[str, Any]]:
    """TPR and FPR for every ``tau`` from 1 to the number of prompts, from each person's count of correct prompts."""
    out = []
    for tau in range(1, n_prompts + 1):
        tpr, fpr, _, _ = _rates({p: c >= tau for p, c in correct.items()}, members)
        out.append({"tau": tau, "tpr": tpr, "fpr": fpr})
    return out


def idia_curve(
    per_prompt_pred: np.ndarray, labels: np.ndarray, n_identities: int, settings: IdiaSettings, members: np.ndarray
) -> list[dict[str, Any]]:
    """TPR and FPR against the number ``k`` of images per person, ``settings.draws`` random draws each (mean, std).

    As in the attack, one population is scored at every ``k``: the people with at least the largest
    ``k`` images (the others are left out of the whole curve and counted in ``n_left_out``), and each
    draw takes ``k`` of a person's images without replacement. So the rates move with ``k`` only,
    never because people join or leave the sample.
    """
    rng = np.random.default_rng(settings.seed)
    by_person = {p: np.flatnonzero(labels == p) for p in range(n_identities)}
    largest = max(settings.ks)
    eligible = [p for p, idx in by_person.items() if idx.size >= largest]
    left_out = sum(1 for idx in by_person.values() if 0 < idx.size < largest)
    out = []
    for k in sorted(set(settings.ks)):
        tprs, fprs = [], []
        for _ in range(settings.draws):
            rec = {}
            for p in eligible:
                idx = rng.choice(by_person[p], size=k, replace=False)
                rec[p] = sum(a == p for a in _answers(per_prompt_pred, idx)) >= settings.tau
            tpr, fpr, n_mem, n_non = _rates(rec, members)
            tprs.append(tpr)
            fprs.append(fpr)
        out.append(
            {
                "k": k,
                "draws": settings.draws,
                "n_members": sum(bool(members[p]) for p in eligible),
                "n_non_members": sum(not members[p] for p in eligible),
                "n_left_out": left_out,
                "tpr": _mean(tprs),
                "tpr_std": _std(tprs),
                "fpr": _mean(fprs),
                "fpr_std": _std(fprs),
            }
        )
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _std(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.std(vals)) if vals else None


def zeroshot_metrics(
    image_emb: np.ndarray,
    labels: np.ndarray,
    text_emb: np.ndarray,
    candidates: Sequence[str],
    n_identities: int,
    prompts: Sequence[str],
    idia: IdiaSettings = IdiaSettings(),
    n_confusions: int = 20,
    members: np.ndarray | Sequence[bool] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """All zero-shot metrics from embeddings (exact ties broken in the seeded :func:`candidate_order`).

    ``image_emb`` ``(M, d)`` unit vectors with ``labels`` ``(M,)`` indexing ``candidates``, whose
    first ``n_identities`` entries are the dataset's people; ``text_emb`` ``(T, N, d)`` holds
    each prompt template's embedding of each candidate name.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if image_emb.shape[0] != labels.shape[0]:
        raise ValueError("one label per image embedding is needed")
    if text_emb.shape[:2] != (len(prompts), len(candidates)):
        raise ValueError(
            f"text embeddings {text_emb.shape[:2]} do not match {len(prompts)} prompts x {len(candidates)} names"
        )
    scores = image_emb @ classifier_weights(text_emb).T
    order = candidate_order(len(candidates), seed)
    top1 = topk_hits(scores, labels, 1, order)
    top5 = topk_hits(scores, labels, 5, order)
    pred = order[np.argmax(scores[:, order], axis=1)]

    per_identity = []
    for person in range(n_identities):
        mask = labels == person
        if not mask.any():
            continue
        wrong = Counter(int(p) for p in pred[mask] if p != person)
        common, count = wrong.most_common(1)[0] if wrong else (None, 0)
        per_identity.append(
            {
                "name": candidates[person],
                "n_images": int(mask.sum()),
                "top1": float(top1[mask].mean()),
                "top5": float(top5[mask].mean()),
                "most_confused_with": candidates[common] if common is not None else None,
                "confused_share": count / int(mask.sum()),
            }
        )
    confusions = Counter((int(t), int(p)) for t, p in zip(labels, pred) if t != p)
    predictions = prompt_predictions(image_emb, text_emb, order)
    per_prompt = {tpl: float((predictions[t] == labels).mean()) for t, tpl in enumerate(prompts)}
    inference = identity_inference(image_emb, labels, text_emb, n_identities, idia, predictions, members)
    for row in inference["people"]:
        row["name"] = candidates[row.pop("label")]
    return {
        "n_images": int(len(labels)),
        "n_identities": len(per_identity),
        "n_candidates": len(candidates),
        "top1": float(top1.mean()) if len(labels) else float("nan"),
        "top5": float(top5.mean()) if len(labels) else float("nan"),
        "top1_macro": float(np.mean([r["top1"] for r in per_identity])) if per_identity else float("nan"),
        "top5_macro": float(np.mean([r["top5"] for r in per_identity])) if per_identity else float("nan"),
        "per_identity": per_identity,
        "confusions": [
            {"true": candidates[t], "predicted": candidates[p], "count": c}
            for (t, p), c in confusions.most_common(n_confusions)
        ],
        "per_prompt_top1": per_prompt,
        "identity_inference": inference,
    }
