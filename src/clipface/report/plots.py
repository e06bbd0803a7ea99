"""Figures drawn from saved results (``results.json`` entries), so a report can be re-rendered later.

matplotlib's Agg canvas is used directly (no pyplot, no global backend change); each function
returns a :class:`matplotlib.figure.Figure`, which :func:`save_png` writes or :func:`png_bytes`
encodes for a self-contained HTML page.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def new_figure(width: float = 6.4, height: float = 4.8) -> tuple[Figure, Any]:
    """A figure with one axes, on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def png_bytes(fig: Figure) -> bytes:
    """``fig`` encoded as PNG."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def roc_figure(results: Sequence[Mapping[str, Any]], title: str = "Face verification ROC") -> Figure:
    """One ROC curve per verification result (TAR against log-scale FAR), AUC in the legend.

    Each result carries ``model``, ``auc``, ``n_different``, ``tar_at_far`` and ``roc`` (``far``
    and ``tar`` lists, as :meth:`VerificationResult.to_dict` writes them). Points at FAR = 0
    cannot be shown on a log axis and are drawn at the left edge, one decade below the finest FAR
    step (``1 / n_different``).
    """
    if not results:
        raise ValueError("a ROC figure needs at least one verification result")
    finest = min(1.0 / max(int(r.get("n_different") or 1), 1) for r in results)
    left = 10 ** math.floor(math.log10(finest) - 1e-9)
    fig, ax = new_figure()
    for r in results:
        far = np.maximum(np.asarray(r["roc"]["far"], dtype=np.float64), left)
        ax.plot(far, r["roc"]["tar"], label=f"{r['model']} (AUC {r['auc']:.4f})", linewidth=1.5)
    for far in sorted({float(f) for r in results for f in r.get("tar_at_far", {})}):
        if far >= left:
            ax.axvline(far, color="0.7", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(left, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_roc(results: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "Face verification ROC") -> Path:
    """:func:`roc_figure` written to ``path`` as PNG; returns the path."""
    return save_png(roc_figure(results, title), path)
