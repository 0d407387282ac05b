"""Detect and measure DIA sources on one difference image: the catalogue as columns.

:func:`detect_and_measure` chains :mod:`~psfmatch.dia.filtering` (PSF-matched filter
in S/N units), :mod:`~psfmatch.dia.gate` (bad-subtraction check),
:mod:`~psfmatch.dia.footprints` (footprints, peaks, rejection, mask flags),
:mod:`~psfmatch.dia.measure` (centroid, PSF flux, shape, forced fluxes) and
:mod:`~psfmatch.dia.dipole` (+/- pairs) and returns a :class:`DiaCatalogue`: a dict of
numpy columns (:data:`COLUMNS`), their units, the flag bits and run metadata. Positions
are 0-based *parent* pixels (array index + ``xy0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psfmatch.config.dia import DiaOptions
from psfmatch.dia.dipole import fit_dipole, pair_peaks
from psfmatch.dia.filtering import matched_filter, noise_peak_density
from psfmatch.dia.flags import FLAG_BITS, FLAG_DESCRIPTIONS
from psfmatch.dia.footprints import (
    component_shapes,
    find_detections,
    footprint_flags,
    reject_peaks,
)
from psfmatch.dia.gate import check_subtraction, footprint_power_ratios, subtraction_quality
from psfmatch.dia.measure import PixelData, fit_psf, linear_psf_flux, refine_peak, shapes
from psfmatch.dia.psf import psf_image, psf_moments_fwhm
from psfmatch.errors import ExposureError
from psfmatch.exposure import Exposure

__all__ = ["COLUMNS", "DiaCatalogue", "detect_and_measure", "empty_columns", "forced_psf_flux"]

#: Column -> (dtype, unit, description). Unit ``"flux"`` stands for the image unit
#: (the difference's ``BUNIT`` card, else ``"adu"``).
COLUMNS: dict[str, tuple[type, str, str]] = {
    "id": (np.int64, "", "1..N by decreasing |snr|"),
    "x": (np.float64, "pix", "0-based parent column of the PSF-fit centroid"),
    "y": (np.float64, "pix", "0-based parent row of the PSF-fit centroid"),
    "ra": (np.float64, "deg", "right ascension from the given WCS (NaN without one)"),
    "dec": (np.float64, "deg", "declination from the given WCS (NaN without one)"),
    "psf_flux": (np.float64, "flux", "PSF-fit flux on the difference (negative: fading)"),
    "psf_flux_err": (np.float64, "flux", "1-sigma error of psf_flux"),
    "snr": (np.float64, "", "psf_flux / psf_flux_err (signed)"),
    "peak_snr": (np.float64, "", "filtered S/N at the detection peak (signed)"),
    "is_negative": (np.bool_, "", "psf_flux < 0"),
    "is_dipole": (np.bool_, "", "a positive and a negative lobe fitted as one dipole"),
    "flags": (np.int64, "", "bit mask, bit names in flag_bits"),
    "science_flux": (np.float64, "flux", "forced PSF flux on the science image"),
    "science_flux_err": (np.float64, "flux", "1-sigma error of science_flux"),
    "template_flux": (np.float64, "flux", "forced PSF flux on the matched template"),
    "template_flux_err": (np.float64, "flux", "1-sigma error of template_flux"),
    "shape_xx": (np.float64, "pix2", "adaptive second moment Ixx of the difference "
                 "(NaN for dipoles)"),
    "shape_yy": (np.float64, "pix2", "adaptive second moment Iyy"),
    "shape_xy": (np.float64, "pix2", "adaptive second moment Ixy"),
    "footprint_id": (np.int64, "", "id of the (grown) footprint holding the peak"),
    "footprint_area": (np.int64, "pix", "pixels above threshold in the footprint(s)"),
    "elongation": (np.float64, "", "axis ratio of the S/N-weighted moments of the peak's "
                   "connected above-threshold region"),
    "dipole_pos_flux": (np.float64, "flux", "positive-lobe flux of a dipole (NaN if none)"),
    "dipole_pos_flux_err": (np.float64, "flux", "its error"),
    "dipole_neg_flux": (np.float64, "flux", "negative-lobe flux magnitude (>= 0)"),
    "dipole_neg_flux_err": (np.float64, "flux", "its error"),
    "dipole_separation": (np.float64, "pix", "distance between the lobes"),
    "dipole_angle": (np.float64, "deg", "direction negative -> positive lobe, from +x"),
}


def empty_columns() -> dict[str, np.ndarray]:
    """Every column of :data:`COLUMNS` with length 0."""
    return {name: np.zeros(0, dtype=dtype) for name, (dtype, _, _) in COLUMNS.items()}


@dataclass(frozen=True, eq=False)
class DiaCatalogue:
    """DIA sources of one difference image.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        One entry per :data:`COLUMNS` name, all the same length (0 when nothing is
        detected: the schema is kept).
    units : dict of str to str
        Unit of each column (``""`` for dimensionless).
    descriptions : dict of str to str
        One line per column.
    flag_bits : dict of str to int
        Flag name -> bit index of ``flags``.
    metadata : dict
        Detection numbers: threshold, PSF FWHM, noise scales, the quality-gate numbers,
        footprint and peak counts, rejections per plane, dipoles, the noise-only
        expectation of peaks.
    """

    columns: dict[str, np.ndarray]
    units: dict[str, str]
    descriptions: dict[str, str] = field(default_factory=dict)
    flag_bits: dict[str, int] = field(default_factory=lambda: dict(FLAG_BITS))
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.columns["id"].size)


def _units(difference: Exposure) -> dict[str, str]:
    flux = str(difference.metadata.get("BUNIT", "adu")).strip() or "adu"
    return {k: (flux if u == "flux" else u) for k, (_, u, _) in COLUMNS.items()}


def _check_frame(name: str, exp: Exposure | None, difference: Exposure) -> None:
    if exp is not None and (exp.shape != difference.shape or exp.xy0 != difference.xy0):
        raise ExposureError(f"{name} (shape {exp.shape}, xy0 {exp.xy0}) is not on the "
                            f"difference's grid (shape {difference.shape}, xy0 {difference.xy0})")


def _forced(pix: PixelData | None, psfs: list[np.ndarray], x, y) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """PSF fluxes at fixed positions (``psfs[i]``: the PSF image at ``(x[i], y[i])``)."""
    n = len(x)
    flux, err = np.full(n, np.nan), np.full(n, np.nan)
    if pix is not None:
        for i in range(n):
            flux[i], err[i] = linear_psf_flux(pix, psfs[i], x[i], y[i])
    return flux, err


@dataclass(eq=False)
class _Rows:
    """Per-peak working columns (array coordinates) while dipoles are merged."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    err: np.ndarray
    flags: np.ndarray
    area: np.ndarray
    fp_id: np.ndarray
    peak: np.ndarray
    comp: np.ndarray
    is_dipole: np.ndarray = field(init=False)
    keep: np.ndarray = field(init=False)
    dipole: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        n = self.x.size
        self.is_dipole = np.zeros(n, dtype=bool)
        self.keep = np.ones(n, dtype=bool)
        self.dipole = {k: np.full(n, np.nan) for k in (
            "pos_flux", "pos_flux_err", "neg_flux", "neg_flux_err", "separation", "angle")}


