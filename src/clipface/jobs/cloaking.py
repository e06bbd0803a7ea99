"""Cloaking jobs: cloak a folder, measure protection, measure index poisoning."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..data.dataset import FaceDataset
from ..embed.options import RunOptions
from ..errors import UsageError, check_choice, check_float, check_int
from ..models.registry import check_models
from ..report.write import write_results
from .tasks import Echo, check_out

__all__ = ["check_cloak_folders", "cloak_folder", "cloak_settings", "parse_ks", "poisoning", "protection"]


def cloak_settings(
    method: str = "fawkes",
    mode: str = "mid",
    *,
    no_budget: bool = False,
    region: str = "face",
    seed: int = 0,
    steps: int | None = None,
    jitter: int | None = None,
    eot: str | Sequence[str] | None = None,
    published: bool = False,
) -> Any:
    """A checked :class:`~clipface.cloak.settings.CloakSettings` from the command line's choices.

    The robust setting (:data:`~clipface.cloak.settings.ROBUST`) is the default; ``published``
    starts from the methods' published one instead; ``jitter`` and ``eot`` override either.
    """
    from ..cloak import fawkes, lowkey
    from ..cloak.settings import METHODS, MODES, PUBLISHED, ROBUST, CloakSettings

    check_choice("method", method, METHODS)
    check_choice("mode", mode, tuple(MODES))
    check_int("steps", steps, 1)
    preset = PUBLISHED if published else ROBUST
    names = (
        preset["eot"]
        if eot is None
        else ([e.strip() for e in eot.split(",") if e.strip()] if isinstance(eot, str) else list(eot))
    )
    params: Any = None
    if steps is not None:
        params = lowkey.LowKeyParams(steps=steps) if method == "lowkey" else fawkes.fawkes_params(mode, max_step=steps)
    return CloakSettings(
        method=method,
        mode=mode,
        enforce_budget=not no_budget,
        region=region,
        seed=seed,
        params=params,
        jitter=preset["jitter"] if jitter is None else jitter,
        eot=tuple(names),
    )


def check_cloak_folders(src: str | Path, out: str | Path) -> None:
    """Refuse an output folder that is the input or inside it (the cloaks would be read back as photos)."""
    source, dest = Path(src).resolve(), Path(out).resolve()
    if dest == source or source in dest.parents:
        raise UsageError("out", str(out), f"is the input folder {src} or inside it: write the cloaks elsewhere")


def cloak_folder(
    src: str | Path,
    out: str | Path,
    settings: Any,
    surrogates: Sequence[str],
    opts: RunOptions | None = None,
    *,
    target_dir: str | Path | None = None,
    cloak_batch: int = 4,
) -> Any:
    """Cloak a folder (identity sub-folders, or one person's photos) into ``out``; returns the
    :class:`~clipface.cloak.run.CloakRun`."""
    from ..cloak import run

    check_models(list(surrogates))
    if not surrogates:
        raise UsageError("surrogate", None, "cloaking needs at least one surrogate model")
    check_int("cloak_batch", cloak_batch, 1, allow_none=False)
    check_cloak_folders(src, out)
    check_out(out)
    opts = opts if opts is not None else RunOptions()
    return run.cloak_folder(
        Path(src), Path(out), settings, list(surrogates), opts, Path(target_dir) if target_dir else None, cloak_batch
    )


def protection(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    settings: Any,
    surrogates: Sequence[str] = (),
    *,
    out: str | Path,
    each_surrogate: bool = False,
    users: Sequence[str] | None = None,
    test_frac: float = 0.3,
    cloak_dir: str | Path | None = None,
    cloaked: str | Path | None = None,
    cloak_batch: int = 4,
    repost_jpeg: int | None = None,
    on_error: Echo | None = None,
) -> dict[str, Any]:
    """FaceCure protection of cloaked users against every model; writes ``out/results.json`` and ``results.md``.

    ``repost_jpeg``: the targets see each cloak re-encoded as a JPEG of this quality (1-100).
    """
    from ..cloak.io import originals_only, read_cloaked
    from ..eval.protection import evaluate_protection

    check_models([*models, *surrogates])
    if cloaked is None and not surrogates:
        raise UsageError(
            "surrogate", None, "give --surrogate (cloaks made here) or --cloaked DIR (cloaks made elsewhere)"
        )
    check_float("test_frac", test_frac, 0.0, 1.0, low_open=True, high_open=True)
    check_int("cloak_batch", cloak_batch, 1, allow_none=False)
    check_int("repost_jpeg", repost_jpeg, 1, 100)
    out = check_out(out)
    dataset = originals_only(dataset)
    external = read_cloaked(Path(cloaked), dataset.root, settings.method) if cloaked is not None else None
    sets = [[s] for s in surrogates] if each_surrogate else [list(surrogates)]
    doc = evaluate_protection(
        list(models),
        dataset,
        opts,
        settings,
        sets,
        Path(cloak_dir) if cloak_dir else out / "cloaks",
        users=users,
        test_frac=test_frac,
        batch_size=cloak_batch,
        external=external,
        on_error=on_error,
        repost_quality=repost_jpeg,
    )
    write_results(doc, out)
    return doc


def parse_ks(text: str) -> list[int]:
    """``"0,1,2,4"`` as a list of whole numbers >= 0, else :class:`~clipface.errors.UsageError`."""
    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError("poison_k", text, "expected comma-separated whole numbers such as 0,1,2,4") from None
    if not ks or min(ks) < 0:
        raise UsageError("poison_k", text, "expected comma-separated whole numbers >= 0")
    return ks


def poisoning(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    *,
    out: str | Path,
    poison_k: str | Sequence[int] = "0,1,2,4",
    kinds: Sequence[str] = ("mislabel",),
    n_gallery: int = 3,
    settings: Any = None,
    surrogates: Sequence[str] = (),
    cloak_dir: str | Path | None = None,
    cloak_batch: int = 4,
    on_error: Echo | None = None,
) -> dict[str, Any]:
    """Rank-1 against k poisons per person (mislabelled photos or cloaks); writes ``out/results.json`` and
    ``results.md``."""
    from ..eval.poisoning import evaluate_poisoning

    check_models([*models, *surrogates])
    ks = (
        parse_ks(poison_k)
        if isinstance(poison_k, str)
        else [check_int("poison_k", k, 0, allow_none=False) for k in poison_k]
    )
    for kind in kinds:
        check_choice("kind", kind, ("mislabel", "cloak"))
    if "cloak" in kinds and not surrogates:
        raise UsageError("surrogate", None, "poisons of kind cloak need --surrogate")
    check_int("gallery", n_gallery, 1, allow_none=False)
    check_int("cloak_batch", cloak_batch, 1, allow_none=False)
    out = check_out(out)
    doc = evaluate_poisoning(
        list(models),
        dataset,
        opts,
        ks,
        list(kinds),
        n_gallery,
        settings,
        list(surrogates),
        Path(cloak_dir) if cloak_dir else out / "cloaks",
        cloak_batch,
        on_error=on_error,
    )
    write_results(doc, out)
    return doc
