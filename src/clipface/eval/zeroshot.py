"""Zero-shot name identification task: a CLIP model names each face among the people and distractor names."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..data.dataset import FaceDataset, display_name, identity_key
from ..data.names import distractor_names, max_distractors
from ..data.prompts import get_prompts
from ..embed.options import RunOptions
from ..embed.pipeline import embed_texts
from ..errors import ClipfaceError, UsageError, check_int
from ..models.base import Encoder
from .metrics.zeroshot import IdiaSettings, zeroshot_metrics
from .runner import embed_dataset, model_header

__all__ = ["check_zeroshot_args", "zeroshot"]


#: The candidate pool when no ``distractors`` count is given: the dataset's people and distractors up to 1,000 names,
#: the pool of the identity inference attack ("Does CLIP Know My Face?", Hintersdorf et al. 2024).
POOL = 1000


def check_zeroshot_args(prompts: str | Sequence[str], distractors: int | None, idia: IdiaSettings) -> tuple[str, ...]:
    """The prompt templates, after checking every argument (:class:`~clipface.errors.UsageError` otherwise)."""
    templates = get_prompts(prompts)
    check_int("distractors", distractors, 0, max_distractors())
    idia.check(len(templates))
    return templates


def check_non_members(non_members: Sequence[str], dataset: FaceDataset) -> None:
    """:class:`~clipface.errors.UsageError` naming the first non-member who matches no person of ``dataset``.

    A typo would otherwise turn a non-member into a member without a word (folder or display names match).
    """
    known = {identity_key(p) for p in dataset.identities}
    for name in non_members:
        if identity_key(name) not in known:
            raise UsageError("non_members", name, f"matches no person of the dataset {dataset.name or dataset.root}")


def zeroshot(
    encoder: Encoder,
    dataset: FaceDataset,
    opts: RunOptions,
    prompts: str | Sequence[str] = "paper",
    distractors: int | None = None,
    seed: int = 0,
    idia: IdiaSettings = IdiaSettings(),
    non_members: Sequence[str] = (),
) -> dict[str, Any]:
    """Zero-shot name identification of ``dataset``'s people with ``encoder`` (needs a text tower).

    ``distractors``: realistic names added to the dataset's people (``None``: as many as make a pool of
    :data:`POOL` names). ``non_members``: identities of the dataset (folder or display names) known not to be in the
    model's training data; identity inference then reports its FPR over them (and its TPR over
    the others, the members).
    """
    templates = check_zeroshot_args(prompts, distractors, idia)
    if not encoder.has_text:
        raise ClipfaceError(f"model {encoder.name} has no text tower: zero-shot name identification needs a CLIP model")
    start = time.perf_counter()
    result, ds = embed_dataset(encoder, dataset, opts)
    people = sorted({im.identity for im in result.images})
    names = [display_name(p) for p in people]
    if distractors is None:  # the attack's pool: 1,000 names in all
        distractors = max(0, POOL - len(names))
    candidates = names + distractor_names(distractors, seed=seed, exclude=names)
    index = {p: i for i, p in enumerate(people)}
    labels = np.array([index[im.identity] for im in result.images], dtype=np.int64)
    texts = [t.format(n) for t in templates for n in candidates]
    text_emb, n_text = embed_texts(encoder, texts, opts.cache)
    text_emb = text_emb.reshape(len(templates), len(candidates), -1)
    outside = {identity_key(n) for n in non_members}
    members = np.array([identity_key(p) not in outside for p in people], bool)
    metrics = zeroshot_metrics(
        result.embeddings, labels, text_emb, candidates, len(people), templates, idia, members=members, seed=seed
    )
    out = {"task": "zeroshot", **model_header(encoder, result, ds, time.perf_counter() - start)}
    out.update(metrics)
    out["prompts"] = list(templates)
    out["distractors"] = distractors
    out["seed"] = seed
    out["non_members"] = [display_name(p) for p, m in zip(people, members) if not m]
    largest = max([*idia.ks, idia.k or 0])  # identity inference scores only people with this many images
    counts = np.bincount(labels, minlength=len(people))
    out["idia_left_out"] = [names[i] for i in range(len(people)) if 0 < counts[i] < largest]
    out["text_embeddings"] = {"computed": n_text, "cached": len(texts) - n_text}
    return out
