"""PSF images for DIA detection and measurement.

The PSF of a difference image is the PSF of the image that was not convolved (the
science PSF when the template is convolved). Everything here works on an odd-sized,
unit-sum PSF *image* centred on its central pixel (``psfmatch.psf`` convention):

* :func:`psf_image`: validate / normalise an image, or evaluate a PSF model
  (anything with ``image_at(x, y)``, e.g. ``Exposure.psf``) at a position;
* :func:`gaussian_psf_image`: a pixel-integrated circular Gaussian of a given FWHM
  (the workflow measures FWHMs already);
* :func:`empirical_psf`: the weighted mean of sub-pixel-registered, unit-flux stamps
  of bright isolated stars of an exposure;
* :func:`shifted_psf`: the PSF moved by a sub-pixel offset, and its derivatives
  (Fourier shift theorem), for PSF fits;
* :func:`difference_psf`: the science PSF for the difference, from the exposure's model,
  the kernel candidates, or the measured FWHM (:func:`pixel_corrected_gaussian`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import erf

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.dia.filtering import robust_sigma
from psfmatch.errors import PsfModelError
from psfmatch.exposure import Exposure
from psfmatch.moments import adaptive_moments, moments_fwhm

__all__ = ["difference_psf", "empirical_psf", "gaussian_psf_image",
           "pixel_corrected_gaussian", "psf_image", "psf_moments_fwhm", "shifted_psf"]


def _check_image(image: Any, what: str) -> np.ndarray:
    img = np.array(image, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] % 2 == 0 or img.shape[1] % 2 == 0:
        raise PsfModelError(f"{what} must be a 2-D image with odd sides, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise PsfModelError(f"{what} has {int(np.sum(~np.isfinite(img)))} non-finite pixels")
    total = float(img.sum())
    if not total > 0:
        raise PsfModelError(f"{what} must have a positive sum to be normalised, got {total!r}")
    return img / total


def psf_image(psf: Any, x: float | None = None, y: float | None = None) -> np.ndarray:
    """Unit-sum, odd-sized PSF image from an array or a PSF model.

    Parameters
    ----------
    psf : array_like or PsfModel
        A 2-D image (odd sides, finite, positive sum; it is copied and divided by its
        sum) or an object with ``image_at(x, y)``.
    x, y : float, optional
        Parent position at which a model is evaluated (required for a model).

    Raises
    ------
    PsfModelError
        If the image is not odd-sized, has non-finite pixels or a sum <= 0, or a model
        is given without a position.
    """
    if hasattr(psf, "image_at"):
        if x is None or y is None:
            raise PsfModelError("a PSF model needs a position (x, y) to be evaluated")
        return _check_image(psf.image_at(float(x), float(y)), f"PSF model image at ({x}, {y})")
    return _check_image(psf, "PSF image")


def gaussian_psf_image(fwhm: float, *, size: int | None = None) -> np.ndarray:
    """Pixel-integrated circular Gaussian of ``fwhm`` (px), unit sum, centred.

    Pixel ``(i, j)`` (offsets from the centre) holds
    :math:`\\tfrac14 [\\mathrm{erf}(\\tfrac{i+1/2}{\\sqrt2\\sigma}) -
    \\mathrm{erf}(\\tfrac{i-1/2}{\\sqrt2\\sigma})]
    [\\mathrm{erf}(\\tfrac{j+1/2}{\\sqrt2\\sigma}) -
    \\mathrm{erf}(\\tfrac{j-1/2}{\\sqrt2\\sigma})]`, :math:`\\sigma = \\mathrm{FWHM} /
    2\\sqrt{2\\ln 2}`, renormalised to unit sum on the stamp. ``size`` (odd) defaults to
    ``2 ceil(4 sigma) + 1`` (at least 5).

    Raises
    ------
    PsfModelError
        If ``fwhm`` is not a positive finite number or ``size`` is not a positive odd
        integer.
    """
    if not (isinstance(fwhm, int | float | np.floating) and math.isfinite(fwhm) and fwhm > 0):
        raise PsfModelError(f"PSF fwhm must be a positive finite number, got {fwhm!r}")
    sigma = float(fwhm) / SIGMA_TO_FWHM
    if size is None:
        size = max(5, 2 * math.ceil(4.0 * sigma) + 1)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1 \
            or size % 2 == 0:
        raise PsfModelError(f"PSF size must be a positive odd integer, got {size!r}")
    off = np.arange(size, dtype=np.float64) - size // 2
    z = 1.0 / (math.sqrt(2.0) * sigma)
    prof = 0.5 * (erf((off + 0.5) * z) - erf((off - 0.5) * z))
    img = np.outer(prof, prof)
    return img / img.sum()


def psf_moments_fwhm(psf: np.ndarray) -> float:
    """Trace-radius FWHM (px) of a PSF image from its adaptive second moments.

    :math:`2\\sqrt{2\\ln2}\\,\\sqrt{(I_{xx} + I_{yy})/2}` with Gaussian-weighted
    (adaptive) moments, insensitive to the stamp size; falls back to unweighted moments
    when the adaptive iteration fails.
    """
    img = np.asarray(psf, dtype=np.float64)
    with np.errstate(over="ignore"):
        cov, _, ok = adaptive_moments(img[None], initial_sigma=1.5)
    if ok[0]:
        return float(SIGMA_TO_FWHM * math.sqrt(max(0.5 * (cov[0, 0] + cov[0, 1]), 0.0)))
    return moments_fwhm(img)


def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.fftfreq(shape[1])[None, :], np.fft.fftfreq(shape[0])[:, None]


def shifted_psf(psf: np.ndarray, dx: float, dy: float, *,
                derivatives: bool = True) -> tuple[np.ndarray, ...]:
    """The PSF image moved by ``(dx, dy)`` px, and its derivatives in ``dx`` and ``dy``.

    Fourier shift theorem on the (odd-sized, so Nyquist-free) stamp:
    :math:`\\hat P_s = \\hat P\\, e^{-2\\pi i (f_x d_x + f_y d_y)}` and
    :math:`\\partial P_s / \\partial d_x = \\mathcal F^{-1}[-2\\pi i f_x \\hat P_s]`
    (exact for a band-limited PSF; the stamp wraps around, so it should have a margin
    of a few pixels of near-zero wings).

    Returns
    -------
    image, d_dx, d_dy : numpy.ndarray
        Same shape as ``psf``; the derivatives are ``None`` unless ``derivatives``.
    """
    p = np.asarray(psf, dtype=np.float64)
    fx, fy = _frequencies(p.shape)
    ft = np.fft.fft2(p) * np.exp(-2j * np.pi * (fx * dx + fy * dy))
    image = np.fft.ifft2(ft).real
    if not derivatives:
        return image, None, None
    d_dx = np.fft.ifft2(-2j * np.pi * fx * ft).real
    d_dy = np.fft.ifft2(-2j * np.pi * fy * ft).real
    return image, d_dx, d_dy


def empirical_psf(
    exposure: Exposure,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    size: int,
    max_stars: int = 100,
    min_separation: float | None = None,
    bad_planes: Sequence[str] = ("NO_DATA", "BAD", "SAT", "EDGE", "CR", "INTRP"),
) -> tuple[np.ndarray, int]:
    """PSF image stacked from bright isolated stars at given parent positions.

    For each usable star (finite position, no other position within
    ``min_separation``, stamp inside the image and free of ``bad_planes`` and
    non-finite pixels) a ``size + 4`` stamp around ``round(x), round(y)`` has the median
    of its two-pixel border subtracted, is centred on its adaptive-moment centroid by a
    Fourier shift, trimmed to ``size`` and divided by its sum :math:`F_i`; the result is
    the inverse-variance weighted mean of these unit-flux stamps (weights
    :math:`(F_i/\\sigma_i)^2`, :math:`\\sigma_i` the robust sky noise of the stamp
    border; pixels more than :math:`5\\sigma_i/F_i` from the pixel-wise median are left
    out), renormalised to unit sum. The exposure is only read.

    Parameters
    ----------
    exposure : Exposure
        Image holding the stars (science for a template-convolved difference).
    x, y : array_like
        Parent positions of candidate stars, brightest first (the first ``max_stars``
        usable ones are stacked); unsaturated point sources.
    size : int
        Odd side of the output image.
    max_stars : int
        Most stars stacked.
    min_separation : float or None
        Isolation radius (px); ``None`` means ``size``.
    bad_planes : sequence of str
        Stamps touching these mask planes are skipped.

    Returns
    -------
    psf : numpy.ndarray
        ``(size, size)`` unit-sum image.
    n_used : int
        Number of stars stacked.

    Raises
    ------
    PsfModelError
        If ``size`` is not odd and >= 5, or fewer than 3 stars are usable (the message
        gives the count after each cut).
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 5 \
            or size % 2 == 0:
        raise PsfModelError(f"empirical PSF size must be an odd integer >= 5, got {size!r}")
    xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if xs.shape != ys.shape or xs.ndim != 1:
        raise PsfModelError(f"x and y must be 1-D of equal length, got {xs.shape}, {ys.shape}")
    sep = float(size if min_separation is None else min_separation)
    counts = {"given": int(xs.size)}
    keep = np.isfinite(xs) & np.isfinite(ys)
    if sep > 0 and xs.size > 1:
        d2 = (xs[:, None] - xs[None, :]) ** 2 + (ys[:, None] - ys[None, :]) ** 2
        np.fill_diagonal(d2, np.inf)
        keep &= ~np.any(d2 < sep * sep, axis=1)
    counts["isolated"] = int(keep.sum())
    half = size // 2 + 2
    ny, nx = exposure.shape
    col = np.rint(np.where(keep, xs, 0.0)).astype(np.int64) - exposure.xy0[0]
    row = np.rint(np.where(keep, ys, 0.0)).astype(np.int64) - exposure.xy0[1]
    keep &= (col - half >= 0) & (col + half < nx) & (row - half >= 0) & (row + half < ny)
    counts["inside"] = int(keep.sum())
    bad = ~np.isfinite(exposure.image) | ((exposure.mask & exposure.plane_bitmask(bad_planes)) != 0)
    stamps, noise = [], []
    for i in np.flatnonzero(keep):
        sl = (slice(row[i] - half, row[i] + half + 1), slice(col[i] - half, col[i] + half + 1))
        if bad[sl].any():
            continue
        stamp = exposure.image[sl].astype(np.float64)
        border = np.ones(stamp.shape, dtype=bool)
        border[2:-2, 2:-2] = False
        sky_noise = robust_sigma(stamp[border])
        stamp = stamp - np.median(stamp[border])
        with np.errstate(over="ignore"):
            _, centroid, ok = adaptive_moments(stamp[None])
        if not ok[0]:
            continue
        moved, _, _ = shifted_psf(stamp, -centroid[0, 0], -centroid[0, 1], derivatives=False)
        moved = moved[2:-2, 2:-2]
        total = moved.sum()
        if total > 0 and sky_noise > 0:
            stamps.append(moved / total)
            noise.append(sky_noise / total)
        if len(stamps) >= max_stars:
            break
    counts["stacked"] = len(stamps)
    if len(stamps) < 3:
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        raise PsfModelError(f"fewer than 3 usable stars for an empirical PSF: {detail}")
    stack = np.stack(stamps)
    sigma = np.asarray(noise)[:, None, None]
    # pixels more than 5 sigma from the median (a neighbour, a cosmic ray) are left out
    keep = np.abs(stack - np.median(stack, axis=0)) <= 5.0 * sigma
    weight = np.where(keep, 1.0 / sigma**2, 0.0)
    psf = (weight * stack).sum(axis=0) / np.maximum(weight.sum(axis=0), 1e-300)
    return psf / psf.sum(), len(stamps)


