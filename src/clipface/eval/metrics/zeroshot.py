"""Zero-shot name identification: which of many names does CLIP give a face photo?

Candidates are the dataset's people plus optional distractor names. Two read-outs:

* **Classification.** Each name's classifier is the mean of its normalised prompt embeddings
  (renormalised); an image's prediction ranks all candidates by cosine similarity. Top-1 and
  top-5 accuracy, micro (over images) and macro (mean over people), per person and per prompt.
* **Identity inference** ("Does CLIP Know My Face?"). For each prompt separately, each of a
  person's ``k`` images predicts a name; the majority vote over those images is that prompt's
  answer. A name is *accepted* for the person when at least ``tau`` prompts answer it. The true
  positive rate is the share of people whose own name is accepted; the false positive rate the
  share of (person, other candidate) pairs in which the other name is accepted.
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
    """Identity-inference decision: ``tau`` agreeing prompts over ``k`` images per person."""

    tau: int = 1
    k: int | None = None  # None: all images of the person

    def __post_init__(self) -> None:
        check_int("tau", self.tau, 1, allow_none=False)
        check_int("idia_k", self.k, 1)

    def check(self, n_prompts: int) -> None:
        """:class:`~clipface.errors.UsageError` unless ``tau`` is at most the number of prompts."""
        if self.tau > n_prompts:
            raise UsageError("tau", self.tau, f"must be between 1 and the number of prompts ({n_prompts})")


def classifier_weights(text_emb: np.ndarray) -> np.ndarray:
    """``(T, N, d)`` prompt embeddings to ``(N, d)`` unit classifiers (mean over prompts)."""
    return l2_normalize(l2_normalize(text_emb).mean(axis=0))


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether each row's true label is among its ``k`` highest scores (ties broken by index)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def majority(preds: np.ndarray, n_classes: int) -> int:
    """Most frequent prediction (smallest index among ties)."""
    return int(np.bincount(preds, minlength=n_classes).argmax())


def prompt_predictions(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """``(T, M)``: each prompt template's own top-1 candidate for each image."""
    return np.stack([np.argmax(image_emb @ l2_normalize(text_emb[t]).T, axis=1) for t in range(text_emb.shape[0])])


def identity_inference(
    image_emb: np.ndarray,
    labels: np.ndarray,
    text_emb: np.ndarray,
    n_identities: int,
    settings: IdiaSettings,
    predictions: np.ndarray | None = None,
) -> dict[str, Any]:
    """The identity-inference decision for every person (labels ``0..n_identities-1``).

    ``predictions`` is :func:`prompt_predictions` of the same inputs, when already computed.
    """
    n_prompts, n_cand = text_emb.shape[:2]
    settings.check(n_prompts)
    per_prompt_pred = predictions if predictions is not None else prompt_predictions(image_emb, text_emb)
    accepted_true, accepted_wrong, people = 0, 0, []
    for person in range(n_identities):
        idx = np.flatnonzero(labels == person)
        if settings.k is not None:
            idx = idx[: settings.k]
        if idx.size == 0:
            continue
        answers = [majority(per_prompt_pred[t, idx], n_cand) for t in range(n_prompts)]
        votes = Counter(answers)
        correct = votes.get(person, 0)
        wrong = sum(1 for c, v in votes.items() if c != person and v >= settings.tau)
        accepted_true += correct >= settings.tau
        accepted_wrong += wrong
        people.append(
            {
                "label": person,
                "n_images": int(idx.size),
                "correct_prompts": correct,
                "recognised": correct >= settings.tau,
                "wrong_names_accepted": wrong,
            }
        )
    n = len(people)
    return {
        "tau": settings.tau,
        "k": settings.k,
        "n_prompts": n_prompts,
        "n_people": n,
        "tpr": accepted_true / n if n else float("nan"),
        "fpr": accepted_wrong / (n * (n_cand - 1)) if n and n_cand > 1 else float("nan"),
        "people": people,
    }


def zeroshot_metrics(
    image_emb: np.ndarray,
    labels: np.ndarray,
    text_emb: np.ndarray,
    candidates: Sequence[str],
    n_identities: int,
    prompts: Sequence[str],
    idia: IdiaSettings = IdiaSettings(),
    n_confusions: int = 20,
) -> dict[str, Any]:
    """All zero-shot metrics from embeddings.

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
    top1 = topk_hits(scores, labels, 1)
    top5 = topk_hits(scores, labels, 5)
    pred = np.argmax(scores, axis=1)

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
    predictions = prompt_predictions(image_emb, text_emb)
    per_prompt = {tpl: float((predictions[t] == labels).mean()) for t, tpl in enumerate(prompts)}
    inference = identity_inference(image_emb, labels, text_emb, n_identities, idia, predictions)
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
