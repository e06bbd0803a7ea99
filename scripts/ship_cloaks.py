"""Ship the bundled dataset's cloaks with clipface, so that ``clipface run`` reuses them instead of making them.

    clipface run --out runs/ship            # makes the cloaks with the default settings (or reuses them)
    python scripts/ship_cloaks.py runs/ship/cloaks

Each cloak folder (``METHOD-MODE-SURROGATES-HASH``) goes to ``src/clipface/assets/cloaks/`` in the shipped
form (:func:`clipface.cloak.io.ship_cloaks`). A run uses a shipped cloak only where the settings hash,
the target and the photo's bytes all match (:func:`clipface.cloak.run.cloak_images`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipface.cloak.io import ship_cloaks
from clipface.data.dataset import bundled_path

DEST = Path(__file__).resolve().parents[1] / "src" / "clipface" / "assets" / "cloaks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cloaks", type=Path, help="OUT/cloaks of a clipface run on the bundled dataset")
    args = parser.parse_args()
    for folder in sorted(p for p in args.cloaks.iterdir() if p.is_dir()):
        print(
            f"{folder.name}: {ship_cloaks(folder, bundled_path(), DEST / folder.name)} cloaks -> {DEST / folder.name}"
        )


if __name__ == "__main__":
    main()
