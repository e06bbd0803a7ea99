"""LFW pair files (``pairs.txt``, ``pairsDevTrain.txt``): parsing and resolving against a dataset folder.

The format is that of the LFW "view 2" release (Huang et al., 2007): a header ``n_folds
n_per_class`` (``10 300``), then for each fold ``n_per_class`` same-person lines ``name i j``
and ``n_per_class`` different-person lines ``name1 i name2 j``. Metrics live in
:mod:`clipface.eval.metrics.verification`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import DatasetError

__all__ = ["Pair", "ResolvedPairs", "lfw_image_path", "parse_pairs", "resolve_pairs"]


@dataclass(frozen=True)
class Pair:
    """One LFW pair: two image paths relative to the dataset root, ``Name/Name_0001.jpg``.

    ``fold`` counts from 0 (``pairs.txt`` has folds 0-9; ``pairsDevTrain.txt`` only fold 0).
    """

    path_a: str
    path_b: str
    same: bool
    fold: int


class ResolvedPairs(NamedTuple):
    """Result of :func:`resolve_pairs`: absolute paths (one tuple per pair) and missing pairs."""

    paths: list[tuple[Path, Path]]
    missing: list[Pair]


def lfw_image_path(name: str, number: int) -> str:
    """Relative path of image ``number`` (1-based) of ``name``: ``Name/Name_0001.jpg``."""
    return f"{name}/{name}_{number:04d}.jpg"


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _image_number(field_: str, where: str, line: str) -> int:
    try:
        value = int(field_)
    except ValueError:
        raise DatasetError(f"{where}: image number {field_!r} is not an integer in line {_clip(line)!r}") from None
    if value < 1:
        raise DatasetError(f"{where}: image number {value} must be >= 1 in line {_clip(line)!r}")
    return value


def parse_pairs(pairs_file: Path) -> list[Pair]:
    """Parse an LFW pairs file into :class:`Pair` objects, in file order.

    Two layouts are accepted:

    * ``pairs.txt``: header ``n_folds n_per_class`` (``10 300``), then for each fold
      ``n_per_class`` same-person lines ``name i j`` followed by ``n_per_class``
      different-person lines ``name1 i name2 j``;
    * ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: header ``n_per_class`` only (one fold).

    Fields may be separated by tabs or spaces; blank lines are ignored. A malformed file
    raises :class:`~clipface.errors.DatasetError` with a one-line message naming the file
    and the line number.
    """
    pairs_file = Path(pairs_file)
    try:
        text = pairs_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{pairs_file}: pairs file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{pairs_file}: cannot read pairs file ({_clip(str(exc))})") from None

    lines = [(no, line.strip()) for no, line in enumerate(text.splitlines(), start=1)]
    lines = [(no, line) for no, line in lines if line]
    if not lines:
        raise DatasetError(f"{pairs_file}: pairs file is empty")

    header_no, header = lines[0]
    where = f"{pairs_file}:{header_no}"
    head = header.split()
    try:
        numbers = [int(x) for x in head]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        n_folds, n_per_class = 1, numbers[0]
    elif len(numbers) == 2:
        n_folds, n_per_class = numbers
    else:
        raise DatasetError(
            f"{where}: header must be 'n_folds n_per_class' (e.g. '10 300') or 'n_per_class', got {_clip(header)!r}"
        )
    if n_folds < 1 or n_per_class < 1:
        raise DatasetError(f"{where}: header numbers must be positive, got {_clip(header)!r}")

    expected = n_folds * 2 * n_per_class
    body = lines[1:]
    pairs: list[Pair] = []
    for k, (no, line) in enumerate(body):
        where = f"{pairs_file}:{no}"
        if k >= expected:
            raise DatasetError(
                f"{where}: extra line after the {expected} pairs announced by header {header!r}: {_clip(line)!r}"
            )
        fold, pos = divmod(k, 2 * n_per_class)
        same = pos < n_per_class
        fields = line.split()
        if same and len(fields) != 3:
            raise DatasetError(
                f"{where}: expected a same-person pair 'name i j' (fold {fold}, pair "
                f"{pos + 1} of {n_per_class}), got {len(fields)} fields: {_clip(line)!r}"
            )
        if not same and len(fields) != 4:
            raise DatasetError(
                f"{where}: expected a different-person pair 'name1 i name2 j' (fold "
                f"{fold}, pair {pos - n_per_class + 1} of {n_per_class}), got "
                f"{len(fields)} fields: {_clip(line)!r}"
            )
        name_a, i, name_b, j = (fields[0], fields[1], fields[0], fields[2]) if same else fields
        a = lfw_image_path(name_a, _image_number(i, where, line))
        pairs.append(Pair(a, lfw_image_path(name_b, _image_number(j, where, line)), same, fold))
    if len(pairs) < expected:
        raise DatasetError(
            f"{pairs_file}: header {header!r} announces {expected} pairs but the file has only {len(pairs)}"
        )
    return pairs


def resolve_pairs(root: Path, pairs: Sequence[Pair]) -> ResolvedPairs:
    """Absolute image paths of ``pairs`` under ``root``, and the pairs with a missing file.

    ``root`` is the folder holding one sub-folder per person (``root/Name/Name_0001.jpg``).
    ``paths`` is aligned with ``pairs`` (missing files are still listed there); ``missing``
    holds, in order, every pair for which at least one of its two files does not exist.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    root = root.resolve()
    exists: dict[str, bool] = {}

    def check(rel: str) -> bool:
        if rel not in exists:
            exists[rel] = (root / rel).is_file()
        return exists[rel]

    paths: list[tuple[Path, Path]] = []
    missing: list[Pair] = []
    for pair in pairs:
        paths.append((root / pair.path_a, root / pair.path_b))
        ok_a, ok_b = check(pair.path_a), check(pair.path_b)
        if not (ok_a and ok_b):
            missing.append(pair)
    return ResolvedPairs(paths, missing)
