"""Zero-shot metrics on a constructed case whose answers are known by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    r1 = zeroshot(enc, ds, RunOptions(progress=False), prompts=prompts, distractors=0, idia=IdiaSettings(tau=1))
    inf = r1["identity_inference"]
    assert [p["correct_prompts"] for p in inf["people"]] == [2, 2, 1, 1]
    assert inf["tpr"] == 1.0
    # Cara -> "Dan Eve" and Dan -> "Cara Dunn" are accepted with tau=1: 2 of 4 x 3 wrong pairs (the figure
    # that was called "fpr" before keeps its value under its own name)
    assert inf["wrong_name_rate"] == pytest.approx(2 / 12)
    assert inf["fpr"] is None and inf["n_non_members"] == 0  # no non-members given: no false positive rate
    r2 = zeroshot(enc, ds, RunOptions(progress=False), prompts=prompts, distractors=0, idia=IdiaSettings(tau=2))
    assert r2["identity_inference"]["tpr"] == 0.5 and r2["identity_inference"]["wrong_name_rate"] == 0.0
    assert [(c["tau"], c["tpr"]) for c in r1["identity_inference"]["tau_curve"]] == [(1, 1.0), (2, 0.5)]
    # Cara and Dan declared non-members: TPR over Anna and Ben, FPR over Cara and Dan (recognised by one prompt)
    r3 = zeroshot(
        enc,
        ds,
        RunOptions(progress=False),
        prompts=prompts,
        idia=IdiaSettings(tau=1),
        non_members=["Cara_Dunn", "dan eve"],
    )
    inf3 = r3["identity_inference"]
    assert (inf3["n_members"], inf3["n_non_members"], inf3["tpr"], inf3["fpr"]) == (2, 2, 1.0, 1.0)
    assert r3["non_members"] == ["Cara Dunn", "Dan Eve"]
    r4 = zeroshot(
        enc,
        ds,
        RunOptions(progress=False),
        prompts=prompts,
        idia=IdiaSettings(tau=2),
        non_members=["Cara_Dunn", "Dan_Eve"],
    )
    assert (r4["identity_inference"]["tpr"], r4["identity_inference"]["fpr"]) == (1.0, 0.0)
    assert r2["per_prompt_top1"] == {"a photo of {}.": 0.95, "{}": pytest.approx(9 / 20)}


def test_identity_inference_uses_k_images_and_majority() -> None:
    # one person, 3 images; prompt 0 predicts [0, 1, 1] -> majority 1 (wrong); with k=1 only image 0 votes -> 0
    img = l2_normalize(np.array([[1, 0], [0, 1], [0, 1]], np.float32))
    text = l2_normalize(np.array([[[1, 0], [0, 1]]], np.float32))
    labels = np.zeros(3, np.int64)
    assert identity_inference(img, labels, text, 1, IdiaSettings(tau=1))["tpr"] == 0.0
    assert identity_inference(img, labels, text, 1, IdiaSettings(tau=1, k=3))["tpr"] == 0.0  # k = all 3 images
    # k=1 votes with one image drawn at random (seeded), as the curve draws: image 0 (the right name) 1 time in 3,
    # never "the first image" (which would always be right here)
    tprs = [identity_inference(img, labels, text, 1, IdiaSettings(tau=1, k=1, seed=s))["tpr"] for s in range(300)]
    assert np.mean(tprs) == pytest.approx(1 / 3, abs=0.08)
    assert tprs == [
        identity_inference(img, labels, text, 1, IdiaSettings(tau=1, k=1, seed=s))["tpr"] for s in range(300)
    ]
    few = identity_inference(img, labels, text, 1, IdiaSettings(tau=1, k=4))  # fewer than k images: no vote
    assert few["tpr"] is None and few["n_left_out"] == 1 and few["people"] == []
    with pytest.raises(ValueError, match="tau"):
        identity_inference(img, labels, text, 1, IdiaSettings(tau=2))


def attack_membership(preds: np.ndarray, labels: np.ndarray, members: list[bool], tau: int) -> dict:
    """The attack's read-out, written from the IDIA notebook (``D0miH/does-clip-know-my-face``,
    ``laion400m_experiments/02_idia_laion_multiprompt.ipynb``, ``check_for_correct_prompt_majority`` and the
    tp/fp counts after it): per prompt, the name predicted most often over the person's images; a prompt whose
    top count is shared by two or more names is skipped; a person is called a member when at least ``tau``
    prompts' majority is their own name. TPR over the true members, FPR over the true non-members."""
    called = []
    for person in range(len(members)):
        own = preds[:, labels == person]
        correct = 0
        for row in own:
            names, counts = np.unique(row, return_counts=True)
            top = names[counts == counts.max()]
            correct += len(top) == 1 and top[0] == person
        called.append(correct >= tau)
    tp = sum(c for c, m in zip(called, members) if m)
    fp = sum(c for c, m in zip(called, members) if not m)
    n_m, n_n = sum(members), len(members) - sum(members)
    return {"tpr": tp / n_m if n_m else None, "fpr": fp / n_n if n_n else None}


