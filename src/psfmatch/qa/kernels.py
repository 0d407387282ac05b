"""QA figures of the kernel: basis, mosaic, spatial model, kernel-sum distribution."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from psfmatch.kernel_accuracy import unused_text
from psfmatch.qa._common import REJECTED_COLOUR, QaPlot, grid_shape

__all__ = ['basis_plot', 'kernel_sum_plot', 'mosaic_plot', 'spatial_model_plot']


def _kernel_panels(fig: Figure, images: Sequence[np.ndarray], titles: Sequence[str], *,
                   max_columns: int, symmetric: bool = True):
    rows, columns = grid_shape(len(images), max_columns=max_columns)
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
    When the kernel's metadata carry its own error (``accuracy``, written by
    ``spatial_fit``: :func:`psfmatch.kernel_accuracy.kernel_accuracy`), the figure says it
    at the centre and the four corners: the 1σ of the kernel sum and the expected
    relative L1 error, and whether the covariance describes the error or is a lower
    bound.

    ``data``: ``x``, ``y`` (grid positions), ``sums`` (``n × n``, indexed ``[iy, ix]``),
    ``images`` (``n × n × k × k``), ``accuracy`` (the metadata's, or ``None``).
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
    accuracy = (getattr(kernel, "metadata", None) or {}).get("accuracy")
    if accuracy:
        fig.supxlabel(_accuracy_text(accuracy), fontsize=7)
    return QaPlot(fig, {"x": xs, "y": ys, "sums": sums, "images": images,
                        "accuracy": accuracy})


def _accuracy_text(accuracy: Mapping) -> str:
    """σ(Σ) and expected L1 at the five positions, how far to trust them, and the stars
    left out of the fit (a third line, when any were)."""
    parts = [f"{name.replace('_', ' ')} ({p['x']:.0f}, {p['y']:.0f}): "
             f"σΣ={p['kernel_sum_sigma']:.2g}, L1≈{100 * p['expected_l1']:.2g}%"
             for name, p in accuracy["positions"].items()]
    text = ("kernel error from its covariance (" + str(accuracy["covariance"]) + "): "
            + "; ".join(parts[:3]) + "\n" + "; ".join(parts[3:]))
    left_out = unused_text(accuracy.get("unused") or {})
    return text + ("\n" + left_out if left_out else "")


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
    rows, columns = grid_shape(len(panels), max_columns=7)
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


