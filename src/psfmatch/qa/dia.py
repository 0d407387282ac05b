"""QA figures of the DIA sources: detections over the difference, a cut-out gallery."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from psfmatch.qa._common import QaPlot, grid_shape, show_image, zscale_limits

__all__ = ["dia_cutouts_plot", "dia_detections_plot"]

#: Colour of each kind of DIA source.
POSITIVE_COLOUR = "tab:green"
NEGATIVE_COLOUR = "red"
DIPOLE_COLOUR = "gold"


def dia_detections_plot(
    difference: np.ndarray,
    *,
    x: np.ndarray,
    y: np.ndarray,
    is_negative: np.ndarray,
    is_dipole: np.ndarray,
    flags: np.ndarray,
    xy0: tuple[int, int] = (0, 0),
    title: str = "",
) -> QaPlot:
    """The DIA sources over the difference image (zscale, asinh).

    Positive sources are green circles, negative red, dipoles gold diamonds; a source
    with any flag set is drawn with a dashed outline. Positions are parent pixels
    (catalogue ``x``, ``y``).

    ``data``: ``positive``, ``negative``, ``dipole`` (``(n, 2)`` positions, each source
    in exactly one), ``flagged`` (count).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dipole = np.asarray(is_dipole, dtype=bool)
    negative = np.asarray(is_negative, dtype=bool) & ~dipole
    positive = ~negative & ~dipole
    flagged = np.asarray(flags, dtype=np.int64) != 0
    fig = Figure(figsize=(9.5, 8.5), layout="constrained")
    ax = fig.subplots()
    show_image(ax, difference, *zscale_limits(difference), origin_xy=xy0)
    data = {}
    for name, rows, colour, marker in (("positive", positive, POSITIVE_COLOUR, "o"),
                                       ("negative", negative, NEGATIVE_COLOUR, "o"),
                                       ("dipole", dipole, DIPOLE_COLOUR, "D")):
        data[name] = np.column_stack([x[rows], y[rows]])
        for dashed in (False, True):
            sel = rows & (flagged == dashed)
            if not sel.any():
                continue
            ax.scatter(x[sel], y[sel], marker=marker, s=110, facecolors="none",
                       edgecolors=colour, linewidths=1.4, linestyles="--" if dashed else "-",
                       label=f"{name}{', flagged' if dashed else ''} ({int(sel.sum())})")
    data["flagged"] = int(flagged.sum())
    h, w = np.shape(difference)
    ax.set_xlim(xy0[0] - 0.5, xy0[0] + w - 0.5)
    ax.set_ylim(xy0[1] - 0.5, xy0[1] + h - 0.5)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if x.size:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), fontsize=8, ncols=3,
                  framealpha=0.9)
    ax.set_title(f"{title + ': ' if title else ''}{x.size} DIA sources")
    return QaPlot(fig, data)


def dia_cutouts_plot(
    science: np.ndarray,
    template: np.ndarray,
    difference: np.ndarray,
    *,
    ids: np.ndarray,
    snr: np.ndarray,
    flags: np.ndarray,
    n: int,
    max_columns: int = 4,
    title: str = "",
) -> QaPlot:
    """Science / matched template / difference stamps of the ``n`` sources of largest |S/N|.

    ``science``, ``template``, ``difference`` are the ``(m, s, s)`` cut-out cubes in
    catalogue order. Each source is a triplet of panels: science and template share the
    science stamp's zscale range; the difference is shown on ``±`` the largest ``|D|``
    within 3 px of the stamp centre (the source's peak), asinh-stretched.
    Non-finite stamp pixels (outside the image) are blank.

    ``data``: ``ids`` (the sources shown, in order), ``snr`` (theirs).
    """
    snr = np.asarray(snr, dtype=np.float64)
    key = np.where(np.isfinite(snr), -np.abs(snr), np.inf)
    order = np.argsort(key, kind="stable")[:max(int(n), 0)]
    rows, cols = grid_shape(order.size, max_columns=max_columns)
    # a fixed grid (no constrained layout: it costs ~1 s for 48 panels)
    fig = Figure(figsize=(3.3 * cols + 0.5, 1.25 * rows + 0.6))
    axes = np.atleast_2d(fig.subplots(rows, 3 * cols, squeeze=False, gridspec_kw={
        "left": 0.01, "right": 0.99, "bottom": 0.01, "top": 1 - 0.55 / (1.25 * rows + 0.6),
        "wspace": 0.05, "hspace": 0.3}))
    for ax in axes.flat:
        ax.set_axis_off()
    for k, i in enumerate(order):
        r, c = divmod(k, cols)
        low, high = zscale_limits(science[i])
        d = difference[i]
        m = d.shape[0] // 2
        core = np.abs(d[max(m - 3, 0):m + 4, max(m - 3, 0):m + 4])
        half = float(np.nanmax(core)) if np.isfinite(core).any() else 0.0
        half = half or max(abs(v) for v in zscale_limits(d)) or 1.0
        panels = ((science[i], low, high, "sci"), (template[i], low, high, "tmpl"),
                  (d, -half, half, "diff"))
        for j, (image, lo, hi, name) in enumerate(panels):
            ax = axes[r, 3 * c + j]
            show_image(ax, image, lo, hi)
            ax.set_title(f"#{int(ids[i])} S/N {snr[i]:.1f}{' F' if flags[i] else ''}"
                         if j == 0 else name, fontsize=7, loc="left")
    if order.size == 0:
        axes[0, 0].text(0.0, 0.5, "no DIA sources", fontsize=10)
    fig.suptitle(f"{title + ': ' if title else ''}the {order.size} DIA sources of largest "
                 "|S/N| (science, matched template, difference; F = flagged)", fontsize=9)
    return QaPlot(fig, {"ids": np.asarray(ids)[order], "snr": snr[order]})