def test_tied_vote_is_skipped() -> None:
    """Two images, one voting for the true name and one for a distractor: the attack skips the prompt (a read-out
    where the first-listed name won the tie called this person recognised)."""
    img = l2_normalize(np.array([[1, 0], [0, 1]], np.float32))
    text = l2_normalize(np.array([[[1, 0], [0, 1]]], np.float32))  # candidate 0 = the person, 1 = a distractor
    inf = identity_inference(img, np.zeros(2, np.int64), text, 1, IdiaSettings(tau=1))
    assert inf["tpr"] == 0.0 and inf["people"][0]["tied_prompts"] == 1 and inf["people"][0]["correct_prompts"] == 0
    assert attack_membership(np.array([[0, 1]]), np.zeros(2, np.int64), [True], 1)["tpr"] == 0.0


def test_tpr_over_members_fpr_over_non_members() -> None:
    """Four people, one image each and one prompt: people 0 and 2 are named right; 2 and 3 are non-members."""
    rows = [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]]  # person 1 -> name 3, person 3 -> name 1
    img = l2_normalize(np.array(rows, np.float32))
    text = l2_normalize(np.eye(4, dtype=np.float32)[None])
    labels = np.arange(4)
    inf = identity_inference(img, labels, text, 4, IdiaSettings(tau=1), members=[True, True, False, False])
    assert (inf["tpr"], inf["fpr"], inf["n_members"], inf["n_non_members"]) == (0.5, 0.5, 2, 2)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n_prompts=st.integers(1, 5),
    tau=st.integers(1, 5),
    per=st.integers(1, 5),
    n_cand=st.integers(2, 6),
)
def test_member_rates_equal_the_attacks_read_out(seed: int, n_prompts: int, tau: int, per: int, n_cand: int) -> None:
    """Random predictions (ties included): TPR and FPR equal the attack notebook's read-out, case by case."""
    rng = np.random.default_rng(seed)
    tau = min(tau, n_prompts)
    n_people = 4
    labels = np.repeat(np.arange(n_people), per)
    # biased toward each person's own name so that members and non-members are both called
    own = np.repeat(np.arange(n_people), per)[None].repeat(n_prompts, 0)
    preds = np.where(rng.random((n_prompts, len(labels))) < 0.5, own, rng.integers(0, n_cand + n_people, own.shape))
    members = [bool(b) for b in rng.integers(0, 2, n_people)]
    text = l2_normalize(np.eye(n_cand + n_people, dtype=np.float32)[None].repeat(n_prompts, 0))
    scores = np.zeros((len(labels), n_cand + n_people), np.float32)
    new = identity_inference(scores, labels, text, n_people, IdiaSettings(tau=tau), members=members, predictions=preds)
    want = attack_membership(preds, labels, members, tau)
    assert (new["tpr"], new["fpr"]) == (pytest.approx(want["tpr"]), pytest.approx(want["fpr"]))


