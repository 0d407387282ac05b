"""QA figures of the images: science, template and difference; the candidates."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from psfmatch.diagnostics import reason_key
from psfmatch.qa._common import (
    REJECTED_COLOUR,
    REJECTION_MARKERS,
    UNUSED_COLOUR,
    USED_COLOUR,
    QaPlot,
    show_image,
    zscale_limits,
)

__all__ = ['candidates_plot', 'images_plot']


# ---------------------------------------------------------------------- plots
def images_plot(
    science: np.ndarray,
    template: np.ndarray,
    difference: np.ndarray,
    *,
    xy0: tuple[int, int] = (0, 0),
    title: str = "",
    convolved: str | None = None,
    difference_name: str = "difference",
) -> QaPlot:
    """Science, warped template and difference side by side with the same stretch.

    ``convolved`` (``"template"`` or ``"science"``) marks the panel of the image the
    kernel convolved, and the figure title says it; ``difference_name`` titles the third
    panel (``"score"`` for the preconvolution variant).

    The stretch is the science image's zscale range ``w = high − low`` (asinh), applied
    to every panel as ``[m − (median_S − low), m + (high − median_S)]`` around that
    panel's own median ``m``: identical contrast, while a sky level that the
    difference removes does not push the difference off the display range.

    ``data``: ``limits`` (one ``(low, high)`` per panel), ``width`` (= ``w``).
    """
    low, high = zscale_limits(science)
    centre = float(np.nanmedian(science)) if np.isfinite(science).any() else 0.0
    below, above = centre - low, high - centre
    fig = Figure(figsize=(15, 5.4), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    limits = []
    names = ["science", "warped template", difference_name]
    if convolved is not None:
        names[0 if convolved == "science" else 1] += " (convolved)"
        fig.suptitle(f"convolved: {convolved}")
    for ax, image, name in zip(axes, (science, template, difference), names, strict=True):
        m = float(np.nanmedian(image)) if np.isfinite(image).any() else 0.0
        lims = (m - below, m + above)
        limits.append(lims)
        show_image(ax, image, *lims, origin_xy=xy0)
        ax.set_title(f"{title + ': ' if title and name.startswith('science') else ''}{name} "
                     f"[{lims[0]:.4g}, {lims[1]:.4g}]")
        ax.set_xlabel("x (pixel)")
    axes[0].set_ylabel("y (pixel)")
    return QaPlot(fig, {"limits": limits, "width": high - low})


def _cell_edges(start: int, stop: int, size: int) -> list[float]:
    """Cell boundaries along one axis (afw: the last cell extends to the region edge)."""
    n = max(1, math.ceil((stop - start + 1) / size))
    edges = [start - 0.5 + i * size for i in range(n)]
    return [*edges, stop + 0.5]


def _reason_key(stage: str, reason: str) -> str:
    """A short reason for the legend (numbers stripped, as in the metrics' summary)."""
    text = reason_key(reason, exact=stage == "select")
    return text if len(text) <= 40 else text[:37] + "..."


def candidates_plot(
    image: np.ndarray,
    *,
    x: np.ndarray,
    y: np.ndarray,
    status: np.ndarray,
    stage: np.ndarray,
    reason: np.ndarray,
    used: np.ndarray,
    region: Sequence[int],
    size_cell_x: int,
    size_cell_y: int,
    xy0: tuple[int, int] = (0, 0),
    title: str = "",
) -> QaPlot:
    """Kernel candidates over the science image, with the spatial cell grid.

    Candidates used in the final spatial fit are green circles; GOOD candidates not
    used (beyond ``nStarPerCell`` in their cell) cyan circles; rejected (BAD)
    candidates red, with one marker per rejection stage (:data:`REJECTION_MARKERS`)
    and the stage, count and most frequent reasons in the legend. The grid is the
    cell set (``sizeCellX × sizeCellY`` from the region minimum; the last row and
    column extend to the region maximum).

    ``data``: ``used``, ``unused`` (``(n, 2)`` positions), ``rejected`` (stage ->
    ``(n, 2)`` positions), ``reasons`` (stage -> Counter of short reasons),
    ``cell_edges_x``/``cell_edges_y``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    bad = np.asarray(status) == "BAD"
    used = np.asarray(used, dtype=bool) & ~bad
    unused = ~bad & ~used
    fig = Figure(figsize=(9.5, 8.5), layout="constrained")
    ax = fig.subplots()
    show_image(ax, image, *zscale_limits(image), origin_xy=xy0)
    edges_x = _cell_edges(region[0], region[2], size_cell_x)
    edges_y = _cell_edges(region[1], region[3], size_cell_y)
    for ex in edges_x:
        ax.plot([ex, ex], [edges_y[0], edges_y[-1]], color="gold", lw=0.6, alpha=0.7)
    for ey in edges_y:
        ax.plot([edges_x[0], edges_x[-1]], [ey, ey], color="gold", lw=0.6, alpha=0.7)
    data: dict[str, Any] = {
        "used": np.column_stack([x[used], y[used]]),
        "unused": np.column_stack([x[unused], y[unused]]),
        "rejected": {}, "reasons": {},
        "cell_edges_x": edges_x, "cell_edges_y": edges_y,
    }
    style = {"s": 90, "linewidths": 1.4}
    ax.scatter(x[used], y[used], marker="o", facecolors="none", edgecolors=USED_COLOUR,
               label=f"used in the spatial fit ({int(used.sum())})", **style)
    if unused.any():
        ax.scatter(x[unused], y[unused], marker="o", facecolors="none", edgecolors=UNUSED_COLOUR,
                   label=f"GOOD, not used ({int(unused.sum())})", **style)
    stages = np.asarray(stage).astype(str)
    for st in [*REJECTION_MARKERS, *sorted(set(stages[bad]) - set(REJECTION_MARKERS))]:
        rows = bad & (stages == st)
        if not rows.any():
            continue
        marker = REJECTION_MARKERS.get(st, "*")
        reasons = Counter(_reason_key(st, r) for r in np.asarray(reason)[rows])
        data["rejected"][st] = np.column_stack([x[rows], y[rows]])
        data["reasons"][st] = reasons
        common = "; ".join(f"{k or '?'} ×{v}" for k, v in reasons.most_common(2))
        colours = ({"color": REJECTED_COLOUR} if marker in ("x", "+")  # line-only markers
                   else {"facecolors": "none", "edgecolors": REJECTED_COLOUR})
        ax.scatter(x[rows], y[rows], marker=marker, **colours,
                   label=f"rejected: {st} ({int(rows.sum())}): {common}", **style)
    ax.set_xlim(edges_x[0] - 0.5, edges_x[-1] + 0.5)
    ax.set_ylim(edges_y[0] - 0.5, edges_y[-1] + 0.5)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), fontsize=8, ncols=1, framealpha=0.9)
    ax.set_title(title or "kernel candidates and spatial cells")
    return QaPlot(fig, data)


