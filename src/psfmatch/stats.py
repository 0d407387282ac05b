"""Statistics with afw's exact definitions.

See docs/conventions.md#statistics; the residual statistics of a difference stamp
(:func:`residual_stats`): docs/fitting.md#residual-statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ResidualStats", "clipped_mean_std", "residual_stats"]

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
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return math.nan, math.nan
    q1, median, q3 = np.percentile(data, [25.0, 50.0, 75.0])
    centre, half_width = median, n_sigma * IQR_TO_SIGMA * (q3 - q1)
    mean, std = math.nan, math.nan
    for _ in range(n_iter):
        kept = data[np.abs(data - centre) <= half_width]
        if kept.size == 0:
            break
        mean = float(kept.mean())
        std = float(kept.std(ddof=1)) if kept.size > 1 else math.nan
        centre, half_width = mean, n_sigma * std
        if not math.isfinite(half_width):
            break
    return mean, std


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
