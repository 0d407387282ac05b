"""Subtraction modes: which image is convolved, and the convolveScience difference.

ip_diffim's ``AlardLuptonSubtractConfig.mode`` is ``convolveTemplate`` (fit
``S ≈ K ⋆ T + b``), ``convolveScience`` (fit ``T ≈ K ⋆ S + b``) or ``auto``, which
convolves the template unless it is the blurrier image on *both* axes (the "shape
test"). The fitting machinery is role-blind: it always convolves the image it is given
as "template" to match the one given as "science"; a mode only decides which exposure
plays which role (:func:`fitting_roles`, :func:`basis_fwhms`).

Photometric and sign convention of the difference (both modes, science counts, positive
where the science image is brighter):

* convolveTemplate: :math:`D = S - K \\star T - b`, PSF of ``S``;
* convolveScience: :math:`D = (K \\star S + b - T) / \\kappa_c`, PSF of ``T``, with
  :math:`\\kappa_c` the kernel sum at the bbox centre (template counts per science count).
  A science transient of flux ``F`` has flux ``F`` in both. ip_diffim divides only
  ``K ⋆ S`` by :math:`\\kappa_c` (not ``T`` nor ``b``), which agrees with this for the
  calibrated inputs it assumes (:math:`\\kappa_c \\approx 1`) and leaves a
  :math:`(1/\\kappa_c - 1)\\,T` residual on every static source otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import ConfigError, TemplateCoverageError
from psfmatch.exposure import Exposure, remap_mask_bits
from psfmatch.kernel import SpatialKernel
from psfmatch.moments import adaptive_moments
from psfmatch.subtract import (
    CLEAR_SCIENCE_PLANES,
    PRESERVE_TEMPLATE_PLANES,
    RENAME_TEMPLATE_PLANES,
    convolve_exposure,
    prepare_template_mask,
)

__all__ = [
    "AUTO",
    "CONVOLVE_SCIENCE",
    "CONVOLVE_TEMPLATE",
    "MODES",
    "ModeDecision",
    "basis_fwhms",
    "bright_peaks",
    "check_template_coverage",
    "choose_mode",
    "combine_convolve_science",
    "difference_convolve_science",
    "fitting_roles",
    "psf_axis_fwhm",
    "restore_mask_planes",
    "star_axis_fwhm",
    "template_coverage",
]

CONVOLVE_TEMPLATE = "convolveTemplate"
CONVOLVE_SCIENCE = "convolveScience"
AUTO = "auto"
#: Values of ``AlardLuptonSubtractConfig.mode``.
MODES = (AUTO, CONVOLVE_TEMPLATE, CONVOLVE_SCIENCE)


def psf_axis_fwhm(psf_image: np.ndarray) -> tuple[float, float]:
    """Per-axis FWHMs ``(2.3548 √Ixx, 2.3548 √Iyy)`` (px) of a PSF image.

    :math:`I_{xx}, I_{yy}` are adaptive (Gaussian-weighted, iterated) second moments, as
    afw's ``computeShape`` of a PSF (``getPsfFwhm(average=False)``).

    Raises
    ------
    ValueError
        If the image is not 2-D or the moments do not converge.
    """
    image = np.asarray(psf_image, dtype=np.float64)
    if image.ndim != 2:
        msg = f"PSF image must be 2-D, got shape {image.shape}"
        raise ValueError(msg)
    cov, _, ok = adaptive_moments(image[None] / image.sum())
    if not ok[0]:
        msg = f"adaptive moments of the {image.shape} PSF image did not converge"
        raise ValueError(msg)
    return (float(SIGMA_TO_FWHM * math.sqrt(cov[0, 0])),
            float(SIGMA_TO_FWHM * math.sqrt(cov[0, 1])))


@dataclass(frozen=True)
class ModeDecision:
    """Which image is convolved, and why (JSON-able via :meth:`to_dict` for metrics).

    Attributes
    ----------
    requested : str
        The configured ``mode``.
    mode : str
        ``convolveTemplate`` or ``convolveScience``.
    reason : str
        ``"configured"``, ``"shape test per axis"`` or ``"shape test on mean FWHM"``.
    template_fwhm_xy, science_fwhm_xy : (float, float) or None
        Per-axis FWHMs (px) used by the shape test.
    template_fwhm, science_fwhm : float or None
        Mean FWHMs (px), the fallback when per-axis values are not available.
    """

    requested: str
    mode: str
    reason: str
    template_fwhm_xy: tuple[float, float] | None = None
    science_fwhm_xy: tuple[float, float] | None = None
    template_fwhm: float | None = None
    science_fwhm: float | None = None

    @property
    def convolved(self) -> str:
        """``"template"`` or ``"science"``: the image the kernel is applied to."""
        return "template" if self.mode == CONVOLVE_TEMPLATE else "science"

    def to_dict(self) -> dict[str, object]:
        """JSON-able record."""
        out = asdict(self)
        out["convolved"] = self.convolved
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _pair(value: Sequence[float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    vals = tuple(float(v) for v in value)
    if len(vals) != 2 or not all(math.isfinite(v) and v > 0 for v in vals):
        return None
    return vals  # type: ignore[return-value]


def choose_mode(
    requested: str,
    *,
    template_fwhm_xy: Sequence[float] | None = None,
    science_fwhm_xy: Sequence[float] | None = None,
    template_fwhm: float | None = None,
    science_fwhm: float | None = None,
) -> ModeDecision:
    """Resolve ``mode`` (``auto`` → the shape test of ``AlardLuptonSubtractTask``).

    ``auto`` convolves the template if it is not blurrier than the science image on at
    least one axis, :math:`f^T_x \\le f^S_x` **or** :math:`f^T_y \\le f^S_y`, else the
    science image. Per-axis FWHMs that are missing or not finite and positive fall back
    to the mean FWHMs (:math:`f^T \\le f^S`).

    Raises
    ------
    ConfigError
        ``requested`` is not one of :data:`MODES`, or ``auto`` gets no usable FWHMs.
    """
    if requested not in MODES:
        msg = f"subtract.mode must be one of {list(MODES)}, got {requested!r}"
        raise ConfigError(msg)
    t_xy, s_xy = _pair(template_fwhm_xy), _pair(science_fwhm_xy)
    kw = {"template_fwhm_xy": t_xy, "science_fwhm_xy": s_xy,
          "template_fwhm": None if template_fwhm is None else float(template_fwhm),
          "science_fwhm": None if science_fwhm is None else float(science_fwhm)}
    if requested != AUTO:
        return ModeDecision(requested, requested, "configured", **kw)
    if t_xy is not None and s_xy is not None:
        template_first = t_xy[0] <= s_xy[0] or t_xy[1] <= s_xy[1]
        reason = "shape test per axis"
    elif kw["template_fwhm"] is not None and kw["science_fwhm"] is not None \
            and math.isfinite(kw["template_fwhm"]) and math.isfinite(kw["science_fwhm"]):
        template_first = kw["template_fwhm"] <= kw["science_fwhm"]
        reason = "shape test on mean FWHM"
    else:
        msg = ("subtract.mode 'auto' needs the template and science PSF FWHMs, got "
               f"per-axis {template_fwhm_xy!r}/{science_fwhm_xy!r}, mean "
               f"{template_fwhm!r}/{science_fwhm!r}")
        raise ConfigError(msg)
    mode = CONVOLVE_TEMPLATE if template_first else CONVOLVE_SCIENCE
    return ModeDecision(requested, mode, reason, **kw)


def fitting_roles(mode: str) -> tuple[str, str]:
    """``(convolved, matched_to)`` exposure names for the kernel fit in ``mode``.

    The fitter's "template" is the first, its "science" the second: candidates, stamps,
    spatial cells and the kernel all use these roles.
    """
    if mode == CONVOLVE_TEMPLATE:
        return ("template", "science")
    if mode == CONVOLVE_SCIENCE:
        return ("science", "template")
    msg = f"mode must be {CONVOLVE_TEMPLATE!r} or {CONVOLVE_SCIENCE!r}, got {mode!r}"
    raise ConfigError(msg)


def basis_fwhms(mode: str, *, template_fwhm: float, science_fwhm: float,
                preconvolved: bool = False) -> tuple[float, float]:
    """``(target_fwhm, reference_fwhm)`` for :func:`psfmatch.basis.choose_alard_lupton`.

    The target is the image convolved: ``(T, S)`` in convolveTemplate, ``(S, T)`` in
    convolveScience; with ``preconvolved`` (score image) the science FWHM is multiplied by
    :math:`\\sqrt 2` (the science image was correlated with its own PSF).
    """
    convolved, _ = fitting_roles(mode)
    if preconvolved:
        if mode != CONVOLVE_TEMPLATE:
            msg = "preconvolution is only defined with the template convolved"
            raise ConfigError(msg)
        science_fwhm = math.sqrt(2.0) * science_fwhm
    if convolved == "template":
        return (template_fwhm, science_fwhm)
    return (science_fwhm, template_fwhm)


def difference_convolve_science(
    science: Exposure,
    template: Exposure,
    kernel: SpatialKernel,
    *,
    norm: float | None = None,
    subtract_background: bool = True,
    preserve_template: tuple[str, ...] = PRESERVE_TEMPLATE_PLANES,
    rename_template: tuple[str, ...] = RENAME_TEMPLATE_PLANES,
    preserve_planes: tuple[str, ...] = (),
) -> tuple[Exposure, Exposure]:
    """convolveScience difference :math:`D = (K \\star S + b - T) / \\kappa_c`.

    ``kernel`` was fitted with the science image as the convolved image
    (``T ≈ K ⋆ S + b``, parent coordinates of the shared grid).

    Parameters
    ----------
    science, template : Exposure
        Same grid (template warped to the science image).
    kernel : SpatialKernel
        Science → template kernel (its sum is template counts per science count).
    norm : float, optional
        :math:`\\kappa_c`; default the kernel sum at the centre of the science bbox.
    subtract_background : bool
        Include the fitted differential background ``b`` (``doSubtractBackground``);
        otherwise ``b = 0``.
    preserve_template, rename_template : tuple of str
        ``preserveTemplateMask`` / ``renameTemplateMask`` for the template's mask
        (:func:`psfmatch.subtract.prepare_template_mask`).
    preserve_planes : tuple of str
        ``preserveMaskPlanes``: science planes restored undilated after the convolution
        (:func:`restore_mask_planes`).

    Returns
    -------
    difference : Exposure
        image :math:`(K \\star S + b - T)/\\kappa_c` (science counts, template PSF);
        variance :math:`(K^2 \\star V_S + V_T)/\\kappa_c^2`; mask: the science mask
        (``DETECTED*`` cleared) dilated by the kernel footprint, the ``k // 2`` border
        ``EDGE`` (its pixels hold the unconvolved science values), OR the template mask
        after ip_diffim's template clearing (kept planes ``NO_DATA, BAD, HIGH_VARIANCE``;
        ``SAT``/``INJECTED*`` renamed ``*_TEMPLATE``); the template's PSF.
    matched_science : Exposure
        :math:`K \\star S / \\kappa_c` with variance :math:`K^2 \\star V_S / \\kappa_c^2`
        and the dilated mask (ip_diffim's ``matchedScience``).
    """
    if science.shape != template.shape or science.xy0 != template.xy0:
        msg = (f"science ({science.shape} at {science.xy0}) and template ({template.shape} "
               f"at {template.xy0}) must share one grid")
        raise ValueError(msg)
    if norm is None:
        norm = kernel.sum_at_centre_of(science.bbox)
    if not (math.isfinite(norm) and norm > 0):
        msg = f"kernel sum at the science centre must be > 0, got {norm!r}"
        raise ValueError(msg)
    cleared = science.with_(mask=science.mask & ~science.plane_bitmask(CLEAR_SCIENCE_PLANES))
    convolved = restore_mask_planes(convolve_exposure(cleared, kernel), cleared,
                                    preserve_planes)
    return combine_convolve_science(convolved, template, kernel, norm=norm,
                                    subtract_background=subtract_background,
                                    preserve_template=preserve_template,
                                    rename_template=rename_template)


def combine_convolve_science(
    convolved: Exposure,
    template: Exposure,
    kernel: SpatialKernel,
    *,
    norm: float,
    subtract_background: bool = True,
    preserve_template: tuple[str, ...] = PRESERVE_TEMPLATE_PLANES,
    rename_template: tuple[str, ...] = RENAME_TEMPLATE_PLANES,
) -> tuple[Exposure, Exposure]:
    """The convolveScience difference from ``K ⋆ S`` (masks prepared) and the template.

    Pixel by pixel, so it applies to whole images or to bands of rows alike (same grid,
    same ``xy0``): :func:`difference_convolve_science` after its convolution. Returns
    ``(difference, matched_science)`` as that function describes them.
    """
    tmpl = prepare_template_mask(template, preserve=preserve_template, rename=rename_template)
    out = convolved.with_planes(tmpl.mask_planes)
    t_mask = remap_mask_bits(tmpl.mask, tmpl.mask_planes, out.mask_planes)
    ny, nx = convolved.shape
    x0, y0 = convolved.xy0
    background = kernel.background_at(np.arange(nx, dtype=np.float64)[None, :] + x0,
                                      np.arange(ny, dtype=np.float64)[:, None] + y0) \
        if subtract_background else 0.0
    conv_image = convolved.image.astype(np.float64)
    image = (conv_image + background - tmpl.image) / norm
    variance = (convolved.variance.astype(np.float64) + tmpl.variance) / norm**2
    difference = out.with_(image=image.astype(np.float32), variance=variance.astype(np.float32),
                           mask=out.mask | t_mask, psf=template.psf)
    matched = convolved.with_(image=(conv_image / norm).astype(np.float32),
                              variance=(convolved.variance / norm**2).astype(np.float32),
                              psf=template.psf)
    return difference, matched


def template_coverage(template: Exposure, science: Exposure) -> float:
    """Fraction of science-bbox pixels where both images have data.

    A pixel has no data where ``NO_DATA`` is set or the image is not finite, in either
    exposure; science pixels outside the template's bbox have no template data.
    """
    sx0, sy0, sx1, sy1 = science.bbox
    tx0, ty0, tx1, ty1 = template.bbox
    s_bit, t_bit = science.plane_bitmask(["NO_DATA"]), template.plane_bitmask(["NO_DATA"])
    ix0, iy0, ix1, iy1 = max(sx0, tx0), max(sy0, ty0), min(sx1, tx1), min(sy1, ty1)
    count = 0
    for start in range(iy0, iy1 + 1, 256):  # rows of the overlap, a band at a time
        stop = min(start + 256, iy1 + 1)
        s_rows = np.s_[start - sy0 : stop - sy0, ix0 - sx0 : ix1 - sx0 + 1]
        t_rows = np.s_[start - ty0 : stop - ty0, ix0 - tx0 : ix1 - tx0 + 1]
        both = np.isfinite(science.image[s_rows]) & ((science.mask[s_rows] & s_bit) == 0) \
            & np.isfinite(template.image[t_rows]) & ((template.mask[t_rows] & t_bit) == 0)
        count += int(np.count_nonzero(both))
    return float(np.float64(count) / science.image.size)  # the mean of the boolean map


def check_template_coverage(fraction: float, *, required: float, label: str) -> None:
    """Raise :class:`TemplateCoverageError` if ``fraction < required``.

    ``required`` is ``requiredTemplateFraction``; ``label`` names the pair.
    """
    if not fraction >= required:
        msg = (f"{label}: template covers {100 * fraction:.1f} % of the science image, less "
               f"than subtract.requiredTemplateFraction = {required:g}")
        raise TemplateCoverageError(msg)


def restore_mask_planes(convolved: Exposure, original: Exposure,
                        planes: Sequence[str]) -> Exposure:
    """ip_diffim's ``preserveMaskPlanes``: undo the dilation of some planes.

    mask: each of ``planes`` present in ``original`` is cleared on every pixel of
    ``convolved`` and set again exactly where ``original`` (the unconvolved input, same
    grid) has it; the other planes keep their dilation. Image and variance unchanged.
    """
    present = [p for p in planes if p in original.mask_planes]
    if not present:
        return convolved
    out = convolved.with_planes(present)
    mask = out.mask.copy()
    for plane in present:
        bit = np.int32(1 << out.mask_planes[plane])
        mask &= ~bit
        mask[original.plane(plane)] |= bit
    return out.with_(mask=mask)


def star_axis_fwhm(
    exposure: Exposure,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    half_width: int = 15,
    max_stars: int = 100,
    min_separation: float = 10.0,
    bad_mask_planes: Sequence[str] = ("NO_DATA", "EDGE", "SAT", "BAD", "CR"),
) -> tuple[tuple[float, float], int]:
    """Per-axis FWHMs ``(2.3548 med √Ixx, 2.3548 med √Iyy)`` (px) of stars, and their number.

    The stars at parent ``(x, y)`` (bright ones first) are cut as
    :func:`psfmatch.detect.measure_fwhm` cuts them: ``(2 half_width + 1)²`` stamps at the
    nearest pixel, isolated (no other position within ``min_separation``), inside the
    image, free of ``bad_mask_planes`` and non-finite pixels, border median subtracted;
    :func:`psfmatch.moments.adaptive_moments` gives each star's :math:`I_{xx}, I_{yy}`
    and the medians over the first ``max_stars`` measured stars are returned. This is the
    star-based stand-in for ``getPsfFwhm(average=False)`` when an image has no PSF model.

    Raises
    ------
    ValueError
        Fewer than 3 stars could be measured.
    """
    from scipy.spatial import cKDTree

    xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
    keep = np.isfinite(xs) & np.isfinite(ys)
    if min_separation > 0 and xs.size > 1:
        pts = np.column_stack([np.where(keep, xs, 1e300), np.where(keep, ys, 1e300)])
        pairs = cKDTree(pts).query_pairs(min_separation, output_type="ndarray")
        keep[pairs.ravel()] = False
    hw = int(half_width)
    ny, nx = exposure.shape
    col = np.floor(np.where(keep, xs, 0.0) + 0.5).astype(np.int64) - exposure.xy0[0]
    row = np.floor(np.where(keep, ys, 0.0) + 0.5).astype(np.int64) - exposure.xy0[1]
    keep &= (col - hw >= 0) & (col + hw < nx) & (row - hw >= 0) & (row + hw < ny)
    idx = np.flatnonzero(keep)
    offs = np.arange(-hw, hw + 1)
    rr = row[idx, None, None] + offs[None, :, None]
    cc = col[idx, None, None] + offs[None, None, :]
    bad = ~np.isfinite(exposure.image[rr, cc]) | ~np.isfinite(exposure.variance[rr, cc]) \
        | ((exposure.mask[rr, cc] & exposure.plane_bitmask(bad_mask_planes)) != 0)
    clean = ~bad.any(axis=(1, 2))
    stamps = exposure.image[rr[clean], cc[clean]][: int(max_stars)].astype(np.float64)
    if stamps.shape[0] < 3:
        msg = f"{stamps.shape[0]} usable stars for the per-axis FWHMs (3 needed)"
        raise ValueError(msg)
    border = np.ones(stamps.shape[1:], dtype=bool)
    border[2:-2, 2:-2] = False
    stamps -= np.median(stamps[:, border], axis=1)[:, None, None]
    cov, _, ok = adaptive_moments(stamps)
    ok &= (cov[:, 0] > 0) & (cov[:, 1] > 0)
    if ok.sum() < 3:
        msg = f"{int(ok.sum())} stars with converged moments for the per-axis FWHMs (3 needed)"
        raise ValueError(msg)
    fx = SIGMA_TO_FWHM * float(np.median(np.sqrt(cov[ok, 0])))
    fy = SIGMA_TO_FWHM * float(np.median(np.sqrt(cov[ok, 1])))
    return (fx, fy), int(ok.sum())


def bright_peaks(
    exposure: Exposure,
    *,
    min_snr: float = 20.0,
    max_peaks: int = 200,
    bad_mask_planes: Sequence[str] = ("NO_DATA", "EDGE", "SAT", "BAD", "CR"),
) -> tuple[np.ndarray, np.ndarray]:
    """Parent positions of the brightest isolated peaks, brightest first (for star shapes).

    A peak is a pixel that is the maximum of its 5×5 neighbourhood with
    :math:`(I - \\mathrm{median}\\,I)/\\sqrt{V} \\ge` ``min_snr`` (a peak pixel at 20σ is a
    star of integrated S/N ≳ 50 for PSFs of a few pixels) and no
    ``bad_mask_planes`` bit or non-finite value; at most ``max_peaks`` are returned. This
    is all the shape test needs when an image has no PSF model: bright stars whose
    moments :func:`star_axis_fwhm` measures (it also applies the isolation and
    clean-stamp cuts).
    """
    from scipy.ndimage import maximum_filter

    bits = exposure.plane_bitmask(bad_mask_planes)
    ny = exposure.shape[0]
    bands = [(s, min(s + 256, ny)) for s in range(0, ny, 256)]

    def bad_rows(lo: int, hi: int) -> np.ndarray:
        image, variance = exposure.image[lo:hi], exposure.variance[lo:hi]
        return ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0) \
            | ((exposure.mask[lo:hi] & bits) != 0)

    # the median of the good pixels (numpy's, on the same values), a band at a time
    good = np.concatenate([exposure.image[s:e][~bad_rows(s, e)] for s, e in bands])
    if good.size == 0:
        return np.zeros(0), np.zeros(0)
    level = _median(good)
    del good
    rows_found, cols_found, snr_found = [], [], []
    for start, stop in bands:  # 5x5 maxima: each band with 2 rows of halo
        lo, hi = max(0, start - 2), min(ny, stop + 2)
        variance = exposure.variance[lo:hi].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = np.where(bad_rows(lo, hi), -np.inf,
                           (exposure.image[lo:hi].astype(np.float64) - level) / np.sqrt(variance))
        core = slice(start - lo, stop - lo)
        peak = (snr[core] == maximum_filter(snr, size=5)[core]) & (snr[core] >= float(min_snr))
        rows, cols = np.nonzero(peak)
        rows_found.append(rows + start)
        cols_found.append(cols)
        snr_found.append(snr[core][rows, cols])
    rows, cols = np.concatenate(rows_found), np.concatenate(cols_found)
    order = np.argsort(-np.concatenate(snr_found), kind="stable")[: int(max_peaks)]
    return (cols[order] + exposure.xy0[0]).astype(np.float64), \
        (rows[order] + exposure.xy0[1]).astype(np.float64)


def _median(values: np.ndarray) -> float:
    """``np.median(values.astype(float64))`` of a 1-D array, partitioning ``values`` itself."""
    n = values.size
    half = n // 2
    values.partition([half - 1, half] if n % 2 == 0 else [half])
    if n % 2:
        return float(values[half])
    return float(np.mean(values[half - 1 : half + 1].astype(np.float64)))
