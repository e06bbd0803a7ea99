"""Command line of cloaking: ``clipface cloak``, ``clipface eval protection``, ``clipface eval poisoning``.

A thin layer over :mod:`clipface.cloak` and :mod:`clipface.protection`; ``register`` adds the
commands to the ``clipface`` app (it is called at the end of :mod:`clipface.cli`, whose option
definitions and helpers it reuses).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer

METHOD_HELP = "fawkes (targeted, Shan et al. 2020) or lowkey (untargeted, Cherepanova et al. 2021)."
MODE_HELP = "DSSIM budget: low 0.004, mid 0.012, high 0.017 (Fawkes v1.0); also Fawkes' steps and learning rate."


def _settings(method: str, mode: str, no_budget: bool, region: str, seed: int, steps: Optional[int], jitter: int):  # type: ignore[no-untyped-def]
    from .cloak import CloakSettings, fawkes, lowkey
    from .errors import ClipfaceError

    params: fawkes.FawkesParams | lowkey.LowKeyParams | None = None
    if steps is not None:
        if steps < 1:
            raise ClipfaceError(f"--steps {steps}: must be at least 1")
        if method == "lowkey":
            params = lowkey.LowKeyParams(steps=steps)
        elif mode in fawkes.MODE_PARAMS:
            params = fawkes.fawkes_params(mode, max_step=steps)
    return CloakSettings(method=method, mode=mode, enforce_budget=not no_budget, region=region, seed=seed, params=params, jitter=jitter)


def _ks(text: str) -> list[int]:
    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected comma-separated integers such as 0,1,2,4") from None
    if not ks or min(ks) < 0:
        raise typer.BadParameter(f"{text!r}: expected comma-separated integers >= 0")
    return ks


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add the cloaking commands to ``app`` and ``eval_app``."""
    from . import cli as c

    method_opt = typer.Option("fawkes", "--method", help=METHOD_HELP)
    mode_opt = typer.Option("low", "--mode", help=MODE_HELP)
    surrogate_opt = typer.Option(..., "--surrogate", "-s", help="Differentiable surrogate model (repeat for an ensemble).")
    region_opt = typer.Option("image", "--region", help="Where DSSIM is budgeted: image (whole picture) or face (the surrogates' crops).")
    no_budget_opt = typer.Option(False, "--no-budget", help="Keep the optimised cloak as it is, without scaling it into the budget.")
    batch_opt = typer.Option(4, "--batch-size", help="Images cloaked together.")
    threads_opt = typer.Option(None, "--threads", help="torch CPU threads (default: the physical cores; 1 avoids spinning threads on a busy machine).")
    steps_opt = typer.Option(None, "--steps", help="Optimisation steps instead of the method's (Fawkes max_step of the mode, LowKey 50).")
    jitter_opt = typer.Option(0, "--jitter", help="Move each edge of the face box by up to this many pixels at every step, so the cloak survives the face being detected again (0: as published).")
    cloak_dir_opt = typer.Option(None, "--cloak-dir", help="Folder of cloaks, reused across runs (default OUT/cloaks).")

    @app.command("cloak")
    def cloak_cmd(
        src: Path = typer.Option(..., "--in", help="Folder of identity sub-folders, or a flat folder of one person's images."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: PNG cloaks with a JSON record each, cloak_summary.json."),
        method: str = method_opt,
        mode: str = mode_opt,
        surrogate: List[str] = surrogate_opt,
        target_dir: Optional[Path] = typer.Option(None, "--target-dir", help="Fawkes: identity sub-folders to pick targets from (default: the other people of --in)."),
        region: str = region_opt,
        no_budget: bool = no_budget_opt,
        steps: Optional[int] = steps_opt,
        jitter: int = jitter_opt,
        seed: int = c.SeedOpt,
        batch_size: int = batch_opt,
        threads: Optional[int] = threads_opt,
        workers: Optional[int] = c.WorkersOpt,
        cache_dir: Optional[Path] = c.CacheOpt,
        no_cache: bool = c.NoCacheOpt,
        device: str = c.DeviceOpt,
        weights: Optional[List[str]] = c.WeightsOpt,
        align: Optional[str] = c.AlignOpt,
        on_no_face: str = c.NoFaceOpt,
        quiet: bool = c.QuietOpt,
    ) -> None:
        """Cloak images against face recognition (resumable: finished cloaks with the same settings are kept)."""
        from .cloak import cloak_folder

        def go() -> None:
            opts = replace(c._options(surrogate, cache_dir, no_cache, 32, workers, device, weights, align, on_no_face, quiet), threads=threads)
            run = cloak_folder(src, out, _settings(method, mode, no_budget, region, seed, steps, jitter), surrogate, opts, target_dir, batch_size)
            s = run.summary()
            for skip in run.skipped[:20]:
                typer.echo(f"  skipped {skip.path}: {skip.reason}", err=True)
            typer.echo(
                f"{s['n_cloaks']} cloaks ({s['computed']} made, {s['reused']} reused, {len(run.skipped)} skipped); "
                f"DSSIM max {s['dssim_max'] or 0:.4f} (budget {s['budget']}); wrote {out / 'cloak_summary.json'}",
                err=True,
            )

        c._guard(go)

    @eval_app.command("protection")
    def eval_protection(
        model: List[str] = c.ModelOpt,
        surrogate: List[str] = typer.Option([], "--surrogate", "-s", help="Surrogate model (repeat for an ensemble)."),
        each_surrogate: bool = typer.Option(False, "--each-surrogate", help="One cloak set per surrogate instead of an ensemble (the surrogate x target matrix)."),
        method: str = method_opt,
        mode: str = mode_opt,
        dataset: str = c.DatasetOpt,
        out: Path = c.OutOpt,
        user: Optional[List[str]] = typer.Option(None, "--user", help="Protected person (identity folder; repeatable; default everyone)."),
        test_frac: float = typer.Option(0.3, "--test-frac", help="Share of each person's photos used as clean probes (FaceCure: 0.3)."),
        cloak_dir: Optional[Path] = cloak_dir_opt,
        cloaked: Optional[Path] = typer.Option(None, "--cloaked", help="Evaluate cloaks made elsewhere: NAME_cloaked.png (--method fawkes) or NAME_attacked.png (--method lowkey) beside NAME.jpg, or a folder mirroring --dataset."),
        region: str = region_opt,
        no_budget: bool = no_budget_opt,
        steps: Optional[int] = steps_opt,
        jitter: int = jitter_opt,
        min_images: int = c.MinImagesOpt,
        max_identities: Optional[int] = c.MaxIdOpt,
        max_per_identity: Optional[int] = c.MaxPerOpt,
        seed: int = c.SeedOpt,
        batch_size: int = batch_opt,
        threads: Optional[int] = threads_opt,
        workers: Optional[int] = c.WorkersOpt,
        cache_dir: Optional[Path] = c.CacheOpt,
        no_cache: bool = c.NoCacheOpt,
        device: str = c.DeviceOpt,
        weights: Optional[List[str]] = c.WeightsOpt,
        align: Optional[str] = c.AlignOpt,
        on_no_face: str = c.NoFaceOpt,
        quiet: bool = c.QuietOpt,
    ) -> None:
        """Cloak each person's gallery photos (or reuse cloaks) and measure protection against every --model."""
        from .cloak.io import originals_only, read_cloaked
        from .protection import evaluate_protection, protection_markdown

        def go() -> None:
            if cloaked is None and not surrogate:
                c._fail("give --surrogate (cloaks made here) or --cloaked DIR (cloaks made elsewhere)")
            opts = replace(c._options([*model, *surrogate], cache_dir, no_cache, 32, workers, device, weights, align, on_no_face, quiet), threads=threads)
            ds = originals_only(c._dataset(dataset, min_images, max_identities, max_per_identity, seed))
            external = read_cloaked(cloaked, ds.root, method) if cloaked is not None else None
            sets = [[s] for s in surrogate] if each_surrogate else [list(surrogate)]
            doc = evaluate_protection(
                model, ds, opts, _settings(method, mode, no_budget, region, seed, steps, jitter), sets, cloak_dir or out / "cloaks",
                users=user, test_frac=test_frac, batch_size=batch_size, external=external, on_error=c._error_line,
            )
            for r in doc["results"]:
                typer.echo(
                    f"{' + '.join(r['surrogates'])} -> {r['model']}: protection rate {r['protection_rate']:.3f} "
                    f"(clean baseline {r['protection_rate_clean']:.3f})",
                    err=True,
                )
            c._finish(doc, out, protection_markdown(doc))

        c._guard(go)

    @eval_app.command("poisoning")
    def eval_poisoning(
        model: List[str] = c.ModelOpt,
        poison_k: str = typer.Option("0,1,2,4", "--poison-k", help="Poisons per person, comma-separated."),
        kind: List[str] = typer.Option(["mislabel"], "--kind", help="mislabel (other people's photos under the name) and/or cloak (cloaks of the person's photos)."),
        gallery: int = typer.Option(3, "--gallery", help="Clean photos per person in the gallery."),
        surrogate: List[str] = typer.Option([], "--surrogate", "-s", help="Surrogate model for --kind cloak (repeat for an ensemble)."),
        method: str = method_opt,
        mode: str = mode_opt,
        dataset: str = c.DatasetOpt,
        out: Path = c.OutOpt,
        cloak_dir: Optional[Path] = cloak_dir_opt,
        region: str = region_opt,
        no_budget: bool = no_budget_opt,
        steps: Optional[int] = steps_opt,
        jitter: int = jitter_opt,
        min_images: int = c.MinImagesOpt,
        max_identities: Optional[int] = c.MaxIdOpt,
        max_per_identity: Optional[int] = c.MaxPerOpt,
        seed: int = c.SeedOpt,
        batch_size: int = batch_opt,
        threads: Optional[int] = threads_opt,
        workers: Optional[int] = c.WorkersOpt,
        cache_dir: Optional[Path] = c.CacheOpt,
        no_cache: bool = c.NoCacheOpt,
        device: str = c.DeviceOpt,
        weights: Optional[List[str]] = c.WeightsOpt,
        align: Optional[str] = c.AlignOpt,
        on_no_face: str = c.NoFaceOpt,
        quiet: bool = c.QuietOpt,
    ) -> None:
        """Index poisoning: rank-1 identification as k mislabelled or cloaked photos per person join the gallery."""
        from .protection import evaluate_poisoning, poisoning_markdown

        def go() -> None:
            ks = _ks(poison_k)
            bad = [k for k in kind if k not in ("mislabel", "cloak")]
            if bad:
                c._fail(f"--kind {bad[0]}: choose mislabel or cloak")
            opts = replace(c._options([*model, *surrogate], cache_dir, no_cache, 32, workers, device, weights, align, on_no_face, quiet), threads=threads)
            ds = c._dataset(dataset, min_images, max_identities, max_per_identity, seed)
            doc = evaluate_poisoning(
                model, ds, opts, ks, kind, gallery, _settings(method, mode, no_budget, region, seed, steps, jitter), surrogate,
                cloak_dir or out / "cloaks", batch_size, on_error=c._error_line,
            )
            for r in doc["results"]:
                curve = ", ".join(f"{p['kind']} k={p['k']}: {p['rank1']:.3f}" for p in r["curve"])
                typer.echo(f"{r['model']}: rank-1 {curve}", err=True)
            c._finish(doc, out, poisoning_markdown(doc))

        c._guard(go)