def _merge_dipoles(rows: _Rows, pix: PixelData, psf_at, dets, *, max_separation: float,
                   min_flux_ratio: float) -> None:
    """Fit each +/- peak pair as a dipole; merge the pairs that are (in place).

    A merged pair keeps the positive peak's row: position at the lobes' midpoint, PSF
    flux there (the net flux), flags and areas of both, the dipole columns; the
    negative row is dropped. A failed fit flags both peaks ``DIPOLE_FIT_FAILED``.
    """
    centroid_failed = 1 << FLAG_BITS["CENTROID_FAILED"]
    x, y, flux = rows.x, rows.y, rows.flux
    for ip, ineg in pair_peaks(x, y, dets.sign, max_separation):
        fit = fit_dipole(pix, psf_at(0.5 * (x[ip] + x[ineg]), 0.5 * (y[ip] + y[ineg])),
                         (x[ip], y[ip], abs(flux[ip])), (x[ineg], y[ineg], abs(flux[ineg])),
                         max_separation=max_separation)
        if not fit.ok:
            rows.flags[[ip, ineg]] |= 1 << FLAG_BITS["DIPOLE_FIT_FAILED"]
            continue
        if fit.flux_ratio < min_flux_ratio:
            continue
        rows.keep[ineg] = False
        main = ip if abs(rows.peak[ip]) >= abs(rows.peak[ineg]) else ineg
        x[ip], y[ip] = 0.5 * (fit.pos_x + fit.neg_x), 0.5 * (fit.pos_y + fit.neg_y)
        flux[ip], rows.err[ip] = linear_psf_flux(pix, psf_at(x[ip], y[ip]), x[ip], y[ip])
        # the lobes' single-PSF centroids may have failed; the dipole fit placed them
        rows.flags[ip] = (rows.flags[ip] | rows.flags[ineg]) & ~centroid_failed
        if dets.footprint[ip] != dets.footprint[ineg]:
            rows.area[ip] += rows.area[ineg]
        rows.fp_id[ip], rows.peak[ip] = dets.footprint[main], rows.peak[main]
        rows.comp[ip] = rows.comp[main]
        rows.is_dipole[ip] = True
        for k, v in (("pos_flux", fit.pos_flux), ("pos_flux_err", fit.pos_flux_err),
                     ("neg_flux", fit.neg_flux), ("neg_flux_err", fit.neg_flux_err),
                     ("separation", fit.separation), ("angle", fit.angle)):
            rows.dipole[k][ip] = v


