"""A cloak set: one method, budget and surrogate ensemble applied to a dataset's photos, in a folder of its own
that any later run with the same settings reuses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ..data.dataset import FaceDataset, FaceImage
from ..embed.options import RunOptions
from ..files import write_json
from .io import shipped_cloaks
from .run import CloakRun, cloak_images, load_surrogates
from .settings import CloakSettings

__all__ = ["make_cloaks"]


def _slug(names: Sequence[str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "+".join(names))


def make_cloaks(
    images: Sequence[FaceImage],
    dataset: FaceDataset,
    surrogates: Sequence[str],
    settings: CloakSettings,
    opts: RunOptions,
    cloak_root: Path,
    batch_size: int,
) -> tuple[Path, CloakRun]:
    """Cloak ``images`` with one surrogate set into ``cloak_root/METHOD-MODE-SURROGATES-HASH``.

    Fawkes targets other identities of the dataset.

    ``HASH`` starts the settings' digest, so each setting has its own folder and is reused by any later run.
    """
    encoders = load_surrogates(surrogates, opts)
    folder = cloak_root / f"{settings.method}-{settings.mode}-{_slug(surrogates)}-{settings.digest(encoders)[:8]}"
    seed = shipped_cloaks(folder.name)  # the bundled dataset's cloaks ship with clipface, for a quick first run
    run = cloak_images(images, dataset.root, folder, settings, encoders, opts, dataset.by_identity(), batch_size, seed)
    write_json(folder / "cloak_summary.json", run.summary())
    return folder, run
