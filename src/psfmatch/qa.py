"""QA plots of one pair: ip_diffim's ds9 debug displays as matplotlib figures.

ip_diffim's only QA is a set of debug displays (``displayCandidates``,
``showBadCandidates``, ``displayKernelBasis``, ``displayKernelMosaic``,
``plotKernelSpatialModel``, ``displaySpatialCells``, ``displayTemplate``,
``displaySciIm``, ``displayDiffIm``). Each function here draws one of them from arrays
and tables (never from paths; :func:`psfmatch.steps.qa` reads the products) and returns
a :class:`QaPlot`: the figure and the numbers it shows, so that a test can check a plot
against the product it was drawn from.

Figures are :class:`matplotlib.figure.Figure` objects created without ``pyplot`` (no
global state, no GUI backend); :func:`psfmatch.io.write_figure` renders them with Agg.
Images use a zscale interval with an asinh stretch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "REJECTION_MARKERS",
    "QaPlot",
    "basis_plot",
    "candidates_plot",
    "images_plot",
    "kernel_sum_plot",
    "mosaic_plot",
    "residual_histogram_plot",
    "spatial_model_plot",
    "summary_html",
    "worst_stamps_plot",
    "zscale_limits",
]

#: Marker of each rejection stage (all rejected candidates are drawn in red).
REJECTION_MARKERS: dict[str, str] = {"select": "x", "single": "s", "ksum": "^", "spatial": "D"}
USED_COLOUR = "tab:green"
UNUSED_COLOUR = "tab:cyan"
REJECTED_COLOUR = "red"


@dataclass
class QaPlot:
    """A figure and the data it shows.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
    data : dict
        What was plotted (positions, counts, limits, ...), keyed as each function documents.
    """

    figure: Figure
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- stretch
def zscale_limits(image: np.ndarray, *, contrast: float = 0.25) -> tuple[float, float]:
    """IRAF zscale display limits of the finite pixels of ``image``.

    Returns ``(0, 1)`` for an image without finite pixels.
    """
    from astropy.visualization import ZScaleInterval

    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = ZScaleInterval(contrast=contrast).get_limits(values)
    if not high > low:
        high = low + 1.0
    return float(low), float(high)


def _norm(low: float, high: float):
    from astropy.visualization import AsinhStretch, ImageNormalize

    return ImageNormalize(vmin=low, vmax=high, stretch=AsinhStretch(a=0.1), clip=True)


def _show(ax, image: np.ndarray, low: float, high: float, *, origin_xy=(0, 0), cmap="gray"):
    """Display ``image`` in parent pixel coordinates (pixel centres at integers)."""
    h, w = image.shape
    x0, y0 = origin_xy
    extent = (x0 - 0.5, x0 + w - 0.5, y0 - 0.5, y0 + h - 0.5)
    return ax.imshow(image, origin="lower", cmap=cmap, norm=_norm(low, high), extent=extent,
                     interpolation="nearest")


def _grid(n: int, *, max_columns: int) -> tuple[int, int]:
    columns = min(n, max_columns) if n > 0 else 1
    return max(1, math.ceil(n / columns)), columns


# ---------------------------------------------------------------------- plots
def images_plot(
    science: np.ndarray,
    template: np.ndarray,
    difference: np.ndarray,
    *,
    xy0: tuple[int, int] = (0, 0),
    title: str = "",
) -> QaPlot:
    """Science, warped template and difference side by side with the same stretch.

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
    for ax, image, name in zip(axes, (science, template, difference),
                               ("science", "warped template", "difference"), strict=True):
        m = float(np.nanmedian(image)) if np.isfinite(image).any() else 0.0
        lims = (m - below, m + above)
        limits.append(lims)
        _show(ax, image, *lims, origin_xy=xy0)
        ax.set_title(f"{title + ': ' if title and name == 'science' else ''}{name} "
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
    text = str(reason)
    if stage != "select":
        text = text.split(" = ")[0].split(":")[0]
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
    _show(ax, image, *zscale_limits(image), origin_xy=xy0)
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


def _kernel_panels(fig: Figure, images: Sequence[np.ndarray], titles: Sequence[str], *,
                   max_columns: int, symmetric: bool = True):
    rows, columns = _grid(len(images), max_columns=max_columns)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, text in zip(axes, images, titles, strict=False):
        limit = float(np.max(np.abs(image))) or 1.0
        if symmetric:
            ax.imshow(image, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit,
                      interpolation="nearest")
        else:
            ax.imshow(image, origin="lower", cmap="viridis", interpolation="nearest")
        ax.set_title(text, fontsize=8)
    return axes


def basis_plot(basis: np.ndarray, *, n_max: int = 25, description: str = "") -> QaPlot:
    """The first ``n_max`` basis kernels (``displayKernelBasis``), symmetric colour scale.

    ``data``: ``n_shown``, ``n_basis``, ``sums`` (sum of each shown basis image).
    """
    basis = np.asarray(basis, dtype=np.float64)
    shown = basis[:n_max]
    columns = min(len(shown), 5)
    rows = max(1, math.ceil(len(shown) / max(columns, 1)))
    fig = Figure(figsize=(2.1 * columns + 0.5, 2.1 * rows + 0.8), layout="constrained")
    sums = [float(b.sum()) for b in shown]
    _kernel_panels(fig, shown, [f"B{i}  Σ={s:.3g}" for i, s in enumerate(sums)], max_columns=5)
    fig.suptitle(f"kernel basis: first {len(shown)} of {basis.shape[0]} "
                 f"({basis.shape[1]}×{basis.shape[2]} px) {description}".strip())
    return QaPlot(fig, {"n_shown": len(shown), "n_basis": int(basis.shape[0]), "sums": sums})


def _grid_positions(bbox: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions per axis from the bbox minimum to its maximum (inclusive pixels)."""
    return np.linspace(bbox[0], bbox[2], n), np.linspace(bbox[1], bbox[3], n)


def mosaic_plot(kernel, *, n: int = 5) -> QaPlot:
    """The spatial kernel realised on an ``n × n`` grid over its bbox (``displayKernelMosaic``).

    Panels are arranged as on the sky (y increasing upwards) and share one colour scale.

    ``data``: ``x``, ``y`` (grid positions), ``sums`` (``n × n``, indexed ``[iy, ix]``),
    ``images`` (``n × n × k × k``).
    """
    xs, ys = _grid_positions(kernel.bbox, n)
    images = np.array([[kernel.image_at(x, y) for x in xs] for y in ys])
    sums = images.sum(axis=(2, 3))
    limit = float(np.max(np.abs(images))) or 1.0
    fig = Figure(figsize=(2.0 * n + 1.2, 2.0 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, n, squeeze=False)
    for iy in range(n):
        for ix in range(n):
            ax = axes[n - 1 - iy, ix]
            im = ax.imshow(images[iy, ix], origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"({xs[ix]:.0f}, {ys[iy]:.0f}) Σ={sums[iy, ix]:.4f}", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="kernel value")
    fig.suptitle(f"spatial kernel on a {n}×{n} grid "
                 f"(sum range {sums.min():.4f} – {sums.max():.4f})")
    return QaPlot(fig, {"x": xs, "y": ys, "sums": sums, "images": images})


def spatial_model_plot(kernel, *, n: int = 48) -> QaPlot:
    """Each basis coefficient's spatial map and the background model (``plotKernelSpatialModel``).

    Coefficient ``i`` at ``(x, y)`` is ``Σ_t c_{i,t} f_t(x, y)``; the background is
    ``Σ_t b_t g_t(x, y)`` (zero when not fitted). Each map has its own colour range,
    printed in its title.

    ``data``: ``x``, ``y`` (evaluation grid), ``coefficients`` (``n_basis × n × n``),
    ``background`` (``n × n``).
    """
    xs, ys = _grid_positions(kernel.bbox, n)
    gx, gy = np.meshgrid(xs, ys)
    function = kernel.kernel_function
    maps = np.array([function.evaluate(c, gx, gy) for c in kernel.coefficients])
    background = np.broadcast_to(np.asarray(kernel.background_at(gx, gy), dtype=np.float64),
                                 gx.shape)
    panels = [*maps, background]
    titles = [f"c{i} [{m.min():.3g}, {m.max():.3g}]" for i, m in enumerate(maps)]
    titles.append(f"background [{background.min():.3g}, {background.max():.3g}]")
    rows, columns = _grid(len(panels), max_columns=7)
    fig = Figure(figsize=(2.0 * columns + 0.5, 2.0 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    for ax in axes:
        ax.set_axis_off()
    for ax, image, text in zip(axes, panels, titles, strict=False):
        ax.imshow(image, origin="lower", cmap="viridis", extent=extent, aspect="auto",
                  interpolation="nearest")
        ax.set_title(text, fontsize=7, color="darkred" if text.startswith("background") else "k")
    bg = kernel.background_function
    bg_text = f"{bg.model_type} order {bg.order}" if bg else "not fitted"
    fig.suptitle(f"spatial model: {function.model_type} order {function.order} for "
                 f"{len(maps)} basis coefficients; background {bg_text}")
    return QaPlot(fig, {"x": xs, "y": ys, "coefficients": maps, "background": background})


def kernel_sum_plot(
    kernel_sum: np.ndarray,
    *,
    stage: np.ndarray,
    passes: Mapping[int, Sequence[Mapping[str, float]]],
    final_sum: float | None = None,
) -> QaPlot:
    """Distribution of the single-kernel sums with the kernel-sum clip limits.

    ``kernel_sum`` holds every candidate (NaN where no single kernel was fitted).
    Candidates rejected at the ``ksum`` stage are drawn separately. For each spatial
    iteration the last clipping pass (the statistics the clip converged to) is shown
    as its clipped mean and ``mean ± maxKsumSigma·std`` limits.

    ``data``: ``values`` (finite sums), ``rejected_values`` (sums rejected by the
    ksum stage), ``limits`` (iteration -> ``(mean, low, high)``).
    """
    kernel_sum = np.asarray(kernel_sum, dtype=np.float64)
    finite = np.isfinite(kernel_sum)
    ksum_rejected = finite & (np.asarray(stage).astype(str) == "ksum")
    kept = finite & ~ksum_rejected
    values = kernel_sum[finite]
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    limits: dict[int, tuple[float, float, float]] = {}
    if values.size:
        span = np.ptp(values) or max(abs(values[0]) * 0.01, 1e-3)
        bins = np.linspace(values.min() - 0.05 * span, values.max() + 0.05 * span,
                           max(10, min(60, values.size // 2)))
        ax.hist([kernel_sum[kept], kernel_sum[ksum_rejected]], bins=bins, stacked=True,
                color=["tab:blue", REJECTED_COLOUR],
                label=[f"not rejected by ksum ({int(kept.sum())})",
                       f"rejected by ksum ({int(ksum_rejected.sum())})"])
    colours = ["k", "tab:purple", "tab:orange", "tab:brown", "tab:pink"]
    for it, its_passes in sorted(passes.items()):
        if not its_passes:
            continue
        last = its_passes[-1]
        mean, limit = float(last["mean"]), float(last["limit"])
        limits[int(it)] = (mean, mean - limit, mean + limit)
        colour = colours[int(it) % len(colours)]
        ax.axvline(mean, color=colour, ls="-", lw=1.0,
                   label=f"iteration {it}: clipped mean {mean:.4f}, ±{limit:.3g} "
                         f"({len(its_passes)} pass{'es' if len(its_passes) > 1 else ''})")
        for edge in (mean - limit, mean + limit):
            ax.axvline(edge, color=colour, ls="--", lw=1.0)
    if final_sum is not None and math.isfinite(final_sum):
        ax.axvline(final_sum, color="tab:green", ls=":", lw=2,
                   label=f"final spatial kernel sum {final_sum:.4f}")
    ax.set_xlabel("single-kernel sum")
    ax.set_ylabel("candidates")
    ax.legend(fontsize=8)
    ax.set_title("kernel-sum distribution and clip limits")
    return QaPlot(fig, {"values": values, "rejected_values": kernel_sum[ksum_rejected],
                        "limits": limits})


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
            _show(axes[row, col], image, low, high)
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


# ---------------------------------------------------------------------- summary
def summary_html(rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str],
                 title: str = "psfmatch run summary") -> str:
    """A self-contained HTML table of the per-pair summary rows (no scripts, no links).

    Rows whose ``status`` is not ``ok`` are highlighted.
    """
    from html import escape

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.6g}"
        return escape(str(value))

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        style = "" if row.get("status") == "ok" else ' class="notok"'
        body.append(f"<tr{style}>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns)
                    + "</tr>")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:13px}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 6px;"
        "text-align:left;vertical-align:top}th{background:#eee}"
        "tr.notok td{background:#fdd}</style></head><body>"
        f"<h2>{escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>"
        + "".join(body) + "</tbody></table></body></html>\n"
    )