def detect_and_measure(
    difference: Exposure,
    psf: Any,
    *,
    science: Exposure | None = None,
    template: Exposure | None = None,
    wcs: Any = None,
    gate_sources: tuple[Any, Any] | None = None,
    options: DiaOptions | None = None,
    label: str = "difference",
) -> DiaCatalogue:
    """Detect and measure DIA sources on a difference image.

    Image, mask and variance of every exposure are only read.

    Parameters
    ----------
    difference : Exposure
        Difference image (science − matched template − background) with its variance
        and mask planes (as :func:`psfmatch.subtract.subtract` makes it). NaN pixels
        are treated as unusable.
    psf : array_like or PsfModel
        PSF of the difference (the science PSF when the template was convolved): an
        odd-sized image (normalised to unit sum) or a model with ``image_at(x, y)``,
        evaluated at the image centre for the filter and at each source for the fits.
    science, template : Exposure, optional
        Science image and matched template on the difference's grid, for the forced
        fluxes ``science_flux`` / ``template_flux`` (NaN when absent).
    wcs : astropy.wcs.WCS, optional
        Maps 0-based array pixels (parent − xy0) to sky, for ``ra``/``dec`` (NaN when
        absent).
    gate_sources : (x, y), optional
        Parent positions of science sources (the kernel candidates) whose footprints
        the bad-subtraction power ratio uses; all science footprints when None.
    options : DiaOptions, optional
        Defaults when None.
    label : str
        Names the pair in errors.

    Returns
    -------
    DiaCatalogue

    Raises
    ------
    BadSubtractionError
        When the quality gate trips (:mod:`psfmatch.dia.gate`; the footprint power
        ratio needs ``science``).
    ExposureError
        When ``science``/``template`` are not on the difference's grid.
    PsfModelError
        For an unusable PSF image.
    """
    opts = options or DiaOptions()
    _check_frame("science", science, difference)
    _check_frame("template", template, difference)
    ny, nx = difference.shape
    ox, oy = difference.xy0
    psf0 = psf_image(psf, ox + 0.5 * (nx - 1), oy + 0.5 * (ny - 1))
    if hasattr(psf, "image_at"):
        def psf_at(x, y):
            return psf_image(psf, x + ox, y + oy)
    else:
        def psf_at(x, y):
            return psf0
    fwhm = psf_moments_fwhm(psf0)
    filtered = matched_filter(
        difference, psf0, exclude_planes=opts.exclude_planes,
        template_variance=None if template is None else template.variance,
        min_psf_coverage=opts.min_psf_coverage, rescale_noise=opts.rescale_noise)
    ratios = None
    if science is not None:
        ratios = footprint_power_ratios(difference, science, psf0,
                                        exclude_planes=opts.exclude_planes,
                                        usable=filtered.usable, sources=gate_sources)
    quality = subtraction_quality(filtered, threshold=opts.threshold, polarity=opts.polarity,
                                  ratios=ratios)
    n_signs = 2 if opts.polarity == "both" else 1
    meta: dict[str, Any] = {
        "label": label, "options": opts.to_dict(), "threshold": opts.threshold,
        "polarity": opts.polarity,
        "psf_fwhm": fwhm, **quality,
        "template_noise_scale": filtered.template_noise_scale,
        "expected_noise_peaks": quality["n_usable"] * n_signs
        * noise_peak_density(opts.threshold, psf0),
    }
    check_subtraction(quality, label=label, max_footprint_ratio=opts.max_footprint_ratio,
                      max_footprint_ratio_std=opts.max_footprint_ratio_std,
                      max_detected_fraction=opts.max_detected_fraction)
    dets = find_detections(filtered, threshold=opts.threshold, polarity=opts.polarity,
                           min_footprint_area=opts.min_footprint_area, grow=opts.grow,
                           peak_radius=max(1, round(opts.peak_separation * fwhm)))
    meta["n_footprints_positive"] = dets.n_footprints["positive"]
    meta["n_footprints_negative"] = dets.n_footprints["negative"]
    meta["n_peaks"] = int(dets.col.size)
    dets, rejected = reject_peaks(dets, difference, opts.reject_planes)
    meta["rejected"] = rejected
    pix = PixelData.from_filtered(difference, filtered)
    fp_flags = footprint_flags(dets, difference, opts.flag_planes)
    elong, major = component_shapes(dets, filtered.snr)
    streak = (elong >= opts.streak_min_elongation) & (major >= fwhm)

    # ---- single-peak measurements (array coordinates)
    n = dets.col.size
    x, y = np.zeros(n), np.zeros(n)
    flux, err = np.full(n, np.nan), np.full(n, np.nan)
    flags = fp_flags[dets.footprint].astype(np.int64) if n else np.zeros(0, np.int64)
    comp = dets.components[dets.row, dets.col]
    flags |= np.where(streak[comp], 1 << FLAG_BITS["STREAK"], 0)
    for i in range(n):
        ddx, ddy = refine_peak(filtered.snr, int(dets.row[i]), int(dets.col[i]))
        xp, yp = dets.col[i] + ddx, dets.row[i] + ddy
        p_i = psf_at(xp, yp)
        x[i], y[i], ok = fit_psf(pix, p_i, xp, yp, sign=int(dets.sign[i]),
                                 max_shift=opts.max_centroid_shift * fwhm)
        if not ok:
            flags[i] |= 1 << FLAG_BITS["CENTROID_FAILED"]
        flux[i], err[i] = linear_psf_flux(pix, p_i, x[i], y[i])

    # ---- dipoles: merge +/- pairs that fit as one
    rows = _Rows(x=x, y=y, flux=flux, err=err, flags=flags,
                 area=dets.area[dets.footprint] if n else np.zeros(0, np.int64),
                 fp_id=dets.footprint.copy(), peak=dets.peak_snr.copy(), comp=comp)
    _merge_dipoles(rows, pix, psf_at, dets, max_separation=opts.dipole_max_separation * fwhm,
                   min_flux_ratio=opts.dipole_min_flux_ratio)
    meta["n_dipoles"] = int(rows.is_dipole.sum())

    # ---- assemble, then per-source quantities at the final positions
    sel = np.flatnonzero(rows.keep)
    x, y, flux, err = rows.x[sel], rows.y[sel], rows.flux[sel], rows.err[sel]
    flags = rows.flags[sel]
    is_dipole, area, fp_id = rows.is_dipole[sel], rows.area[sel], rows.fp_id[sel]
    peak, comp = rows.peak[sel], rows.comp[sel]
    dip = {k: v[sel] for k, v in rows.dipole.items()}
    flags |= np.where(np.isfinite(flux), 0, 1 << FLAG_BITS["PSF_FLUX_FAILED"])
    sign = np.where(np.isfinite(flux), np.sign(flux), np.sign(peak)).astype(np.int64)
    sign[sign == 0] = 1
    cov, shape_ok = shapes(pix, x, y, sign, fwhm)
    cov = np.where(shape_ok[:, None] & ~is_dipole[:, None], cov, np.nan)
    flags |= np.where(shape_ok | is_dipole, 0, 1 << FLAG_BITS["SHAPE_FAILED"])
    sci_pix = tmpl_pix = None
    if science is not None:
        sci_pix = PixelData.from_exposure(science, exclude_planes=opts.exclude_planes)
    if template is not None:
        tmpl_pix = PixelData.from_exposure(template, exclude_planes=opts.exclude_planes,
                                           noise_scale=filtered.template_noise_scale)
    psfs = [psf_at(xi, yi) for xi, yi in zip(x, y, strict=True)] \
        if sci_pix is not None or tmpl_pix is not None else []
    sci_flux, sci_err = _forced(sci_pix, psfs, x, y)
    tmpl_flux, tmpl_err = _forced(tmpl_pix, psfs, x, y)
    if wcs is not None and x.size:
        ra, dec = (np.asarray(v, dtype=np.float64) for v in wcs.pixel_to_world_values(x, y))
    else:
        ra, dec = np.full(x.size, np.nan), np.full(x.size, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / err
    columns = {
        "x": x + ox, "y": y + oy, "ra": ra, "dec": dec, "psf_flux": flux,
        "psf_flux_err": err, "snr": snr, "peak_snr": peak, "is_negative": flux < 0,
        "is_dipole": is_dipole, "flags": flags, "science_flux": sci_flux,
        "science_flux_err": sci_err, "template_flux": tmpl_flux,
        "template_flux_err": tmpl_err, "shape_xx": cov[:, 0], "shape_yy": cov[:, 1],
        "shape_xy": cov[:, 2], "footprint_id": fp_id, "footprint_area": area,
        "elongation": elong[comp] if comp.size else np.zeros(0),
        **{f"dipole_{k}": v for k, v in dip.items()},
    }
    order = np.lexsort((columns["y"], columns["x"],
                        -np.where(np.isfinite(snr), np.abs(snr), -1.0)))
    out = {"id": np.arange(1, order.size + 1, dtype=np.int64)}
    for name, (dtype, _, _) in COLUMNS.items():
        if name != "id":
            out[name] = np.ascontiguousarray(np.asarray(columns[name])[order], dtype=dtype)
    meta["n_sources"] = int(order.size)
    meta["flag_descriptions"] = dict(FLAG_DESCRIPTIONS)
    return DiaCatalogue(columns=out, units=_units(difference),
                        descriptions={k: d for k, (_, _, d) in COLUMNS.items()},
                        flag_bits=dict(FLAG_BITS), metadata=meta)


def forced_psf_flux(
    difference: Exposure,
    psf: Any,
    x: Any,
    y: Any,
    *,
    template: Exposure | None = None,
    options: DiaOptions | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """PSF fluxes and errors on the difference at given parent positions.

    The same estimator and noise model as ``psf_flux`` / ``psf_flux_err`` of
    :func:`detect_and_measure` (the difference is filtered once for its noise scale;
    ``template`` is the matched template whose variance carries the correlated part),
    at fixed positions: forced photometry, e.g. at known sources. Inputs are only read.
    Positions where no usable pixel lies under the PSF give NaN.
    """
    opts = options or DiaOptions()
    _check_frame("template", template, difference)
    ny, nx = difference.shape
    ox, oy = difference.xy0
    psf0 = psf_image(psf, ox + 0.5 * (nx - 1), oy + 0.5 * (ny - 1))
    filtered = matched_filter(
        difference, psf0, exclude_planes=opts.exclude_planes,
        template_variance=None if template is None else template.variance,
        min_psf_coverage=opts.min_psf_coverage, rescale_noise=opts.rescale_noise)
    pix = PixelData.from_filtered(difference, filtered)
    xs = np.atleast_1d(np.asarray(x, dtype=np.float64)) - ox
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64)) - oy

    psfs = [psf_image(psf, xa + ox, ya + oy) if hasattr(psf, "image_at") else psf0
            for xa, ya in zip(xs, ys, strict=True)]
    return _forced(pix, psfs, xs, ys)
