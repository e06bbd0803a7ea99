"""Zero-shot metrics on a constructed case whose answers are known by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from clipface.data.dataset import FaceDataset, display_name
from clipface.data.names import distractor_names
from clipface.data.prompts import IDIA, get_prompts
from clipface.embed.options import RunOptions
from clipface.eval.metrics.zeroshot import IdiaSettings, identity_inference
from clipface.eval.zeroshot import zeroshot
from clipface.models.base import Encoder, l2_normalize

D = 16
PEOPLE = ["Anna_Berg", "Ben_Cole", "Cara_Dunn", "Dan_Eve"]


def onehot(i: int) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[i] = 1
    return v


class TableEncoder(Encoder):
    """Image i is a 4x4 PNG whose pixels all equal i; its embedding is looked up in a table.

    Text embeddings: for each template, a table from name to vector; unknown names (distractors)
    get unit vectors in dimensions no image uses.
    """

    name, dim, image_size, has_text = "table", D, 4, True

    def __init__(self, image_vectors: dict[int, np.ndarray], text_vectors: dict[str, np.ndarray]) -> None:
        self.image_vectors, self.text_vectors = image_vectors, text_vectors

    n_params = 0
    fingerprint = "table"

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB"))

    def encode_prepared(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalize(np.stack([self.image_vectors[int(b[0, 0, 0])] for b in batch]))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        rng = np.random.default_rng(0)
        out = []
        for t in texts:
            if t in self.text_vectors:
                out.append(self.text_vectors[t])
            else:
                v = np.zeros(D, np.float32)
                v[8:] = rng.random(8)
                out.append(v)
        return l2_normalize(np.stack(out))


def make_dataset(root: Path) -> tuple[FaceDataset, dict[int, np.ndarray]]:
    """4 people x 5 images; person p's images are e_p, except Anna's last image, which is e_1 (looks like Ben)."""
    vectors = {}
    for p, person in enumerate(PEOPLE):
        (root / person).mkdir(parents=True)
        for j in range(5):
            value = p * 5 + j
            Image.new("RGB", (4, 4), (value,) * 3).save(root / person / f"{j}.png")
            vectors[value] = onehot(1 if (p, j) == (0, 4) else p)
    return FaceDataset.from_folder(root), vectors


def person_means(vectors: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        display_name(person): l2_normalize(np.mean([vectors[p * 5 + j] for j in range(5)], axis=0))
        for p, person in enumerate(PEOPLE)
    }


def test_known_answer_top1_top5_and_tables(tmp_path: Path) -> None:
    ds, vectors = make_dataset(tmp_path)
    means = person_means(vectors)
    enc = TableEncoder(vectors, {f"a photo of {n}.": v for n, v in means.items()})
    r = zeroshot(enc, ds, RunOptions(progress=False), prompts="paper", distractors=6, seed=3)
    # Anna's look-alike image is nearer Ben's mean (cos 1) than Anna's (0.2/0.82 = 0.24): one error of 20,
    # and Anna still ranks second, so top-5 is perfect.
    assert r["n_images"] == 20 and r["n_identities"] == 4 and r["n_candidates"] == 10
    assert r["top1"] == pytest.approx(19 / 20)
    assert r["top5"] == 1.0
    assert r["top1_macro"] == pytest.approx((0.8 + 1 + 1 + 1) / 4)
    anna = r["per_identity"][0]
    assert (anna["name"], anna["top1"], anna["most_confused_with"], anna["confused_share"]) == (
        "Anna Berg",
        0.8,
        "Ben Cole",
        0.2,
    )
    assert r["confusions"] == [{"true": "Anna Berg", "predicted": "Ben Cole", "count": 1}]
    assert r["embeddings"] == {"computed": 20, "cached": 0}


def test_identity_inference_decision(tmp_path: Path) -> None:
    """Two prompts; the second swaps Cara's and Dan's names, so they are recognised by one prompt only."""
    ds, vectors = make_dataset(tmp_path)
    means = person_means(vectors)
    text = {f"a photo of {n}.": v for n, v in means.items()}
    swap = {"Cara Dunn": "Dan Eve", "Dan Eve": "Cara Dunn"}
    text.update({n: means[swap.get(n, n)] for n in means})
    enc = TableEncoder(vectors, text)
    prompts = ["a photo of {}.", "{}"]
    r1 = zeroshot(enc, ds, RunOptions(progress=False), prompts=prompts, idia=IdiaSettings(tau=1))
    inf = r1["identity_inference"]
    assert [p["correct_prompts"] for p in inf["people"]] == [2, 2, 1, 1]
    assert inf["tpr"] == 1.0
    # Cara -> "Dan Eve" and Dan -> "Cara Dunn" are accepted with tau=1: 2 of 4 x 3 wrong pairs
    assert inf["fpr"] == pytest.approx(2 / 12)
    r2 = zeroshot(enc, ds, RunOptions(progress=False), prompts=prompts, idia=IdiaSettings(tau=2))
    assert r2["identity_inference"]["tpr"] == 0.5 and r2["identity_inference"]["fpr"] == 0.0
    assert r2["per_prompt_top1"] == {"a photo of {}.": 0.95, "{}": pytest.approx(9 / 20)}


def test_identity_inference_uses_k_images_and_majority() -> None:
    # one person, 3 images; prompt 0 predicts [0, 1, 1] -> majority 1 (wrong); with k=1 only image 0 votes -> 0
    img = l2_normalize(np.array([[1, 0], [0, 1], [0, 1]], np.float32))
    text = l2_normalize(np.array([[[1, 0], [0, 1]]], np.float32))
    labels = np.zeros(3, np.int64)
    assert identity_inference(img, labels, text, 1, IdiaSettings(tau=1))["tpr"] == 0.0
    assert identity_inference(img, labels, text, 1, IdiaSettings(tau=1, k=1))["tpr"] == 1.0
    with pytest.raises(ValueError, match="tau"):
        identity_inference(img, labels, text, 1, IdiaSettings(tau=2))


def test_prompt_sets_and_distractors() -> None:
    assert get_prompts("paper") == ("a photo of {}.",)
    assert len(IDIA) == 21 and "a photo of the celebrity {}" in IDIA and "actor {}" in IDIA
    with pytest.raises(ValueError):
        get_prompts("a photo")
    names = distractor_names(50, seed=1, exclude=["James Smith"])
    assert names == distractor_names(50, seed=1, exclude=["James Smith"]) and len(set(names)) == 50
    assert all(len(n.split()) == 2 for n in names) and "James Smith" not in names
    assert names != distractor_names(50, seed=2)


def test_text_tower_required(tmp_path: Path) -> None:
    ds, vectors = make_dataset(tmp_path)
    enc = TableEncoder(vectors, {})
    enc.has_text = False
    from clipface.errors import ClipfaceError

    with pytest.raises(ClipfaceError, match="no text tower"):
        zeroshot(enc, ds, RunOptions(progress=False))
