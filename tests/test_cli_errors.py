"""The user-error boundary: every bad argument gives one line naming it, exit code 2 (usage) or 1 (run), no traceback,
and is caught before any embedding is computed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipface.cli import app

from .conftest import LFW_MINI

runner = CliRunner()
ZS = ["eval", "zeroshot", "-m", "test-tiny-random", "-d", str(LFW_MINI), "-q"]
SEARCH = ["eval", "search", "-m", "test-tiny-random", "-d", str(LFW_MINI), "-q"]


def invoke(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    cache = tmp_path / "cache"
    if "--out" not in args and "-o" not in args and args[0] in ("eval", "run"):
        args = [*args, "--out", str(tmp_path / "out")]
    if (
        (args[0] in ("eval", "run") or args[:2] in (["index", "build"], ["index", "add"]))
        and "--cache-dir" not in args
        and "--no-cache" not in args
        and not (env and "CLIPFACE_CACHE_DIR" in env)
    ):
        args = [*args, "--cache-dir", str(cache)]
    res = runner.invoke(app, args, env=env)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    output = res.output
    assert "Traceback" not in output
    return res.exit_code, [ln for ln in output.splitlines() if ln.startswith("error:")], output


def embeddings_computed(tmp_path: Path) -> int:
    db = tmp_path / "cache" / "embeddings.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0])


USAGE_CASES = [
    (ZS + ["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (ZS + ["--batch-size", "-5"], "--batch-size -5: must be at least 1"),
    (ZS + ["--workers", "-2"], "--workers -2: must be at least 1"),
    (ZS + ["--distractors", "-1"], "--distractors -1: must be at least 0"),
    (ZS + ["--distractors", "100000000"], "--distractors 100000000: must be at most"),
    (ZS + ["--prompts", "a photo of a person"], "--prompts 'a photo of a person'"),
    (ZS + ["--prompts", "{} {}"], "exactly one {}"),
    (ZS + ["--tau", "0"], "--tau 0: must be at least 1"),
    (ZS + ["--tau", "99"], "--tau 99: must be between 1 and the number of prompts (1)"),
    (ZS + ["--idia-k", "0"], "--idia-k 0: must be at least 1"),
    (ZS + ["--align", "foo"], "--align 'foo': choose one of none, dlib, mtcnn"),
    (ZS + ["--on-no-face", "bogus"], "--on-no-face 'bogus'"),
    (ZS + ["--backend", "tensorrt"], "--backend 'tensorrt'"),
    (ZS + ["--min-images", "0"], "--min-images 0"),
    (ZS + ["-m", "ViT-Q-99"], "unknown model 'ViT-Q-99'"),
    (SEARCH + ["--gallery", "0"], "--gallery 0: must be at least 1"),
    (SEARCH + ["--unknown", "1.5"], "--unknown 1.5: must be below 1"),
    (SEARCH + ["--unknown", "-0.1"], "--unknown -0.1: must be at least 0"),
]


@pytest.mark.parametrize("args,expected", USAGE_CASES, ids=[" ".join(a[len(ZS) - 1 :]) for a, _ in USAGE_CASES])
def test_bad_argument_is_one_line_exit_2_before_work(args: list[str], expected: str, tmp_path: Path) -> None:
    code, errors, output = invoke(args, tmp_path)
    assert code == 2, output
    assert len(errors) == 1 and expected in errors[0], output
    assert embeddings_computed(tmp_path) == 0
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("where", ["existing-file", "below-a-file", "unwritable"])
def test_bad_out_is_reported_before_any_embedding(where: str, tmp_path: Path) -> None:
    target = tmp_path / "a-file.txt"
    target.write_text("not a folder\n")
    out = {"existing-file": target, "below-a-file": target / "sub", "unwritable": Path("/proc/clipface-cannot-write")}[
        where
    ]
    code, errors, output = invoke(ZS + ["--out", str(out)], tmp_path)
    assert (
        code == 2 and len(errors) == 1 and errors[0].startswith(f"error: --out '{out}': cannot write results there")
    ), output
    assert embeddings_computed(tmp_path) == 0


def test_cache_dir_naming_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "cache-file"
    bad.write_text("x")
    code, errors, output = invoke(ZS + ["--out", str(tmp_path / "o")], tmp_path, env={"CLIPFACE_CACHE_DIR": str(bad)})
    assert code == 2 and len(errors) == 1 and "$CLIPFACE_CACHE_DIR" in errors[0] and "is a file" in errors[0], output
    code, errors, output = invoke(ZS + ["--cache-dir", str(bad)], tmp_path)
    assert code == 2 and len(errors) == 1 and "--cache-dir" in errors[0] and "is a file" in errors[0], output


def test_corrupt_cache_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "embeddings.sqlite").write_bytes(b"this is not a database" * 100)
    code, errors, output = invoke(ZS, tmp_path)
    assert code == 1 and len(errors) == 1 and "embeddings.sqlite: not a usable embedding cache" in errors[0], output


def test_pairs_without_same_person_pairs(tmp_path: Path) -> None:
    verify = ["eval", "verify", "-m", "test-tiny-random", "-d", str(LFW_MINI), "-q", "--pairs"]
    only_diff = tmp_path / "diff.txt"  # a same-person line is announced but a different-person line is there
    only_diff.write_text("1 1\nTony_Blair\t1\tColin_Powell\t1\nTony_Blair\t2\tColin_Powell\t2\n")
    code, errors, output = invoke([*verify, str(only_diff)], tmp_path)
    assert code == 1 and len(errors) == 1 and "expected a same-person pair" in errors[0], output
    gone = tmp_path / "gone.txt"  # well-formed, but the same-person pair names images that do not exist
    gone.write_text("1 1\nNobody_Here\t1\t2\nTony_Blair\t1\tColin_Powell\t1\n")
    code, errors, output = invoke([*verify, str(gone)], tmp_path)
    assert code == 1 and len(errors) == 1 and "no same-person pair with both images" in errors[0], output
    assert embeddings_computed(tmp_path) == 0


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    res = runner.invoke(
        app,
        [
            "index",
            "build",
            "-m",
            "test-tiny-random",
            "--images",
            str(LFW_MINI / "Tony_Blair"),
            "--index",
            str(root / "index"),
            "--no-cache",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    return root / "index"


@pytest.mark.parametrize("k", ["0", "-1"])
def test_query_k_must_be_positive(k: str, small_index: Path, tmp_path: Path) -> None:
    code, errors, output = invoke(
        ["index", "query", "--index", str(small_index), "--text", "a photo of Tony Blair.", "-k", k], tmp_path
    )
    assert code == 2 and len(errors) == 1 and f"-k {k}: must be at least 1" in errors[0], output


def test_index_naming_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "index.txt"
    a_file.write_text("x")
    for args in (
        ["index", "query", "--index", str(a_file), "--text", "x"],
        ["index", "add", "--index", str(a_file), "--images", str(LFW_MINI)],
        ["index", "build", "-m", "test-tiny-random", "--index", str(a_file), "--images", str(LFW_MINI)],
    ):
        code, errors, output = invoke(args, tmp_path)
        assert code == 2 and len(errors) == 1 and "is a file, not an index folder" in errors[0], output


def test_index_build_on_no_face_bogus_is_refused(tmp_path: Path) -> None:
    code, errors, output = invoke(
        [
            "index",
            "build",
            "-m",
            "test-tiny-random",
            "--images",
            str(LFW_MINI),
            "--index",
            str(tmp_path / "i"),
            "--on-no-face",
            "bogus",
        ],
        tmp_path,
    )
    assert code == 2 and len(errors) == 1 and "--on-no-face 'bogus'" in errors[0], output
    assert not (tmp_path / "i" / "manifest.json").exists()


@pytest.mark.parametrize("damage", ["vectors.f32", "meta.sqlite"])
def test_damaged_index_files_are_one_line(damage: str, small_index: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_index, copy)
    (copy / damage).write_bytes(b"\x00garbage" * 64)
    code, errors, output = invoke(["index", "query", "--index", str(copy), "--text", "x"], tmp_path)
    assert code == 1 and len(errors) == 1 and f"{damage}: not a readable" in errors[0], output


def test_bug_in_prepare_is_an_error_not_a_skip(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipface.data.dataset import FaceDataset
    from clipface.embed.cache import EmbeddingCache
    from clipface.embed.pipeline import embed_images

    ds = FaceDataset.from_folder(LFW_MINI)
    calls = {"n": 0}
    real = type(tiny).prepare

    def buggy(self, image):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 40:
            raise RuntimeError("a bug in prepare")
        return real(self, image)

    monkeypatch.setattr(type(tiny), "prepare", buggy)
    cache = EmbeddingCache(tmp_path / "c")
    with pytest.raises(RuntimeError, match="a bug in prepare"):
        embed_images(tiny, ds.images, cache, batch_size=10, workers=1, progress=False)
    assert len(cache) >= 10  # the batches finished before the bug are kept


def test_library_refuses_bad_batch_and_workers(tiny) -> None:
    from clipface.embed.options import RunOptions
    from clipface.embed.pipeline import embed_images
    from clipface.errors import UsageError

    for kwargs in ({"batch_size": -5}, {"batch_size": 0}, {"workers": -2}):
        with pytest.raises(UsageError):
            RunOptions(**kwargs)
        with pytest.raises(UsageError):
            embed_images(tiny, [], **kwargs)


def test_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipface",
            "eval",
            "zeroshot",
            "-m",
            "test-tiny-random",
            "--batch-size",
            "0",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == ["error: --batch-size 0: must be at least 1"]


def test_face_flags_are_checked_before_work(small_index: Path, tmp_path: Path) -> None:
    build = ["index", "build", "-m", "test-tiny-random", "--images", str(LFW_MINI), "--index", str(tmp_path / "i")]
    for args, expected in (
        ([*build, "--faces", "every"], "--faces 'every': choose one of central, all"),
        ([*build, "--faces", "all"], "--faces 'all': test-tiny-random is not a face recogniser"),
        ([*build, "--face-model", "test-tiny-random"], "--face-model 'test-tiny-random': not a face recogniser"),
        ([*build, "--face-model", "dlib-9000"], "unknown model 'dlib-9000'"),
    ):
        code, errors, output = invoke(args, tmp_path)
        assert code == 2 and len(errors) == 1 and expected in errors[0], output
        assert embeddings_computed(tmp_path) == 0 and not (tmp_path / "i" / "manifest.json").exists()
    missing = tmp_path / "nobody"
    code, errors, output = invoke(
        ["serve", "--index", str(small_index), "--no-auth", "--opt-out-faces", str(missing)], tmp_path
    )
    assert code == 2 and len(errors) == 1 and f"--opt-out-faces {str(missing)!r}: no such folder" in errors[0], output
    (tmp_path / "empty").mkdir()
    code, errors, output = invoke(
        ["serve", "--index", str(small_index), "--no-auth", "--opt-out-faces", str(tmp_path / "empty")], tmp_path
    )
    assert code == 2 and len(errors) == 1 and "--opt-out-faces" in errors[0] and "no sub-folder" in errors[0], output
    bad = ["serve", "--index", str(small_index), "--no-auth", "--opt-out-faces-threshold", "7"]
    code, errors, output = invoke(bad, tmp_path)
    assert code == 2 and len(errors) == 1 and "--opt-out-faces-threshold 7.0: a cosine" in errors[0], output
    (tmp_path / "empty" / "Someone").mkdir()  # an index of random CLIP vectors without face vectors: refused, named
    code, errors, output = invoke(
        ["serve", "--index", str(small_index), "--no-auth", "--opt-out-faces", str(tmp_path / "empty")], tmp_path
    )
    assert (
        code == 2 and len(errors) == 1 and "keeps no face vectors" in errors[0] and "--face-model dlib" in errors[0]
    ), output


@pytest.mark.parametrize("command", [ZS, ["run", "-d", str(LFW_MINI), "--cloak", "none", "-q"]])
def test_a_non_member_matching_nobody_is_refused_by_name_before_work(command: list[str], tmp_path: Path) -> None:
    """A typo would turn a non-member into a member: the name is refused (exit 2) before any embedding."""
    names = tmp_path / "outside.txt"
    names.write_text("Colin Powell\nColin Powel\n", encoding="utf-8")
    code, errors, output = invoke([*command, "--non-members", str(names), "--out", str(tmp_path / "out")], tmp_path)
    assert code == 2 and len(errors) == 1, output
    assert errors[0].startswith("error: --non-members 'Colin Powel': matches no person of the dataset"), errors
    assert embeddings_computed(tmp_path) == 0
