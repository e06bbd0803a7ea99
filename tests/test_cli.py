"""The command line, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import clipface
from clipface.cli import app

from .conftest import LFW_MINI, need

runner = CliRunner()


def clipface_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clipface", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_eval_zeroshot_writes_results_and_second_run_is_cached(tmp_path: Path) -> None:
    out = tmp_path / "zs"
    args = [
        "eval",
        "zeroshot",
        "--model",
        "test-tiny-random",
        "--dataset",
        str(need(LFW_MINI)),
        "--out",
        str(out),
        "-q",
        "--distractors",
        "10",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    doc = json.loads((out / "results.json").read_text())
    for key in (
        "task",
        "model",
        "dataset",
        "n_images",
        "n_identities",
        "n_candidates",
        "top1",
        "top5",
        "per_identity",
        "embeddings",
        "skipped",
        "versions",
    ):
        assert key in doc, key
    assert (doc["task"], doc["n_images"], doc["n_identities"], doc["n_candidates"]) == ("zeroshot", 100, 10, 20)
    assert doc["embeddings"] == {"computed": 100, "cached": 0}
    assert doc["is_test_model"] and "clipface" in doc["versions"] and "torch" in doc["versions"]
    assert "TEST MODEL" in (out / "results.md").read_text()
    second = runner.invoke(app, args)
    assert second.exit_code == 0
    assert json.loads((out / "results.json").read_text())["embeddings"] == {"computed": 0, "cached": 100}


def test_offline_model_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    proc = clipface_cli(
        "eval",
        "zeroshot",
        "--model",
        "ViT-B-32:openai",
        "--dataset",
        "bundled:lfw-mini",
        "--out",
        str(tmp_path),
        "-q",
        env={"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")},
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(errors) == 1 and "ViT-B-32:openai" in errors[0] and "--weights DIR" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_files_listed_under_skipped(bad_folder: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["eval", "zeroshot", "-m", "test-tiny-random", "-d", str(bad_folder), "-o", str(tmp_path), "-q"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "results.json").read_text())
    skipped = {Path(s["file"]).name: s["reason"] for s in doc["skipped"]}
    assert set(skipped) == {"truncated.jpg", "notes.jpg", "huge.png"}
    assert doc["n_images"] == 6 and doc["n_identities"] == 2


def test_several_models_one_table_and_errors_do_not_lose_results(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "eval",
            "zeroshot",
            "-m",
            "test-tiny-random",
            "-m",
            "ViT-B-32:openai",
            "-d",
            "bundled:lfw-mini",
            "-o",
            str(tmp_path),
            "-q",
        ],
    )
    assert res.exit_code == 1
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [r["model"] for r in doc["results"]] == ["test-tiny-random"]
    assert doc["errors"][0]["model"] == "ViT-B-32:openai"
    assert "ViT-B-32:openai" in (tmp_path / "results.md").read_text()


def test_unknown_model_and_missing_dataset(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["eval", "zeroshot", "-m", "ViT-Q-99", "-d", "bundled:lfw-mini", "-o", str(tmp_path), "-q"]
    )
    assert res.exit_code == 2 and "unknown model 'ViT-Q-99'" in res.output
    res = runner.invoke(
        app, ["eval", "zeroshot", "-m", "test-tiny-random", "-d", str(tmp_path / "nope"), "-o", str(tmp_path)]
    )
    assert res.exit_code == 2 and "does not exist" in res.output


def test_models_lists_availability() -> None:
    res = runner.invoke(app, ["models", "--json"])
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["test-tiny-random"]["is_test"] and rows["test-tiny-random"]["available"]
    assert rows["ViT-B-32:openai"]["available"] is False


def test_main_job_without_cloaks_lists_models_not_run(tmp_path: Path) -> None:
    """The study with the clean half only (the full default run is tests/test_study.py)."""
    res = runner.invoke(
        app, ["run", "--out", str(tmp_path), "--models", "ViT-B-32:openai,test-tiny-random", "--cloak", "none", "-q"]
    )
    assert res.exit_code == 0, res.output
    report = (tmp_path / "report.md").read_text()
    assert "test-tiny-random" in report and "ViT-B-32:openai" in report and "--weights DIR" in report
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["dataset"]["n_images"] == 100 and doc["cloaks"] == [] and doc["models_run"] == ["test-tiny-random"]
    (r,) = doc["results"]
    assert set(r["gallery"]) == {"clean", "protocol"} and r["gallery"]["clean"]["n_gallery"] == 45


def write_pairs(root: Path, path: Path) -> None:
    """A 2-fold pairs file over lfw-mini: per fold 3 same-person and 3 different-person pairs."""
    people = sorted(p.name for p in root.iterdir() if p.is_dir())
    number = lambda person, i: int(sorted((root / person).glob("*.jpg"))[i].stem[-4:])  # noqa: E731
    lines = ["2 3"]
    for fold in range(2):
        lines += [
            f"{people[fold * 3 + k]}\t{number(people[fold * 3 + k], 0)}\t{number(people[fold * 3 + k], 1)}"
            for k in range(3)
        ]
        lines += [f"{people[k]}\t{number(people[k], 2)}\t{people[k + 1]}\t{number(people[k + 1], 2)}" for k in range(3)]
    path.write_text("\n".join(lines) + "\n")


def test_eval_verify_and_search(tmp_path: Path) -> None:
    root = need(LFW_MINI)
    write_pairs(root, tmp_path / "pairs.txt")
    res = runner.invoke(
        app,
        [
            "eval",
            "verify",
            "-m",
            "test-tiny-random",
            "-d",
            str(root),
            "--pairs",
            str(tmp_path / "pairs.txt"),
            "-o",
            str(tmp_path / "v"),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "v" / "results.json").read_text())
    assert doc["n_pairs"] == 12 and len(doc["fold_accuracies"]) == 2
    for key in ("accuracy", "accuracy_std", "auc", "eer", "tar_at_far"):
        assert key in doc
    assert (tmp_path / "v" / "roc.png").stat().st_size > 1000
    assert doc["encoder"]["flip"] is True  # verification adds the mirrored crops by default
    res = runner.invoke(
        app,
        [
            "eval",
            "verify",
            "-m",
            "test-tiny-random",
            "-d",
            str(root),
            "--pairs",
            str(tmp_path / "pairs.txt"),
            "--no-flip",
            "--face-select",
            "largest",
            "-o",
            str(tmp_path / "v2"),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    doc2 = json.loads((tmp_path / "v2" / "results.json").read_text())
    assert doc2["encoder"]["flip"] is False and doc2["embeddings"]["computed"] == doc["embeddings"]["computed"]
    res = runner.invoke(
        app,
        [
            "eval",
            "search",
            "-m",
            "test-tiny-random",
            "-d",
            str(root),
            "--gallery",
            "3",
            "--min-images",
            "10",
            "-o",
            str(tmp_path / "s"),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "s" / "results.json").read_text())
    assert (
        doc["n_identities"] == 9 and doc["n_gallery"] == 27 and doc["n_probes"] == 63 and doc["n_unknown_probes"] == 10
    )
    assert "dir_at_far" in doc and "map" in doc
    assert (doc["rank1"], doc["rank5"]) == brute_force_ranks(root, doc, n_gallery=3)
    assert doc["encoder"]["flip"] is False
    res = runner.invoke(
        app,
        [
            "eval",
            "search",
            "-m",
            "test-tiny-random",
            "-d",
            str(root),
            "--face-select",
            "middle",
            "-o",
            str(tmp_path / "s2"),
            "-q",
        ],
    )
    assert res.exit_code == 2 and "--face-select 'middle'" in res.output


def brute_force_ranks(root: Path, doc: dict, n_gallery: int) -> tuple[float, float]:
    """Rank-1 and rank-5 of the same split recomputed by sorting every probe's similarities to every gallery photo."""
    import numpy as np

    from clipface.data.dataset import FaceDataset
    from clipface.embed.pipeline import embed_images
    from clipface.eval.metrics.gallery import split_gallery

    ds = FaceDataset.from_folder(root, min_images=10)
    res = embed_images(clipface.create_encoder("test-tiny-random"), ds.images, progress=False)
    labels = [im.identity for im in res.images]
    split = split_gallery(labels, n_gallery=n_gallery, seed=0, n_unknown_identities=0.1)
    g, p = res.embeddings[split.gallery_idx], res.embeddings[split.probe_idx]
    ranks = []
    for row, want in zip(p @ g.T, split.probe_labels):
        best: dict[str, float] = {}
        for score, label in zip(row, split.gallery_labels):
            best[label] = max(best.get(label, -2.0), float(score))
        order = sorted(best, key=lambda lab: -best[lab])
        ranks.append(order.index(want) + 1)
    ranks_arr = np.array(ranks)
    assert len(ranks) == doc["n_probes"]
    return float(np.mean(ranks_arr <= 1)), float(np.mean(ranks_arr <= 5))


def test_verify_without_pairs_file(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["eval", "verify", "-m", "test-tiny-random", "-d", "bundled:lfw-mini", "-o", str(tmp_path), "-q"]
    )
    assert res.exit_code == 2 and "pairs file not found" in res.output
