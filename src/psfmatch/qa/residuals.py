"""QA figures of the residuals: the D/σ histogram and the worst candidates' stamps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from psfmatch.qa._common import QaPlot, show_image, zscale_limits

__all__ = ['residual_histogram_plot', 'worst_stamps_plot']


def residual_histogram_plot(z: np.ndarray, *, clipped: tuple[float, float] | None = None,
                            bound: float = 6.0) -> QaPlot:
    """Histogram of ``D/σ`` over unmasked pixels against N(0, 1), with its mean and std.

    ``z`` are the unmasked finite values. The histogram is a density over
    ``[-bound, bound]``; the printed statistics use every value (and ``clipped``, the
    3σ-clipped mean and std of the metrics, if given).

    ``data``: ``n``, ``mean``, ``std``, ``counts``, ``edges``, ``outside`` (values beyond
    ``±bound``).
    """
    z = np.asarray(z, dtype=np.float64)
    z = z[np.isfinite(z)]
    mean = float(z.mean()) if z.size else float("nan")
    std = float(z.std()) if z.size else float("nan")
    edges = np.linspace(-bound, bound, 121)
    counts, _ = np.histogram(z, bins=edges)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    width = edges[1] - edges[0]
    density = counts / max(z.size, 1) / width
    ax.stairs(density, edges, color="tab:blue", label="difference / √variance")
    grid = np.linspace(-bound, bound, 400)
    ax.plot(grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), color="k", ls="--",
            label="N(0, 1)")
    ax.set_yscale("log")
    ax.set_ylim(max(0.5 / max(z.size, 1) / width, 1e-7), 1.0)
    ax.set_xlabel("difference / √variance")
    ax.set_ylabel("density")
    outside = int(np.count_nonzero(np.abs(z) > bound))
    text = f"{z.size} unmasked pixels\nmean {mean:.4f}\nstd {std:.4f}\n|z| > {bound:g}: {outside}"
    if clipped is not None:
        text += f"\nclipped mean {clipped[0]:.4f}\nclipped std {clipped[1]:.4f}"
    ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize=9,
            family="monospace", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"})
    ax.legend(loc="upper right")
    ax.set_title("difference-image pixels against N(0, 1)")
    return QaPlot(fig, {"n": int(z.size), "mean": mean, "std": std, "counts": counts,
                        "edges": edges, "outside": outside})


def worst_stamps_plot(
    *,
    ids: np.ndarray,
    scores: np.ndarray,
    score_name: str,
    models: Sequence[np.ndarray],
    sciences: Sequence[np.ndarray],
    residuals: Sequence[np.ndarray],
    labels: Sequence[str] = (),
) -> QaPlot:
    """Stamps of the worst candidates: ``K ⋆ T + bg``, science, and ``(S − model)/σ``.

    One row per candidate (already chosen and ordered by the caller); the model and
    science share a zscale/asinh stretch, the residual is shown on ``[-5, 5]`` σ.

    ``data``: ``ids``, ``scores``, ``score_name``.
    """
    n = len(ids)
    fig = Figure(figsize=(9, 2.6 * max(n, 1) + 0.6), layout="constrained")
    if n == 0:
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no fitted candidate", ha="center", va="center")
        return QaPlot(fig, {"ids": np.zeros(0, dtype=np.int64), "scores": np.zeros(0),
                            "score_name": score_name})
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        low, high = zscale_limits(sciences[row])
        for col, (image, name) in enumerate(((models[row], "template ⊗ kernel + bg"),
                                             (sciences[row], "science"))):
            show_image(axes[row, col], image, low, high)
            axes[row, col].set_title(name, fontsize=8)
        axes[row, 2].imshow(residuals[row], origin="lower", cmap="RdBu_r", vmin=-5, vmax=5,
                            interpolation="nearest")
        axes[row, 2].set_title("(science − model) / σ", fontsize=8)
        extra = f" {labels[row]}" if row < len(labels) and labels[row] else ""
        axes[row, 0].set_ylabel(f"id {int(ids[row])}\n{score_name} {scores[row]:.3g}{extra}",
                                fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"worst {n} candidates by {score_name}")
    return QaPlot(fig, {"ids": np.asarray(ids, dtype=np.int64),
                        "scores": np.asarray(scores, dtype=np.float64), "score_name": score_name})


