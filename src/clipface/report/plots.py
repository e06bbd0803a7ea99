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


def accuracy_params_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Zero-shot top-1 against parameter count (log axis), one series per pretraining source.

    The paper's "bigger is not always better" figure.

    Each row: ``model``, ``params``, ``pretraining``, ``top1`` (and optionally ``top5``, drawn dashed).
    """
    fig, ax = new_figure(6.8, 4.4)
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_source.setdefault(str(r["pretraining"]), []).append(r)
    for source, items in sorted(by_source.items()):
        items = sorted(items, key=lambda r: r["params"])
        x = [r["params"] / 1e6 for r in items]
        line = ax.plot(x, [r["top1"] for r in items], marker="o", label=f"{source}: top-1")[0]
        if all(r.get("top5") is not None for r in items):
            ax.plot(
                x,
                [r["top5"] for r in items],
                marker="^",
                linestyle="--",
                color=line.get_color(),
                label=f"{source}: top-5",
            )
        for r, xi in zip(items, x):
            ax.annotate(
                str(r["model"]).split(":")[0], (xi, r["top1"]), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("zero-shot accuracy")
    ax.set_title("Zero-shot name identification against model size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def idia_figure(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Identity inference TPR (solid) and FPR (dashed, where non-members were given) against images per person."""
    fig, ax = new_figure(6.4, 4.2)
    for model, curve in curves.items():
        ks = [c["k"] for c in curve if c.get("tpr") is not None]
        if not ks:
            continue
        tpr = [c["tpr"] for c in curve if c.get("tpr") is not None]
        err = [c.get("tpr_std") or 0.0 for c in curve if c.get("tpr") is not None]
        line = ax.errorbar(ks, tpr, yerr=err, marker="o", capsize=3, label=f"{model}: TPR")[0]
        fp = [(c["k"], c["fpr"]) for c in curve if c.get("fpr") is not None]
        if fp:
            ax.plot(
                [k for k, _ in fp],
                [v for _, v in fp],
                linestyle="--",
                marker="x",
                color=line.get_color(),
                label=f"{model}: FPR",
            )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("images per person (k)")
    ax.set_ylabel("rate")
    ax.set_title("Identity inference (21 prompts, tau = 1)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def grouped_bars_figure(groups: Mapping[str, Mapping[str, float | None]], ylabel: str, title: str) -> Figure:
    """One group of bars per model, one bar per condition (clean, fawkes, lowkey, ...)."""
    fig, ax = new_figure(max(6.4, 1.3 * len(groups) + 2), 4.2)
    conditions: list[str] = []
    for values in groups.values():
        conditions += [c for c in values if c not in conditions]
    width = 0.8 / max(1, len(conditions))
    for j, cond in enumerate(conditions):
        xs = [i + j * width for i in range(len(groups))]
        ys = [groups[m].get(cond) for m in groups]
        bars = ax.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], width, label=cond)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)  # a bar of height 0 still reads "0.00"
    ax.set_xticks([i + width * (len(conditions) - 1) / 2 for i in range(len(groups))])
    ax.set_xticklabels([m.split(":")[0] if len(m) > 18 else m for m in groups], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def heatmap_figure(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Sequence[Sequence[float | None]],
    title: str,
    labels: Sequence[Sequence[str]] | None = None,
) -> Figure:
    """A labelled heat map (rows x columns) of values in [0, 1], each cell printed (its value, or its text in
    ``labels``); ``None`` cells are grey."""
    tall = labels is not None
    fig, ax = new_figure(
        max(5.0, (2.0 if tall else 1.2) * len(columns) + 3.0), max(2.6, (1.0 if tall else 0.55) * len(rows) + 1.6)
    )
    data = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    image = ax.imshow(np.ma.masked_invalid(data), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(columns)):
            v = data[i, j]
            ax.text(
                j,
                i,
                labels[i][j] if labels is not None else ("—" if np.isnan(v) else f"{v:.2f}"),
                ha="center",
                va="center",
                fontsize=7 if tall else 10,
                color="white" if v < 0.6 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    return fig