def pixel_corrected_gaussian(measured_fwhm: float, *, size: int | None = None) -> np.ndarray:
    """Pixel-integrated Gaussian whose pixelised FWHM is ``measured_fwhm`` (px).

    A FWHM measured by adaptive moments on pixel data includes the pixel box, which
    adds :math:`1/12` px² to the variance per axis; the underlying Gaussian has
    :math:`\\sigma^2 = (\\mathrm{FWHM}/2\\sqrt{2\\ln 2})^2 - 1/12`, and
    :func:`gaussian_psf_image` integrates it over the pixels again (exact for unweighted
    moments; the adaptive-moment FWHM of the result is ``measured_fwhm`` within 1e-3
    from 2.5 px, 2.4 % smaller at 2 px).

    Raises
    ------
    PsfModelError
        If ``measured_fwhm`` is not finite or leaves no positive variance.
    """
    value = float(measured_fwhm) if isinstance(measured_fwhm, int | float | np.floating) \
        else math.nan
    var = (value / SIGMA_TO_FWHM) ** 2 - 1.0 / 12.0 if math.isfinite(value) else math.nan
    if not var > 0:
        raise PsfModelError(f"a measured PSF FWHM of {measured_fwhm!r} px leaves no Gaussian "
                            "once the pixel (variance 1/12 px²) is taken out")
    return gaussian_psf_image(SIGMA_TO_FWHM * math.sqrt(var), size=size)


