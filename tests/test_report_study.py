"""The study's report says what its figures mean: counts and intervals, white-box or transfer, what is missing."""

from __future__ import annotations

from typing import Any

import pytest

from clipface.report import study
from clipface.report.md_study import main_markdown


def doc(with_clip: bool = False) -> dict[str, Any]:
    def gallery(rate: float) -> dict[str, Any]:
        return {"rank1": 1 - rate, "protection_rate": rate, "n_probes": 80, "n_identities": 10}

    results = [
        {
            "model": "facenet-casia",
            "embeddings": {"computed": 1, "cached": 0},
            "gallery": {"clean": gallery(0.0), "fawkes": gallery(1.0)},
        },
        {
            "model": "dlib",
            "embeddings": {"computed": 1, "cached": 0},
            "gallery": {"clean": gallery(0.0), "fawkes": gallery(0.5375)},
        },
    ]
    if with_clip:
        results[0]["zeroshot"] = {"clean_cloaked_photos": {"top1": 0.5}, "fawkes": {"top1": 0.25}}
    return {
        "dataset": {"dataset": "bundled:lfw-mini", "n_images": 100, "n_identities": 10, "n_skipped": 0},
        "models_run": ["facenet-casia", "dlib"],
        "models_skipped": [{"model": "ViT-B-32:openai", "reason": "offline"}, {"model": "nonesuch", "reason": "?"}],
        "settings": {"cloaked_per_person": 2, "distractors": 100, "non_members": []},
        "cloaks": [
            {
                "name": "fawkes",
                "method": "fawkes",
                "n_cloaks": 20,
                "surrogates": ["facenet-casia"],
                "settings": {"mode": "mid", "setting": "robust", "jitter": 6, "eot": [], "region": "face"},
                "summary": {
                    "computed": 2,
                    "reused": 18,
                    "shipped": 15,
                    "budget": 0.012,
                    "dssim_max": 0.005,
                    "dssim_crop_max": 0.012,
                },
            }
        ],
        "results": results,
        "errors": [],
    }


def test_protection_cells_give_counts_wilson_intervals_and_white_box_or_transfer() -> None:
    rows, cols, cells = study.protection_cells(doc())
    assert rows == ["fawkes (facenet-casia)"] and cols == ["facenet-casia", "dlib"]
    white, transfer = cells[0]
    assert (white["protected"], white["n"], white["white_box"]) == (80, 80, True)
    assert (transfer["protected"], transfer["n"], transfer["white_box"]) == (43, 80, False)
    assert transfer["ci"][0] < 0.5375 < transfer["ci"][1]
    assert white["ci"][1] == pytest.approx(1.0) and white["ci"][0] < 1.0
    assert study.protection_label(transfer) == "0.537 (43/80, 95% CI 0.43-0.64), transfer"


def test_offline_report_names_the_download_command_and_drops_empty_zero_shot_columns() -> None:
    d = doc()
    note = study.missing_clip_note(d)
    assert note is not None and "`clipface download ViT-B-32:openai`" in note and "nonesuch" not in note
    headers, rows = study.cloak_table(d)
    assert not any("zero-shot" in h for h in headers) and len(rows[0]) == len(headers) == 3
    md = main_markdown(d)
    assert "clipface download ViT-B-32:openai" in md and "white-box" in md and "43/80" in md
    assert "13 reused" not in md and "3 reused from an earlier run" in md and "15 shipped with clipface" in md
    assert "DSSIM on the face at most 0.0120" in md
    clip = doc(with_clip=True)
    assert study.missing_clip_note(clip) is None
    headers, _ = study.cloak_table(clip)
    assert "zero-shot top-1, fawkes" in headers


def test_rank1_below_chance_is_explained_only_where_it_is() -> None:
    notes = study.below_chance(doc())
    assert len(notes) == 1 and notes[0].startswith("facenet-casia with fawkes cloaks enrolled: rank-1 0.000")
