"""``clipface cloak``: cloak a folder of photos against face recognition (options in, one API call)."""

from __future__ import annotations

from .. import jobs
from .app import app, echo, guard
from .flags import (
    Align,
    BatchSize,
    CacheDir,
    CloakBatch,
    CloakIn,
    CloakOut,
    Device,
    Eot,
    Jitter,
    Method,
    Mode,
    NoBudget,
    NoCache,
    OnNoFace,
    Published,
    Quiet,
    Region,
    Seed,
    Steps,
    Surrogates,
    TargetDir,
    Threads,
    Weights,
    Workers,
)
from .options import CliOptions


@app.command("cloak")
def cloak_cmd(
    src: CloakIn,
    out: CloakOut,
    surrogate: Surrogates,
    method: Method = "fawkes",
    mode: Mode = "low",
    target_dir: TargetDir = None,
    region: Region = "face",
    no_budget: NoBudget = False,
    steps: Steps = None,
    jitter: Jitter = None,
    eot: Eot = None,
    published: Published = False,
    seed: Seed = 0,
    cloak_batch: CloakBatch = 4,
    batch_size: BatchSize = 32,
    threads: Threads = None,
    workers: Workers = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = "cpu",
    weights: Weights = None,
    align: Align = None,
    on_no_face: OnNoFace = "skip",
    quiet: Quiet = False,
) -> None:
    """Cloak images against face recognition (resumable: finished cloaks with the same settings are kept)."""
    o = CliOptions.of(locals())

    def go() -> None:
        opts = o.check().run_options()
        settings = o.cloak_settings()
        assert o.src is not None and o.out is not None
        run = jobs.cloak_folder(
            o.src, o.out, settings, o.surrogate, opts, target_dir=o.target_dir, cloak_batch=o.cloak_batch
        )
        s = run.summary()
        for skip in run.skipped[:20]:
            echo(f"  skipped {skip.path}: {skip.reason}")
        budgeted = s[s["budget_measure"] + "_max"] or 0
        echo(
            f"{s['n_cloaks']} cloaks ({s['computed']} made, {s['reused']} reused, {len(run.skipped)} skipped); "
            f"DSSIM on the {settings.region} at most {budgeted:.4f} (budget {s['budget']}), "
            f"on the whole photo at most {s['dssim_max'] or 0:.4f}; wrote {o.out / 'cloak_summary.json'}"
        )

    guard(go)