def difference_psf(
    science: Exposure,
    *,
    source: str,
    fwhm: float,
    star_x: Sequence[float] | np.ndarray = (),
    star_y: Sequence[float] | np.ndarray = (),
) -> tuple[Any, dict[str, Any]]:
    """The PSF of a template-convolved difference (the science PSF), by ``source``.

    ``source`` is ``"model"`` (the science exposure's PSF model, evaluated per source),
    ``"empirical"`` (:func:`empirical_psf` of the stars at ``star_x``, ``star_y`` on
    the science image, brightest first, isolated by 3 FWHM), ``"gaussian"``
    (:func:`pixel_corrected_gaussian` of ``fwhm``, the science FWHM measured on pixel
    data) or ``"auto"``: the model if there is one, else the Gaussian. ``auto`` passes
    over the stack because it is fragile in crowded fields: neighbours that are not in
    the star list broaden it and the :math:`(F/\\sigma)^2` weights let a few bright stars
    set its shape where the PSF varies (on a simulated 512² pair with 2 200 stars, PSF
    fluxes of transients came out 5.6 % high with the stack, 0.1 % low with the
    Gaussian, 0.15 % high with the true PSF). Stamps are ``2 ceil(2.5 FWHM) + 1`` px on
    a side (at least 15), which holds the PSF out to ~3 FWHM. The exposure is only read.

    Returns
    -------
    psf : numpy.ndarray or PsfModel
        What :func:`psfmatch.dia.detect_and_measure` takes.
    info : dict
        ``requested``, ``source`` (what was used), ``fwhm`` (px, adaptive moments of the
        image at the centre), ``n_stars`` (stacked, empirical only) and ``fallback``
        (why ``auto`` passed over the model, if it did).

    Raises
    ------
    PsfModelError
        If the requested source cannot be made (no model, fewer than 3 usable stars, a
        bad FWHM), naming it.
    """
    if source not in ("auto", "model", "empirical", "gaussian"):
        raise PsfModelError(f"unknown PSF source {source!r}")
    size = max(15, 2 * math.ceil(2.5 * fwhm) + 1) if math.isfinite(fwhm) and fwhm > 0 else 25
    info: dict[str, Any] = {"requested": source, "n_stars": 0}
    fallback = []
    if source in ("auto", "model"):
        if science.psf is not None:
            ny, nx = science.shape
            image = psf_image(science.psf, science.xy0[0] + 0.5 * (nx - 1),
                              science.xy0[1] + 0.5 * (ny - 1))
            return science.psf, {**info, "source": "model", "fwhm": psf_moments_fwhm(image)}
        if source == "model":
            raise PsfModelError("dia_sources.psf_source is 'model' but the science exposure "
                                "has no PSF model")
        fallback.append("model: the science exposure has no PSF model")
    if source == "empirical":
        image, n_used = empirical_psf(science, star_x, star_y, size=size,
                                      min_separation=3.0 * fwhm if fwhm > 0 else None)
        return image, {**info, "source": "empirical", "n_stars": n_used,
                       "fwhm": psf_moments_fwhm(image)}
    image = pixel_corrected_gaussian(fwhm, size=size)
    return image, {**info, "source": "gaussian", "fwhm": psf_moments_fwhm(image),
                   **({"fallback": fallback} if fallback else {})}
