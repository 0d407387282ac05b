"""Source detection for kernel candidates and PSF-width measurement on stars.

Everything here takes arrays or an :class:`~psfmatch.exposure.Exposure` and returns
plain numpy columns; no file I/O (:mod:`psfmatch.io` does files).

* :func:`detect_candidates` follows ip_diffim's historical ``KernelCandidateDetection``
  (docs/candidates.md#detection): background subtraction, positive threshold of one of the
  four ``detThresholdType`` kinds, minimum footprint area ``fpNpixMin``, and footprints
  larger than ``fpNpixMax`` replaced by the single pixel at their bbox centre.
* :func:`measure_fwhm` measures a PSF FWHM (trace radius, docs/candidates.md#fwhm) from adaptive
  second moments of stars, for images that carry no PSF model.

All positions are *parent* pixel coordinates: ``x = column + xy0[0]``,
``y = row + xy0[1]``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import PsfMatchError
from psfmatch.exposure import Exposure
from psfmatch.moments import adaptive_moments

__all__ = [
    "CANDIDATE_COLUMNS",
    "THRESHOLD_TYPES",
    "DetectionError",
    "detect_candidates",
    "measure_fwhm",
]

log = logging.getLogger("psfmatch.detect")

#: ip_diffim ``detThresholdType`` values.
THRESHOLD_TYPES = ("value", "stdev", "variance", "pixel_stdev")

#: Columns of :func:`detect_candidates` output and their dtypes.
CANDIDATE_COLUMNS: dict[str, type] = {
    "id": np.int64,
    "x": np.float64,
    "y": np.float64,
    "flux": np.float64,
    "flux_err": np.float64,
    "snr": np.float64,
    "area": np.int64,
    "peak": np.float64,
    "replaced": np.bool_,
}


class DetectionError(PsfMatchError, ValueError):
    """Detection or PSF measurement cannot proceed (bad option, too few stars)."""


def _empty_candidates() -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype=dtype) for name, dtype in CANDIDATE_COLUMNS.items()}


def _bad_pixels(exposure: Exposure, planes: Iterable[str]) -> np.ndarray:
    """Pixels with any of ``planes`` set, or a non-finite image or variance value."""
    bits = exposure.plane_bitmask(planes)
    bad = ~np.isfinite(exposure.image) | ~np.isfinite(exposure.variance)
    if bits:
        bad |= (exposure.mask & bits) != 0
    return bad


def _subtract_background(image: np.ndarray, bad: np.ndarray, box_size: int) -> np.ndarray:
    """Return ``image - background`` (new array); ``image`` is not modified."""
    # photutils is imported where it is used: about 100 MB and 0.3 s at start-up that
    # the warp and select jobs (which share psfmatch.steps.prepare) do not need.
    from photutils.background import Background2D, MedianBackground

    data = image.astype(np.float64)
    data[bad] = 0.0
    box = (min(int(box_size), data.shape[0]), min(int(box_size), data.shape[1]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            bkg = Background2D(
                data, box, mask=bad, bkg_estimator=MedianBackground(), sigma_clip=None
            ).background
        if not np.all(np.isfinite(bkg)):
            raise ValueError("non-finite background")
    except ValueError as exc:
        # ip_diffim's fallback (docs/candidates.md#detection): a scalar median of the
        # unflagged pixels.
        good = data[~bad]
        level = float(np.median(good)) if good.size else 0.0
        log.warning("Background2D failed (%s); using the median %.4g instead", exc, level)
        bkg = level
    data -= bkg  # in place: the same values as a new array
    del bkg
    data[bad] = 0.0
    return data


def _threshold_image(data: np.ndarray, sigma: np.ndarray, bad: np.ndarray,
                     threshold: float, threshold_type: str) -> np.ndarray | float:
    """Threshold in counts (scalar or per-pixel) with ip_diffim semantics.

    ``sigma``: the square root of the variance plane, 0 on ``bad`` pixels.
    """
    if threshold_type == "value":
        return float(threshold)
    if threshold_type == "pixel_stdev":
        return float(threshold) * sigma
    good = data[~bad]
    if good.size < 2:
        msg = (f"threshold_type={threshold_type!r} needs image statistics but only "
               f"{good.size} usable pixel(s) remain")
        raise DetectionError(msg)
    from astropy.stats import sigma_clipped_stats

    _, _, std = sigma_clipped_stats(good, sigma=3.0, maxiters=5)
    if threshold_type == "stdev":
        return float(threshold) * float(std)
    return float(threshold) * float(std) ** 2  # "variance"


def detect_candidates(
    exposure: Exposure,
    *,
    threshold: float = 10.0,
    threshold_type: str = "pixel_stdev",
    n_pixels_min: int = 5,
    n_pixels_max: int = 500,
    background_box_size: int = 64,
    bad_mask_planes: Sequence[str] = ("NO_DATA", "EDGE", "SAT"),
) -> dict[str, np.ndarray]:
    """Detect positive sources as kernel candidates (ip_diffim ``DetectionConfig``).

    A background (photutils ``Background2D``, ``background_box_size`` boxes, bad and
    non-finite pixels excluded) is subtracted from a copy of the image; pixels above the
    threshold are segmented with 8-connectivity and a minimum area of ``n_pixels_min``;
    bad and non-finite pixels never belong to a detection.

    Parameters
    ----------
    exposure : Exposure
        Image to detect on (not modified).
    threshold : float
        Detection threshold (``detThreshold``), interpreted per ``threshold_type``.
    threshold_type : {"pixel_stdev", "stdev", "variance", "value"}
        ``"value"``: counts; ``"stdev"``: times the sigma-clipped standard deviation of
        the background-subtracted image; ``"variance"``: times its sigma-clipped
        variance (ip_diffim semantics, dimensionally odd but faithful);
        ``"pixel_stdev"``: times ``sqrt(variance plane)`` pixel by pixel.
    n_pixels_min : int
        Minimum footprint area (``fpNpixMin``).
    n_pixels_max : int
        Footprints with a larger area (``fpNpixMax``) are replaced by the single pixel at
        the centre of their bbox: ``(min + max) / 2`` in parent coordinates with C++
        integer division; their ``x``, ``y`` become that pixel and ``replaced`` is True
        (flux and other measurements are kept).
    background_box_size : int
        Box size (px) of the background mesh (clipped to the image size).
    bad_mask_planes : sequence of str
        Mask planes whose pixels are excluded from background, detection and measurement
        (planes absent from the exposure are ignored).

    Returns
    -------
    dict of str to numpy.ndarray
        Columns ``id`` (int64, 1..N by decreasing flux, ties by ``y`` then ``x``), ``x``,
        ``y`` (parent centroid, float64), ``flux``, ``flux_err`` (sum over the footprint,
        error from the variance plane), ``snr`` (``flux / flux_err``), ``area`` (int64,
        px), ``peak`` (background-subtracted maximum), ``replaced`` (bool). All columns
        exist with length 0 when nothing is detected.

    Raises
    ------
    DetectionError
        For an unknown ``threshold_type``, a non-positive ``n_pixels_min``,
        ``n_pixels_max < n_pixels_min`` or ``background_box_size < 1``.
    """
    from photutils.segmentation import SourceCatalog, detect_sources  # see _subtract_background
    from photutils.utils.exceptions import NoDetectionsWarning

    if threshold_type not in THRESHOLD_TYPES:
        msg = f"threshold_type must be one of {THRESHOLD_TYPES}, got {threshold_type!r}"
        raise DetectionError(msg)
    if int(n_pixels_min) < 1:
        raise DetectionError(f"n_pixels_min must be >= 1, got {n_pixels_min!r}")
    if int(n_pixels_max) < int(n_pixels_min):
        msg = f"n_pixels_max={n_pixels_max!r} must be >= n_pixels_min={n_pixels_min!r}"
        raise DetectionError(msg)
    if int(background_box_size) < 1:
        raise DetectionError(f"background_box_size must be >= 1, got {background_box_size!r}")
    if not np.isfinite(threshold):
        raise DetectionError(f"threshold must be finite, got {threshold!r}")

    bad = _bad_pixels(exposure, bad_mask_planes)
    data = _subtract_background(exposure.image, bad, background_box_size)
    bad |= exposure.variance < 0
    # sqrt(variance) with 0 on bad pixels: the per-pixel threshold's and the error's
    error = exposure.variance.astype(np.float64)
    error[bad] = 0.0
    np.sqrt(error, out=error)
    thresh = _threshold_image(data, error, bad, threshold, threshold_type)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=NoDetectionsWarning)
        segm = detect_sources(data, thresh, int(n_pixels_min), connectivity=8, mask=bad)
    del thresh
    if segm is None or segm.n_labels == 0:
        log.info("detected 0 sources (threshold %g %s, n_pixels_min %d)",
                 threshold, threshold_type, n_pixels_min)
        return _empty_candidates()

    cat = SourceCatalog(data, segm, error=error, mask=bad)
    x0, y0 = exposure.xy0
    x = np.asarray(cat.x_centroid, dtype=np.float64) + x0
    y = np.asarray(cat.y_centroid, dtype=np.float64) + y0
    flux = np.asarray(cat.segment_flux, dtype=np.float64)
    flux_err = np.asarray(cat.segment_flux_err, dtype=np.float64)
    area = np.rint(np.asarray(getattr(cat.area, "value", cat.area), dtype=np.float64))
    area = area.astype(np.int64)
    peak = np.asarray(cat.max_value, dtype=np.float64)
    replaced = area > int(n_pixels_max)
    if replaced.any():
        xmin = np.asarray(cat.bbox_xmin, dtype=np.int64) + x0
        xmax = np.asarray(cat.bbox_xmax, dtype=np.int64) + x0
        ymin = np.asarray(cat.bbox_ymin, dtype=np.int64) + y0
        ymax = np.asarray(cat.bbox_ymax, dtype=np.int64) + y0
        # C++ integer division truncates toward zero (matters only for negative parents).
        xc = np.fix((xmin + xmax) / 2.0)
        yc = np.fix((ymin + ymax) / 2.0)
        x = np.where(replaced, xc, x)
        y = np.where(replaced, yc, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(flux_err > 0, flux / flux_err, np.nan)

    order = np.lexsort((x, y, -flux))
    out = {
        "x": x, "y": y, "flux": flux, "flux_err": flux_err, "snr": snr, "area": area,
        "peak": peak, "replaced": replaced,
    }
    out = {k: np.ascontiguousarray(v[order], dtype=CANDIDATE_COLUMNS[k]) for k, v in out.items()}
    out = {"id": np.arange(1, order.size + 1, dtype=np.int64), **out}
    log.info("detected %d sources (threshold %g %s, n_pixels_min %d); %d footprints > %d px "
             "replaced by their bbox centre", order.size, threshold, threshold_type,
             n_pixels_min, int(replaced.sum()), n_pixels_max)
    return out


def measure_fwhm(
    exposure: Exposure,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    half_width: int = 15,
    max_stars: int = 100,
    min_separation: float | None = None,
    pixel_variance: float = 0.0,
    bad_mask_planes: Sequence[str] = ("NO_DATA", "EDGE", "SAT", "BAD", "CR"),
) -> tuple[float, int]:
    """PSF FWHM (px) from adaptive second moments of stars at given parent positions.

    Each star's stamp ``(2 half_width + 1)**2`` around ``floor(x + 0.5)``,
    ``floor(y + 0.5)`` has the median of its two-pixel border subtracted and is measured
    with :func:`adaptive_moments`; the result is the median over stars of the trace
    radius ``SIGMA_TO_FWHM * sqrt((Ixx + Iyy) / 2 - pixel_variance)`` (docs/candidates.md#fwhm).

    Parameters
    ----------
    exposure : Exposure
        Image holding the stars.
    x, y : array_like
        Parent positions, preferably bright unsaturated stars in order of preference
        (the first ``max_stars`` usable ones are measured).
    half_width : int
        Stamp half width (px).
    max_stars : int
        Maximum number of stars measured.
    min_separation : float or None
        Positions with another position closer than this (px) are skipped; ``None``
        means ``2 * half_width``; 0 disables the isolation cut.
    pixel_variance : float
        Subtracted from the per-axis variance before converting: 0 keeps the pixel
        response in the FWHM (as a PSF model of the image would), 1/12 removes a
        square-pixel box (the intrinsic FWHM of pixel-integrated stars).
    bad_mask_planes : sequence of str
        Stamps with any of these planes set (or non-finite pixels) are skipped.

    Returns
    -------
    fwhm : float
        Median FWHM (px).
    n_used : int
        Number of stars that contributed.

    Raises
    ------
    DetectionError
        If ``x`` and ``y`` differ in length, options are out of range, or fewer than 3
        stars are usable (the message gives the count left after each cut).
    """
    xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if xs.shape != ys.shape or xs.ndim != 1:
        raise DetectionError(f"x and y must be 1-D of equal length, got {xs.shape} and {ys.shape}")
    if int(half_width) < 2:
        raise DetectionError(f"half_width must be >= 2, got {half_width!r}")
    if int(max_stars) < 3:
        raise DetectionError(f"max_stars must be >= 3, got {max_stars!r}")
    hw = int(half_width)
    sep = 2.0 * hw if min_separation is None else float(min_separation)
    counts = {"given": xs.size}

    keep = np.isfinite(xs) & np.isfinite(ys)
    counts["finite"] = int(keep.sum())
    if sep > 0 and xs.size > 1:
        pts = np.column_stack([np.where(keep, xs, 1e300), np.where(keep, ys, 1e300)])
        from scipy.spatial import cKDTree

        pairs = cKDTree(pts).query_pairs(sep, output_type="ndarray")
        crowded = np.zeros(xs.size, dtype=bool)
        crowded[pairs.ravel()] = True
        keep &= ~crowded
    counts["isolated"] = int(keep.sum())

    ny, nx = exposure.shape
    col = np.floor(np.where(keep, xs, 0.0) + 0.5).astype(np.int64) - exposure.xy0[0]
    row = np.floor(np.where(keep, ys, 0.0) + 0.5).astype(np.int64) - exposure.xy0[1]
    keep &= (col - hw >= 0) & (col + hw < nx) & (row - hw >= 0) & (row + hw < ny)
    counts["inside"] = int(keep.sum())

    idx = np.flatnonzero(keep)
    offs = np.arange(-hw, hw + 1)
    rr = row[idx, None, None] + offs[None, :, None]
    cc = col[idx, None, None] + offs[None, None, :]
    bits = exposure.plane_bitmask(bad_mask_planes)
    bad = ~np.isfinite(exposure.image[rr, cc]) | ~np.isfinite(exposure.variance[rr, cc])
    if bits:
        bad |= (exposure.mask[rr, cc] & bits) != 0
    clean = ~bad.any(axis=(1, 2))
    idx = idx[clean][: int(max_stars)]
    counts["clean"] = int(clean.sum())
    stamps = exposure.image[rr[clean][: idx.size], cc[clean][: idx.size]].astype(np.float64)

    if idx.size:
        border = np.ones(stamps.shape[1:], dtype=bool)
        border[2:-2, 2:-2] = False
        stamps -= np.median(stamps[:, border], axis=1)[:, None, None]
        cov, _, ok = adaptive_moments(stamps)
        var = 0.5 * (cov[:, 0] + cov[:, 1]) - float(pixel_variance)
        ok &= var > 0
    else:
        ok = np.zeros(0, dtype=bool)
        var = np.zeros(0)
    counts["measured"] = int(ok.sum())
    if counts["measured"] < 3:
        msg = ("fewer than 3 usable stars for the FWHM: "
               + ", ".join(f"{k} {v}" for k, v in counts.items())
               + f" (half_width {hw}, bad_mask_planes {list(bad_mask_planes)})")
        raise DetectionError(msg)
    fwhm = float(SIGMA_TO_FWHM * np.median(np.sqrt(var[ok])))
    log.info("FWHM %.3f px from %d stars (%s)", fwhm, counts["measured"],
             ", ".join(f"{k} {v}" for k, v in counts.items()))
    return fwhm, counts["measured"]