def test_curve_over_k_draws_images() -> None:
    """Person 0's images are named right 2 times in 3; with k=1 about 2/3 of draws recognise them, with k=3 all."""
    img = l2_normalize(np.array([[1, 0], [1, 0], [0, 1]], np.float32))
    text = l2_normalize(np.array([[[1, 0], [0, 1]]], np.float32))
    inf = identity_inference(img, np.zeros(3, np.int64), text, 1, IdiaSettings(tau=1, ks=(1, 2, 3), draws=300, seed=1))
    curve = {c["k"]: c for c in inf["k_curve"]}
    assert curve[1]["tpr"] == pytest.approx(2 / 3, abs=0.08)
    assert curve[2]["tpr"] == pytest.approx(1 / 3, abs=0.08)  # k=2: both right w.p. 1/3, else a tie (skipped)
    assert curve[3]["tpr"] == 1.0 and curve[3]["tpr_std"] == 0.0
    inf = identity_inference(img, np.zeros(3, np.int64), text, 1, IdiaSettings(tau=1, ks=(1, 3, 5), draws=10))
    assert all(c["n_members"] == 0 and c["tpr"] is None and c["n_left_out"] == 1 for c in inf["k_curve"])


def test_curve_scores_one_population_at_every_k() -> None:
    """The issue's case: member A with 10 images always named right, member B with 3 always named wrong. Dropping B
    only at k = 5 made TPR jump from 0.5 to 1.0 between k = 3 and 5; the attack scores the same people at every k."""
    img = l2_normalize(np.array([[1, 0]] * 10 + [[1, 0]] * 3, np.float32))
    labels = np.array([0] * 10 + [1] * 3)
    text = l2_normalize(np.array([[[1, 0], [0, 1]]], np.float32))  # every image is named "person 0"
    inf = identity_inference(img, labels, text, 2, IdiaSettings(tau=1, ks=(3, 5), draws=20))
    points = {c["k"]: c for c in inf["k_curve"]}
    assert points[3]["tpr"] == points[5]["tpr"] == 1.0  # B (fewer than 5 images) is out of the whole curve
    assert points[3]["n_members"] == points[5]["n_members"] == 1 and points[3]["n_left_out"] == 1
    inf = identity_inference(img, labels, text, 2, IdiaSettings(tau=1, ks=(3,), draws=20))
    assert inf["k_curve"][0]["tpr"] == 0.5 and inf["k_curve"][0]["n_members"] == 2  # at k <= 3 both take part


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


def test_exact_ties_do_not_favour_the_real_names() -> None:
    """A model that scores every name the same (a guess) must not name the person: candidates are offered in a seeded
    shuffle, as the attack asks, so an exact tie goes to a real name about 1 time in N, not always."""
    from clipface.eval.metrics.zeroshot import zeroshot_metrics

    n_people, n_cand = 2, 100
    img = l2_normalize(np.ones((4, 2), np.float32))
    text = l2_normalize(np.ones((1, n_cand, 2), np.float32))  # every candidate the same vector: all scores tie
    names = [f"name {i}" for i in range(n_cand)]
    labels = np.array([0, 0, 1, 1])
    top1 = [zeroshot_metrics(img, labels, text, names, n_people, ["{}"], seed=s)["top1"] for s in range(200)]
    assert np.mean(top1) < 0.05  # offered in the dataset's order, every tie went to person 0: top-1 0.5
    again = [zeroshot_metrics(img, labels, text, names, n_people, ["{}"], seed=s)["top1"] for s in range(200)]
    assert top1 == again


def test_people_left_out_of_identity_inference_are_named(tmp_path: Path) -> None:
    """With --idia-k above some people's image count, the results and the report name who was left out."""
    from clipface.report.markdown import render_markdown

    _, vectors = make_dataset(tmp_path)
    (tmp_path / PEOPLE[1] / "4.png").unlink()  # one person with 4 images, the others with 5
    ds = FaceDataset.from_folder(tmp_path)
    enc = TableEncoder(vectors, {f"a photo of {n}.": v for n, v in person_means(vectors).items()})
    r = zeroshot(enc, ds, RunOptions(progress=False), distractors=0, idia=IdiaSettings(tau=1, ks=(3, 5)))
    assert r["idia_left_out"] == [display_name(PEOPLE[1])]
    assert r["identity_inference"]["k_curve"][0]["n_members"] == 3
    doc = {"task": "zeroshot", "dataset": str(tmp_path), "results": [r], "errors": []}
    assert f"Left out of identity inference (fewer images than its largest k): {display_name(PEOPLE[1])}." in (
        render_markdown(doc)
    )
    r = zeroshot(enc, ds, RunOptions(progress=False), distractors=0, idia=IdiaSettings(tau=1, ks=(3, 4)))
    assert r["idia_left_out"] == []
