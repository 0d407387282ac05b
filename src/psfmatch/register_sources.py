r"""Source lists for registration: matched-filter peaks with refined, unbiased centroids.

:func:`find_sources` smooths the image with a Gaussian (a matched filter for a star),
keeps the local maxima whose smoothed value stands ``threshold`` noise units above a
coarse background, and refines each centroid with adaptive moments
(:func:`psfmatch.moments.adaptive_moments`): the elliptical-Gaussian-weighted first moment
iterated until the weight matches the object, which is the centre of any point-symmetric
profile whatever its width and is far less noisy than an isophotal centroid. Positions
are parent pixels (``column + xy0[0]``, ``row + xy0[1]``).

This is lighter than :func:`psfmatch.detect.detect_candidates` (no segmentation, no
full-resolution background map): about half the time on a 2048² image for the same
brightest sources, and deeper on a blurred image (the filter sums the star's pixels).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from psfmatch.exposure import Exposure
from psfmatch.moments import adaptive_moments

__all__ = ["find_sources"]

#: Side (px) of the boxes whose median is the coarse background.
_BACKGROUND_BOX = 64

#: Sources narrower than this fraction of the median width (cosmic rays, hot pixels)
#: are dropped.
_MIN_RELATIVE_WIDTH = 0.5


def _block_background(data: np.ndarray, box: int) -> np.ndarray:
    """Median of each ``box``×``box`` block (NaN = unusable), holes filled with the median."""
    ny, nx = data.shape
    by, bx = -(-ny // box), -(-nx // box)
    pad = np.full((by * box, bx * box), np.nan, dtype=np.float32)
    pad[:ny, :nx] = data
    blocks = pad.reshape(by, box, bx, box).transpose(0, 2, 1, 3).reshape(by, bx, box * box)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        grid = np.nanmedian(blocks, axis=2)
    finite = np.isfinite(grid)
    return np.where(finite, grid, np.median(grid[finite]) if finite.any() else 0.0)


def _background_at(grid: np.ndarray, box: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of the block grid (values at block centres) at pixels."""
    gy = np.clip((rows - (box - 1) / 2.0) / box, 0, grid.shape[0] - 1)
    gx = np.clip((cols - (box - 1) / 2.0) / box, 0, grid.shape[1] - 1)
    return ndimage.map_coordinates(grid, [gy, gx], order=1, mode="nearest")


