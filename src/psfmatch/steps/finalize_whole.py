"""The ``decorrelate`` step on whole images, and the helpers both of its forms share.

:func:`decorrelate_whole` holds all three images at once; it serves the preconvolution
(score image) variant, and is the reference the band-by-band form
(:func:`psfmatch.steps.finalize.decorrelate`) is checked against.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.decorrelation import mean_variance
from psfmatch.depth import combined_limiting_magnitude
from psfmatch.diagnostics import residual_statistics
from psfmatch.exposure import Exposure
from psfmatch.modes import CONVOLVE_SCIENCE, CONVOLVE_TEMPLATE, psf_axis_fwhm
from psfmatch.scale_variance import (
    VarianceScale,
    background_image,
    mark_detected,
    variance_scale_factor,
)
from psfmatch.steps.fields import StepConfig
from psfmatch.steps.subtraction import psf_image, psf_image_at, read_mode

__all__ = ["FILTER_EXCLUDED_PLANES", "decorrelate_whole", "depths", "flag_sources_and_scale",
           "mean_axis_fwhm", "mode_metrics", "rescaled_raw_variance", "zero_point"]

logger = logging.getLogger("psfmatch.steps")

#: Difference pixels the decorrelation filter must not spread (defects, the unconvolved
#: border): they enter the filter as the image mean and keep their raw values.
FILTER_EXCLUDED_PLANES = ("NO_DATA", "BAD", "SAT", "SAT_TEMPLATE", "CR", "EDGE", "SUSPECT")


def rescaled_raw_variance(raw: Exposure, known: np.ndarray, f_known: float,
                           f_rest: float) -> Exposure:
    """The raw difference with its variance ``known + rest`` made ``f_known·known + f_rest·rest``.

    image and mask unchanged; non-finite variance pixels stay as they are.
    """
    var = raw.variance.astype(np.float64)
    with np.errstate(invalid="ignore"):
        new = f_rest * var + (f_known - f_rest) * np.asarray(known, dtype=np.float64)
    new = np.where(np.isfinite(var) & np.isfinite(new), new, var)
    return raw.with_(variance=new.astype(np.float32))


def zero_point(diff: Any, metadata: Mapping[str, Any], label: str) -> float | None:
    """``difference.zero_point``, else the science header card ``zero_point_key``."""
    if diff.zero_point is not None:
        return float(diff.zero_point)
    key = diff.zero_point_key
    if key is None:
        return None
    value = metadata.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        logger.warning("%s: science header has no numeric %s (%r): depths in counts only",
                       label, key, value)
        return None


def mean_axis_fwhm(psf: np.ndarray | None) -> float | None:
    """RMS of the two axis FWHMs of a PSF image (:func:`psfmatch.modes.psf_axis_fwhm`)."""
    if psf is None:
        return None
    fx, fy = psf_axis_fwhm(psf)
    return float(math.sqrt(0.5 * (fx * fx + fy * fy)))


def flag_sources_and_scale(exposure: Exposure, *, role: str, fwhm: float, sub: Any,
                           label: str) -> tuple[Exposure, VarianceScale]:
    """``DETECTED`` flagged where the inputs do not say where sources are, and the
    variance factor (``doScaleVariance``; 1 when off), both over one background.

    Returns the flagged exposure (image and variance unchanged) and the factor.
    """
    background = background_image(exposure)  # one background per image, used twice
    marked, n = mark_detected(exposure, psf_fwhm=fwhm, background=background)
    del exposure  # the caller may pass its only reference: the old mask can go
    if n:
        logger.info("%s: %d %s pixels flagged DETECTED for the variance statistics", label, n,
                    role)
    if not sub.do_scale_variance:
        return marked, VarianceScale(1.0, "off", 0)
    return marked, variance_scale_factor(
        marked, mask_planes=sub.scale_variance.mask_planes, limit=sub.scale_variance.limit,
        label=f"{label} {role}", background=background)


def decorrelate_whole(
    *,
    raw_path: str,
    raw_metrics_path: str,
    template_path: str,
    science_path: str,
    subtracted_path: str,
    kernel_path: str,
    mode_path: str,
    psf_path: str,
    output_path: str,
    metrics_path: str,
    config: Mapping[str, Any],
    label: str,
    difference_psf_path: str | None = None,
    preconvolution_psf_path: str | None = None,
) -> None:
    """Variance rescaling, decorrelation, the final products and ``metrics.json``.

    Parameters
    ----------
    raw_path, raw_metrics_path : str
        ``convolve``'s raw difference (or raw score) and its metrics.
    template_path, science_path : str
        The warped template and the science image (unconvolved inputs).
    subtracted_path : str
        The image the matched template was subtracted from: the science image, or the
        preconvolved science image (score).
    kernel_path, mode_path, psf_path : str
        ``kernel.fits``, ``mode/mode.json`` and ``detect/psf.json`` (the FWHMs).
    output_path : str
        ``difference.fits`` (or ``score.fits`` with preconvolution).
    difference_psf_path : str, optional
        Where the unit-sum PSF of the final difference goes (not for a score image).
    preconvolution_psf_path : str, optional
        The PSF the science image was preconvolved with (score image only).

    Notes
    -----
    * ``doScaleVariance``: factors :math:`f_T, f_S` (:func:`psfmatch.scale_variance.
      variance_scale_factor`) multiply the template's and science's variance planes
      wherever they enter here: the decorrelation's mean variances and variance
      propagation, and the raw difference's variance
      :math:`f_S V_S + f_T K^2 \\star V_T` (convolveTemplate;
      :math:`(f_S K^2 \\star V_S + f_T V_T)/\\kappa_c^2` in convolveScience). The kernel
      fit itself used the variance planes as given (docs/subtraction-modes.md#variance).
    * ``doDecorrelation``: :func:`psfmatch.decorrelation.decorrelate` (or
      :func:`psfmatch.preconvolution.score_image`) with the kernel at ``decorrelation_grid``
      nodes; the final PSF is the whitened PSF of the unconvolved image. Without it the
      raw difference (variance rescaled) is the final one and its PSF the unconvolved
      image's.
    """
    cfg = StepConfig("decorrelate", config)
    sub, diff = cfg.subtract, cfg.difference
    mode = read_mode(mode_path)
    raw = io.read_exposure(raw_path)
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    subtracted = science if subtracted_path == science_path else io.read_exposure(subtracted_path)
    kernel = io.read_kernel(kernel_path)
    metrics = io.read_json(raw_metrics_path)
    fwhm = {role: float(v["fwhm"]) for role, v in io.read_json(psf_path).items()
            if role in ("template", "science")}
    preconvolved = bool(mode.get("preconvolution"))

    # sources flagged DETECTED (if the inputs do not say where they are) for the
    # statistics below; the images themselves are not changed
    template, scale_t = flag_sources_and_scale(template, role="template", fwhm=fwhm["template"],
                                               sub=sub, label=label)
    science, scale_s = flag_sources_and_scale(science, role="science", fwhm=fwhm["science"],
                                              sub=sub, label=label)
    scales = {"template": scale_t, "science": scale_s}
    if sub.do_scale_variance:
        logger.info("%s: variance scale factors template %.4f (%s), science %.4f (%s)", label,
                    scales["template"].factor, scales["template"].method,
                    scales["science"].factor, scales["science"].method)
    f_t, f_s = scales["template"].factor, scales["science"].factor
    template_s = template.with_(variance=(template.variance * f_t).astype(np.float32))
    science_s = science.with_(variance=(science.variance * f_s).astype(np.float32))
    if mode["mode"] == CONVOLVE_SCIENCE:
        norm = kernel.sum_at_centre_of(raw.bbox)
        raw_s = rescaled_raw_variance(raw, template.variance / norm**2, f_t, f_s)
    else:
        raw_s = rescaled_raw_variance(raw, subtracted.variance, f_s, f_t)

    # PSF of the image that was not convolved (its whitened version is the final PSF)
    unconvolved = "science" if mode["mode"] == CONVOLVE_TEMPLATE else "template"
    exposures = {"science": science, "template": template}
    psf_in, psf_source = psf_image(exposures[unconvolved], fwhm[unconvolved])
    grid = tuple(int(g) for g in diff.decorrelation_grid)
    options = {"grid": grid, "ignore_mask_planes": sub.decorrelate.ignore_mask_planes,
               "complete_variance": sub.decorrelate.complete_var_plane_propagation}
    info: dict[str, Any] = {"applied": False, "psf_source": psf_source}
    final, psf_out = raw_s, psf_in
    # defects must not be spread by the filter: filtered as the image mean, then restored
    flagged = (raw_s.mask & raw_s.plane_bitmask(FILTER_EXCLUDED_PLANES)) != 0
    filtered_input = raw_s.with_(image=np.where(flagged, np.nan, raw_s.image).astype(np.float32))
    if sub.do_decorrelation:
        if preconvolved:
            from psfmatch.preconvolution import score_image

            pre_psf = io.read_psf_model(preconvolution_psf_path).image_at(0.0, 0.0)
            result = score_image(filtered_input, science=science_s, template=template_s,
                                 kernel_at=kernel.image_at, psf_image=pre_psf, **options)
        else:
            from psfmatch.decorrelation import decorrelate as whiten

            result = whiten(filtered_input, science=science_s, template=template_s,
                            kernel_at=kernel.image_at, mode=mode["mode"], psf_image=psf_in,
                            **options)
        info.update({k: v for k, v in result.info.items() if k != "filters"})
        info["filters"] = result.info.get("filters", [])
        if "skipped" not in result.info:
            info["applied"] = True
            image = result.exposure.image.copy()
            image[flagged] = raw_s.image[flagged]
            final = result.exposure.with_(image=image)
            info["pixels_not_filtered"] = {"planes": list(FILTER_EXCLUDED_PLANES),
                                           "n": int(flagged.sum())}
            if result.psf_image is not None:
                psf_out = result.psf_image
        else:
            logger.warning("%s: decorrelation skipped: %s", label, result.info["skipped"])
    psf_out = np.asarray(psf_out, dtype=np.float64) / float(np.sum(psf_out))
    info["psf_fwhm_before"] = mean_axis_fwhm(psf_in)
    info["psf_fwhm_after"] = mean_axis_fwhm(psf_out) if not preconvolved else None
    stats = residual_statistics(final)
    logger.info("%s: %s; D/sigma clipped std %.4f (raw %.4f)", label,
                "decorrelated" if info["applied"] else "not decorrelated",
                stats["clipped_std"], metrics["difference"]["clipped_std"])

    zp = zero_point(diff, science.metadata, label)
    metrics.update(mode_metrics(mode, scales, fwhm))
    metrics["difference_before_decorrelation"] = metrics["difference"]
    metrics["difference"] = {**stats, "image": "score" if preconvolved else "difference"}
    metrics["decorrelation"] = info
    variances = {role: mean_variance(exp) for role, exp in
                 (("science", science_s), ("template", template_s), ("difference", final))}
    metrics["depth"] = depths(variances, psf_in=psf_in, psf_out=psf_out, mode=mode,
                              kernel_sum=float(kernel.kernel_sum), zero_point=zp,
                              psfs={role: (exp.psf, exp.bbox) for role, exp in exposures.items()},
                              fwhm=fwhm, preconvolved=preconvolved)
    from psfmatch.psf import ImagePsf

    if preconvolved:
        io.write_exposure(output_path, final.with_(psf=None))
    else:
        io.write_exposure(output_path, final.with_(psf=ImagePsf(psf_out)))
        if difference_psf_path is not None:
            io.write_psf_image(difference_psf_path, psf_out, metadata={
                "PSFSRC": psf_source, "DECORREL": bool(info["applied"]),
                "PSFOF": unconvolved, "PSFFWHM": info["psf_fwhm_after"]})
    io.write_json(metrics_path, metrics)


def mode_metrics(mode: Mapping[str, Any], scales: Mapping[str, VarianceScale],
                  fwhm: Mapping[str, float]) -> dict[str, Any]:
    """The mode decision, coverage and variance factors, as metrics.json keys."""
    return {
        "mode": {**mode["decision"], "preconvolution": bool(mode.get("preconvolution")),
                 "fwhm": dict(fwhm)},
        "template_coverage": mode["template_coverage"],
        "variance_scale": {role: {"factor": s.factor, "method": s.method,
                                  "n_pixels": s.n_pixels} for role, s in scales.items()},
    }


def depths(variances: Mapping[str, float], *, psf_in: np.ndarray, psf_out: np.ndarray,
           mode: Mapping[str, Any], kernel_sum: float, zero_point: float | None,
           psfs: Mapping[str, tuple[Any, tuple[int, int, int, int]]],
           fwhm: Mapping[str, float], preconvolved: bool) -> dict[str, Any]:
    r"""5σ point-source depths of science, template and final difference (metrics.json).

    ``variances``: the clipped mean variances (:func:`psfmatch.decorrelation.mean_variance`)
    of the rescaled science and template and of the final difference; ``psfs``: each
    input's PSF model (or None) and bbox. Counts always (each image in its own counts);
    magnitudes with a zero point. The template's zero point follows from the kernel sum:
    :math:`z_T = z_S - 2.5\log_{10}\kappa` with :math:`\kappa` science counts per
    template count (the kernel sum in convolveTemplate, its inverse in convolveScience).
    ``ipdiffim`` holds ip_diffim's own metadata values (PSF-size based, no noise term;
    docs/subtraction-modes.md#depth).
    """
    from psfmatch.depth import depth_from_variance, ipdiffim_limiting_magnitude

    to_science = kernel_sum if mode["mode"] == CONVOLVE_TEMPLATE else 1.0 / kernel_sum
    zp_t = None if zero_point is None else zero_point - 2.5 * math.log10(to_science)
    images = {}
    for role in ("science", "template"):
        if mode["mode"] == CONVOLVE_TEMPLATE and role == "science" \
                or mode["mode"] == CONVOLVE_SCIENCE and role == "template":
            images[role] = psf_in
        else:
            images[role] = psf_image_at(*psfs[role], fwhm[role])[0]
    out: dict[str, Any] = {
        "science": {**depth_from_variance(variances["science"], images["science"],
                                          zero_point=zero_point), "counts": "science"},
        "template": {**depth_from_variance(variances["template"], images["template"],
                                           zero_point=zp_t), "counts": "template"},
    }
    out["template"]["limiting_flux_science_counts"] = \
        out["template"]["limiting_flux"] * to_science
    if not preconvolved:
        out["difference"] = {**depth_from_variance(variances["difference"], psf_out,
                                                   zero_point=zero_point), "counts": "science"}
    m_s = ipdiffim_limiting_magnitude(images["science"], zero_point)
    m_t = ipdiffim_limiting_magnitude(images["template"], zp_t)
    out["ipdiffim"] = {"scienceLimitingMagnitude": m_s, "templateLimitingMagnitude": m_t,
                       "diffimLimitingMagnitude": combined_limiting_magnitude(m_s, m_t)
                       if math.isfinite(m_s) else math.nan}
    return out
