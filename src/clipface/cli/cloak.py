"""``clipface cloak``: cloak a folder of photos against face recognition (option groups in, one job)."""

from __future__ import annotations

from .. import jobs
from .app import app, echo, guard
from .expand import REQUIRED, command
from .options import TUNING, CloakFolders, CloakOptions, EmbedOptions, prepare


@command(app, "cloak", drop=TUNING, defaults={"surrogate": REQUIRED})
def cloak_cmd(io: CloakFolders, cl: CloakOptions, emb: EmbedOptions) -> None:
    """Cloak images against face recognition (resumable: finished cloaks with the same settings are kept)."""

    def go() -> None:
        jobs.check_cloak_folders(io.src, io.out)  # before the output folder is made
        opts = prepare(cl.surrogate, emb, out=io.out)
        settings = cl.settings()
        run = jobs.cloak_folder(
            io.src, io.out, settings, cl.surrogate, opts, target_dir=io.target_dir, cloak_batch=cl.cloak_batch
        )
        s = run.summary()
        for skip in run.skipped[:20]:
            echo(f"  skipped {skip.path}: {skip.reason}")
        budgeted = s[s["budget_measure"] + "_max"] or 0
        echo(
            f"{s['n_cloaks']} cloaks ({s['computed']} made, {s['reused']} reused, {len(run.skipped)} skipped); "
            f"DSSIM on the {settings.region} at most {budgeted:.4f} (budget {s['budget']}), "
            f"on the whole photo at most {s['dssim_max'] or 0:.4f}; wrote {io.out / 'cloak_summary.json'}"
        )

    guard(go)