def _peaks(exposure: Exposure, bad: np.ndarray, threshold: float, smoothing: float):
    """Rows, columns and background-subtracted smoothed values of significant maxima."""
    grid = _block_background(np.where(bad, np.nan, exposure.image), _BACKGROUND_BOX)
    ny, nx = exposure.shape
    near = grid[np.minimum(np.arange(ny) // _BACKGROUND_BOX, grid.shape[0] - 1)][
        :, np.minimum(np.arange(nx) // _BACKGROUND_BOX, grid.shape[1] - 1)]
    filled = np.where(bad, near, exposure.image).astype(np.float32)
    smooth = ndimage.gaussian_filter(filled, smoothing, mode="nearest")
    peak = (smooth == ndimage.maximum_filter(smooth, size=5, mode="nearest")) & ~bad
    rows, cols = np.nonzero(peak)
    value = smooth[rows, cols] - _background_at(grid, _BACKGROUND_BOX, rows, cols)
    # a unit-sum Gaussian of width s has sum k^2 = 1 / (4 pi s^2)
    noise = np.sqrt(exposure.variance[rows, cols].astype(np.float64)) / (
        2.0 * np.sqrt(np.pi) * smoothing)
    with np.errstate(invalid="ignore"):
        keep = value > threshold * noise
    order = np.argsort(-value[keep], kind="stable")
    return rows[keep][order], cols[keep][order], value[keep][order]


def _centroid_error(stamps: np.ndarray, variance: np.ndarray, centroid: np.ndarray,
                    sigma2: np.ndarray) -> np.ndarray:
    r"""Per-axis standard error (px) of a Gaussian-weighted centroid, from the noise.

    The centroid :math:`\hat x` solves :math:`g(\hat x) = \sum_i w_i (x_i - \hat x) I_i = 0`
    with :math:`w_i = \exp(-|\mathbf{x}_i - \hat{\mathbf x}|^2 / 2\sigma^2)`. Linearising,
    :math:`\operatorname{Var}\hat x = \sum_i w_i^2 (x_i - \hat x)^2 V_i / (\partial g /
    \partial \hat x)^2` with :math:`\partial g/\partial \hat x = \sum_i w_i I_i
    ((x_i - \hat x)^2/\sigma^2 - 1)`; for a background-limited Gaussian star of flux
    :math:`F` this is :math:`8\pi V\sigma^4/F^2`, the Cramér–Rao bound. The two axes
    are averaged. NaN where the derivative is not negative.
    """
    n, h, w = stamps.shape
    dy = (np.arange(h) - h // 2)[None, :, None] - centroid[:, 1, None, None]
    dx = (np.arange(w) - w // 2)[None, None, :] - centroid[:, 0, None, None]
    s2 = sigma2[:, None, None]
    wt = np.exp(-0.5 * (dx * dx + dy * dy) / s2)
    var = np.zeros(n)
    for d in (dx, dy):
        num = (wt * wt * d * d * variance).sum(axis=(1, 2))
        den = (wt * stamps * (d * d / s2 - 1.0)).sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            var += np.where(den < 0, num / (den * den), np.nan)
    return np.sqrt(0.5 * var)


def find_sources(
    exposure: Exposure,
    *,
    threshold: float = 5.0,
    max_sources: int = 400,
    smoothing_sigma: float = 1.5,
    stamp_half_width: int = 10,
    bad_mask_planes: Sequence[str] = ("NO_DATA", "EDGE", "SAT", "BAD", "CR"),
) -> dict[str, np.ndarray]:
    r"""Bright, clean, point-like sources with refined centroids, brightest first.

    **Peaks.** Unusable pixels (non-finite image or variance, or any of
    ``bad_mask_planes``) are replaced by the median of their 64×64 block; the image is
    smoothed with a unit-sum Gaussian of width :math:`s` = ``smoothing_sigma``; a pixel is
    a peak when it is the maximum of its 5×5 neighbourhood, usable, and its smoothed value
    minus the bilinearly interpolated block median exceeds ``threshold`` times the
    smoothed noise :math:`\sqrt{V} / (2\sqrt\pi s)`. Peaks are ranked by that excess.

    **Centroids.** A peak is kept when its stamp of :math:`(2h+1)^2` pixels
    (:math:`h` = ``stamp_half_width``) lies inside the image and holds no unusable pixel.
    The stamp minus the median of its two-pixel border gets adaptive moments; sources that
    do not converge, or are narrower than half the median width (cosmic rays, hot
    pixels), are dropped. Each centroid carries its standard error from the variance plane
    (see ``_centroid_error``).

    Parameters
    ----------
    exposure : Exposure
        Image, mask and variance are read; nothing is modified.
    threshold : float
        Detection threshold in units of the smoothed image's noise.
    max_sources : int
        At most this many sources are returned (the most significant peaks).
    smoothing_sigma : float
        Width (px) of the smoothing Gaussian; near the PSF's σ is best, any value from
        1 to 3 px works.
    stamp_half_width : int
        Stamp half width (px); adaptive moments handle a FWHM up to about
        :math:`2.35 (2h+1)/4` px.
    bad_mask_planes : sequence of str
        Mask planes that make a pixel unusable (absent planes are ignored).

    Returns
    -------
    dict of str to numpy.ndarray
        ``x``, ``y`` (refined parent centroid, px), ``flux`` (smoothed peak excess, image
        units), ``sigma`` (trace radius :math:`\sqrt{(I_{xx} + I_{yy})/2}`, px),
        ``error`` (per-axis standard error of the centroid, px), all float64 and of equal
        length, most significant first.
    """
    hw = int(stamp_half_width)
    bad = ~(np.isfinite(exposure.image) & np.isfinite(exposure.variance))
    bits = exposure.plane_bitmask(bad_mask_planes)
    if bits:
        bad |= (exposure.mask & bits) != 0
    row, col, value = _peaks(exposure, bad, float(threshold), float(smoothing_sigma))
    ny, nx = exposure.shape
    inside = (col >= hw) & (col < nx - hw) & (row >= hw) & (row < ny - hw)
    row, col, value = row[inside], col[inside], value[inside]

    # unusable pixels inside each stamp, from a summed-area table (O(1) per source)
    table = np.zeros((ny + 1, nx + 1), dtype=np.int32)  # counts < 2**31 pixels
    np.cumsum(np.cumsum(bad, axis=0, dtype=np.int32), axis=1, out=table[1:, 1:])
    r0, r1, c0, c1 = row - hw, row + hw + 1, col - hw, col + hw + 1
    clean = (table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]) == 0
    n_try = int(max_sources) + int(max_sources) // 4 + 10  # spares for failed moments
    row, col, value = row[clean][:n_try], col[clean][:n_try], value[clean][:n_try]

    offs = np.arange(-hw, hw + 1)
    rr = row[:, None, None] + offs[None, :, None]
    cc = col[:, None, None] + offs[None, None, :]
    stamps = exposure.image[rr, cc].astype(np.float64)
    if row.size:
        border = np.ones(stamps.shape[1:], dtype=bool)
        border[2:-2, 2:-2] = False
        stamps -= np.median(stamps[:, border], axis=1)[:, None, None]
        with np.errstate(all="ignore"):  # non-converging stamps are flagged, not warned
            cov, centroid, ok = adaptive_moments(stamps, tol=1e-5)
        sigma2 = 0.5 * (cov[:, 0] + cov[:, 1])
        error = _centroid_error(stamps, exposure.variance[rr, cc].astype(np.float64),
                                centroid, sigma2)
        ok &= np.isfinite(error)
        if ok.any():
            ok &= sigma2 >= (_MIN_RELATIVE_WIDTH**2) * np.median(sigma2[ok])
    else:
        centroid, sigma2, error = np.zeros((0, 2)), np.zeros(0), np.zeros(0)
        ok = np.zeros(0, dtype=bool)
    sel = np.flatnonzero(ok)[: int(max_sources)]
    return {
        "x": (col[sel] + exposure.xy0[0] + centroid[sel, 0]).astype(np.float64),
        "y": (row[sel] + exposure.xy0[1] + centroid[sel, 1]).astype(np.float64),
        "flux": value[sel].astype(np.float64),
        "sigma": np.sqrt(sigma2[sel]),
        "error": error[sel],
    }
