"""Rescale a variance plane to the pixel noise (meas_algorithms ``ScaleVarianceTask``).

With a background :math:`B` (32-px mesh of 3σ-clipped means, bilinear between cells:
:func:`psfmatch.background.mesh_background`)
subtracted temporarily and over good pixels (none of the ``mask_planes``, finite image,
finite variance > 0):

* pixel based: :math:`f = \\big(0.74\\,\\mathrm{IQR}[(I - B)/\\sqrt V]\\big)^2`, the squared
  robust width of the per-pixel significance (fewer than 2 good pixels: ``f = 1``);
* if :math:`f >` ``limit``, image based:
  :math:`f = \\big(0.74\\,\\mathrm{IQR}[I - B]\\big)^2 / \\mathrm{median}(V)`;
* if that also exceeds ``limit``: :class:`~psfmatch.errors.VarianceScaleError`.

``0.74 · IQR`` is the Gaussian σ (0.7413). The variance plane is multiplied by ``f``;
image and mask are unchanged. Sources inside the quartiles widen the IQR slightly, as in
meas_algorithms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psfmatch.background import mesh_background
from psfmatch.errors import VarianceScaleError
from psfmatch.exposure import Exposure
from psfmatch.stats import percentiles

__all__ = [
    "MASK_PLANES",
    "VarianceScale",
    "background_image",
    "mark_detected",
    "scale_variance",
    "variance_scale_factor",
]

#: ``ScaleVarianceConfig.maskPlanes`` (also the background's ignored planes).
MASK_PLANES = ("DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "INTRP")
_IQR_TO_SIGMA = 0.74


@dataclass(frozen=True)
class VarianceScale:
    """A variance scale factor and how it was obtained (JSON-able via ``vars()``).

    Attributes
    ----------
    factor : float
        Multiplier of the variance plane.
    method : str
        ``"pixel"``, ``"image"`` or ``"none"`` (too few good pixels).
    n_pixels : int
        Good pixels used.
    """

    factor: float
    method: str
    n_pixels: int


def variance_scale_factor(
    exposure: Exposure,
    *,
    mask_planes: Sequence[str] = MASK_PLANES,
    limit: float = 10.0,
    background_bin: int = 32,
    label: str = "exposure",
    background: np.ndarray | float | None = None,
) -> VarianceScale:
    """The factor that makes the variance plane match the pixel noise.

    Parameters
    ----------
    exposure : Exposure
        Image (counts) and variance (counts²) are read; nothing is modified.
    mask_planes : sequence of str
        Pixels with these planes are not used.
    limit : float
        Largest acceptable factor (``ScaleVarianceConfig.limit``).
    background_bin : int
        Background mesh size (px).
    label : str
        Names the exposure in the error message.
    background : ndarray or float, optional
        The image's background, if already estimated (:func:`background_image`);
        otherwise the 32-px mesh over the pixels without ``mask_planes``.

    Raises
    ------
    VarianceScaleError
        Both estimates exceed ``limit``.
    """
    bits = exposure.plane_bitmask(mask_planes)
    n_good = 0
    for rows in _bands(exposure.shape[0]):
        n_good += int(np.count_nonzero(~_bad_rows(exposure, rows, bits)))
    if n_good < 2:
        return VarianceScale(1.0, "none", n_good)
    if background is None:
        background = background_image(exposure, bad_planes=mask_planes,
                                      background_bin=background_bin, _strict=True)
    # (I - B)/sqrt(V) of the good pixels, in row order, computed band by band
    z = np.empty(n_good, dtype=np.float64)
    filled = 0
    for rows in _bands(exposure.shape[0]):
        good = ~_bad_rows(exposure, rows, bits)
        residual = (exposure.image[rows].astype(np.float64) - _band(background, rows))[good]
        part = residual / np.sqrt(exposure.variance[rows].astype(np.float64)[good])
        z[filled : filled + part.size] = part
        filled += part.size
    q1, q3 = percentiles(z, (25.0, 75.0), in_place=True)
    del z
    factor = float((_IQR_TO_SIGMA * (q3 - q1)) ** 2)
    if factor <= limit:
        return VarianceScale(factor, "pixel", n_good)
    image = exposure.image.astype(np.float64)
    variance = exposure.variance.astype(np.float64)
    bad = ((exposure.mask & bits) != 0) | ~np.isfinite(image) | ~np.isfinite(variance) \
        | ~(variance > 0)
    residual = (image - background)[~bad]
    q1, q3 = np.percentile(residual, [25.0, 75.0])
    factor = float((_IQR_TO_SIGMA * (q3 - q1)) ** 2 / np.median(variance[~bad]))
    if not (math.isfinite(factor) and factor <= limit):
        msg = (f"{label}: variance plane is off by a factor {factor:.3g} (pixel- and "
               f"image-based), more than subtract.scaleVariance limit {limit:g}")
        raise VarianceScaleError(msg)
    return VarianceScale(factor, "image", n_good)


def scale_variance(
    exposure: Exposure,
    *,
    mask_planes: Sequence[str] = MASK_PLANES,
    limit: float = 10.0,
    background_bin: int = 32,
    label: str = "exposure",
) -> tuple[Exposure, VarianceScale]:
    """Multiply the variance plane by :func:`variance_scale_factor` (image, mask unchanged).

    Options as :func:`variance_scale_factor`; returns the new exposure and the factor.
    """
    scale = variance_scale_factor(exposure, mask_planes=mask_planes, limit=limit,
                                  background_bin=background_bin, label=label)
    return exposure.with_(variance=(exposure.variance * scale.factor).astype(np.float32)), scale


def background_image(exposure: Exposure, *, bad_planes: Sequence[str] = ("NO_DATA", "BAD", "SAT"),
                     background_bin: int = 32, _strict: bool = False) -> np.ndarray | float:
    """Background of ``exposure``: clipped means on a ``background_bin`` mesh, interpolated.

    Pixels with ``bad_planes`` or non-finite values are left out (the image median if the
    mesh cannot be made). Nothing is modified. (``_strict``: also pixels whose variance
    is not finite and > 0, as :func:`variance_scale_factor` leaves them out.)
    """
    bad = ((exposure.mask & exposure.plane_bitmask(bad_planes)) != 0) | ~np.isfinite(exposure.image)
    if _strict:
        bad |= ~np.isfinite(exposure.variance) | ~(exposure.variance > 0)
    return mesh_background(exposure.image, bad, int(background_bin))


#: Rows per band of the band-by-band passes (memory: a few arrays of this many rows).
_BAND = 256


def _bands(n_rows: int) -> list[slice]:
    return [slice(s, min(s + _BAND, n_rows)) for s in range(0, n_rows, _BAND)]


def _band(background: np.ndarray | float, rows: slice) -> np.ndarray | float:
    return background[rows] if isinstance(background, np.ndarray) else background


def _bad_rows(exposure: Exposure, rows: slice, bits: int) -> np.ndarray:
    """Pixels of ``rows`` with ``bits`` set, a non-finite image or a variance not > 0."""
    image, variance = exposure.image[rows], exposure.variance[rows]
    return ((exposure.mask[rows] & bits) != 0) | ~np.isfinite(image) \
        | ~np.isfinite(variance) | ~(variance > 0)


def mark_detected(
    exposure: Exposure,
    *,
    psf_fwhm: float,
    n_sigma: float = 5.0,
    grow_sigma: float = 2.4,
    bad_planes: Sequence[str] = ("NO_DATA", "BAD", "SAT"),
    background_bin: int = 32,
    background: np.ndarray | float | None = None,
) -> tuple[Exposure, int]:
    """Set a ``DETECTED`` plane where sources are, when the exposure has none.

    ip_diffim's inputs carry ``DETECTED`` from upstream detection, which the variance
    rescaling leaves out; psfmatch's inputs usually do not. Here: the background-subtracted
    image (32-px mesh) and its variance are correlated with a Gaussian :math:`G` of the
    PSF width, the matched-filter significance
    :math:`\\nu = (I \\star G) / \\sqrt{V \\star G^2}` is thresholded at ``n_sigma``, and the
    detected pixels are grown by ``grow_sigma`` PSF sigmas (a box), as footprints are.
    image and variance unchanged; mask: ``DETECTED`` added on those pixels. If
    ``DETECTED`` is already set anywhere the exposure is returned unchanged. Returns the
    exposure and the number of pixels marked. ``background``: as :func:`background_image`
    gives it, if already estimated.

    The correlations and the growing are done in bands of rows with their halo (float64
    transforms of the band instead of the whole image: the same significances to
    ~1e-16 relative), so memory is a few band-sized arrays beyond the new mask.
    """
    from scipy.ndimage import maximum_filter

    from psfmatch.convolution import correlate

    if "DETECTED" in exposure.mask_planes and exposure.plane("DETECTED").any():
        return exposure, 0
    sigma = float(psf_fwhm) / 2.3548200450309493
    half = max(1, int(math.ceil(4.0 * sigma)))
    off = np.arange(-half, half + 1, dtype=np.float64)
    g1 = np.exp(-0.5 * (off / sigma) ** 2)
    gauss = np.outer(g1, g1)
    gauss /= gauss.sum()
    bits = exposure.plane_bitmask(bad_planes)
    if background is None:
        background = background_image(exposure, bad_planes=bad_planes,
                                      background_bin=background_bin, _strict=True)
    grow = 2 * int(math.ceil(grow_sigma * sigma)) + 1
    ny = exposure.shape[0]
    out = exposure.with_planes(["DETECTED"])
    mask = out.mask.copy()
    bit = np.int32(1 << out.mask_planes["DETECTED"])
    n_marked = 0
    for rows in _bands(ny):
        # significance on the rows the growing needs, from rows with the correlation halo
        a, b = max(0, rows.start - grow // 2), min(ny, rows.stop + grow // 2)
        lo, hi = max(0, a - half), min(ny, b + half)
        image = exposure.image[lo:hi].astype(np.float64)
        variance = exposure.variance[lo:hi].astype(np.float64)
        bad = _bad_rows(exposure, slice(lo, hi), bits)
        residual = np.where(bad, 0.0, image - _band(background, slice(lo, hi)))
        with np.errstate(invalid="ignore", divide="ignore"):
            nu = correlate(residual, gauss) / np.sqrt(correlate(np.where(bad, 0.0, variance),
                                                                gauss**2))
        detected = np.nan_to_num(nu[a - lo : b - lo], nan=0.0) > float(n_sigma)
        detected = maximum_filter(detected, size=grow)[rows.start - a : rows.stop - a]
        mask[rows][detected] |= bit
        n_marked += int(detected.sum())
    return out.with_(mask=mask), n_marked
