"""Statistics with afw's exact definitions.

See docs/conventions.md#statistics; the residual statistics of a difference stamp
(:func:`residual_stats`): docs/fitting.md#residual-statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ResidualStats", "clipped_mean_std", "median_filled", "percentiles", "residual_stats"]

#: IQR → sigma for a Gaussian, as afw uses it.
IQR_TO_SIGMA = 0.741301109252802


def clipped_mean_std(
    values: np.ndarray, *, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float]:
    """afw ``MEANCLIP`` / ``STDEVCLIP``.

    Iteration 1 keeps values within ``median ± n_sigma · 0.7413 · IQR`` (quartiles by
    linear interpolation, as numpy's default); later iterations keep
    ``|v − mean| ≤ n_sigma · std`` around the previous clipped mean/std. The standard
    deviation is the unbiased (n−1) estimator. Non-finite values are ignored.

    Returns
    -------
    (mean, std) : tuple of float
        NaN where fewer than 1 (mean) or 2 (std) values survive.

    Notes
    -----
    The values are used in their own precision (float32 stays float32: every float32
    value is exact in float64) and compared and summed in float64, in their order, so
    the results equal those of the float64 copy numpy would work on, bit for bit,
    while the extra memory is one float64 copy of the kept values (none of the
    quartiles' sorting copy is float64).
    """
    data = np.asarray(values).ravel()
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.all():
        data = data[finite]
    del finite
    if data.size == 0:
        return math.nan, math.nan
    q1, median, q3 = percentiles(data, (25.0, 50.0, 75.0))
    centre, half_width = median, n_sigma * IQR_TO_SIGMA * (q3 - q1)
    mean, std = math.nan, math.nan
    for _ in range(n_iter):
        kept = _within(data, centre, half_width)
        if kept.size == 0:
            break
        mean = float(kept.mean())
        std = _std_in_place(kept) if kept.size > 1 else math.nan
        del kept
        centre, half_width = mean, n_sigma * std
        if not math.isfinite(half_width):
            break
    return mean, std


_CHUNK = 1 << 20


def median_filled(image: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with ``bad`` pixels replaced by the median of the others (0.0
    when none is left); the dtype follows ``image`` and the median's."""
    good = image[~bad]
    return np.where(bad, np.median(good) if good.size else 0.0, image)


def percentiles(data: np.ndarray, q: tuple[float, ...], *, in_place: bool = False
                ) -> tuple[float, ...]:
    r"""``np.percentile(data.astype(float64), q)`` (1-D, finite), without the float64 copy.

    numpy's linear method: virtual index :math:`(n - 1) q/100`, the two order statistics
    around it (a partition of ``data`` itself with ``in_place``, which reorders it, else
    of a copy in ``data``'s own precision), and its interpolation :math:`a + (b - a) t`
    (:math:`b - (b - a)(1 - t)` for :math:`t \ge 0.5`), in float64: the same numbers.
    """
    n = data.size
    quantiles = np.asarray(q, dtype=np.float64) / 100
    virtual = (n - 1) * quantiles
    lower = np.floor(virtual)
    upper = lower + 1
    above = virtual >= n - 1
    lower[above] = upper[above] = -1
    lo, hi = lower.astype(np.intp), upper.astype(np.intp)
    gamma = virtual - lower
    work = data if in_place else data.copy()
    work.partition(np.unique(np.concatenate(([0, -1], lo, hi))))
    a = work[lo].astype(np.float64)
    b = work[hi].astype(np.float64)
    del work
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return tuple(float(v) for v in out)


def _within(data: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """The values with ``|v - centre| <= half_width``, in order, as float64 (chunked)."""
    keep = np.empty(data.size, dtype=bool)
    for start in range(0, data.size, _CHUNK):
        chunk = data[start : start + _CHUNK].astype(np.float64)
        np.less_equal(np.abs(chunk - centre), half_width, out=keep[start : start + _CHUNK])
    kept = np.empty(int(np.count_nonzero(keep)), dtype=np.float64)
    filled = 0
    for start in range(0, data.size, _CHUNK):
        part = data[start : start + _CHUNK][keep[start : start + _CHUNK]]
        kept[filled : filled + part.size] = part
        filled += part.size
    return kept


def _std_in_place(kept: np.ndarray) -> float:
    """``kept.std(ddof=1)`` computed as numpy does, overwriting ``kept`` (no copy)."""
    n = kept.size
    mean = np.add.reduce(kept, keepdims=True)
    np.true_divide(mean, n, out=mean)
    np.subtract(kept, mean, out=kept)
    np.multiply(kept, kept, out=kept)
    return float(np.sqrt(np.add.reduce(kept) / (n - 1)))


@dataclass(frozen=True)
class ResidualStats:
    """``ImageStatistics`` of a difference stamp in units of its own sigma."""

    mean: float
    rms: float
    n_pixels: int


def residual_stats(
    difference: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    *,
    bad_bits: int,
    core_radius: int | None = None,
) -> ResidualStats:
    """Mean and rms of ``D/σ`` over usable pixels (ip_diffim ``ImageStatistics``).

    A pixel is used if none of ``bad_bits`` is set in ``mask`` and ``1/variance`` is
    finite (zero or infinite variance is skipped). With ``core_radius = r`` only rows
    ``[H//2 − r, H//2 + r]`` and the same columns are used. ``rms`` is the square root
    of the unbiased variance of ``D/σ``.

    Returns NaN ``mean`` when no pixel is usable and NaN ``rms`` for fewer than two.
    """
    d = np.asarray(difference, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    m = np.asarray(mask)
    if core_radius is not None:
        cy, cx = d.shape[0] // 2, d.shape[1] // 2
        r = int(core_radius)
        rows = slice(max(cy - r, 0), cy + r + 1)
        cols = slice(max(cx - r, 0), cx + r + 1)
        d, v, m = d[rows, cols], v[rows, cols], m[rows, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / v
        use = ((m & bad_bits) == 0) & np.isfinite(inv) & np.isfinite(d)
        z = d[use] * np.sqrt(inv[use])
    n = int(z.size)
    if n == 0:
        return ResidualStats(math.nan, math.nan, 0)
    mean = float(z.mean())
    if n < 2:
        return ResidualStats(mean, math.nan, n)
    var = (float(np.mean(z * z)) - mean * mean) * n / (n - 1)
    return ResidualStats(mean, math.sqrt(max(var, 0.0)), n)
