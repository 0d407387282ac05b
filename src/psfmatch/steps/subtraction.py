"""The subtraction mode of a pair (``subtraction_mode``) and the preconvolved science image.

ip_diffim's ``AlardLuptonSubtractTask`` decides at run time which image the kernel
convolves (``mode``; docs/subtraction-modes.md). Here that decision is one small step
after detection: it checks the template coverage (``requiredTemplateFraction``), compares
the two PSFs per axis and writes ``mode/mode.json`` (the decision and its inputs) and
``mode/psf.json`` (the two FWHMs keyed by *fitting role*: ``template`` is the image the
kernel convolves, ``science`` the one it is matched to). The fitting steps read only
``mode/psf.json`` and are otherwise role-blind; :func:`fitting_exposures` gives the steps
that read images (``select``, ``convolve``) the two exposures in fitting roles.

``preconvolve`` is the first half of ``AlardLuptonPreconvolveSubtractTask``: the science
image correlated with its own PSF, which the template is then matched to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.config import check_subtraction
from psfmatch.errors import PsfMatchError, TemplateCoverageError
from psfmatch.exposure import Exposure
from psfmatch.modes import (
    CONVOLVE_SCIENCE,
    CONVOLVE_TEMPLATE,
    ModeDecision,
    check_template_coverage,
    choose_mode,
    fitting_roles,
    psf_axis_fwhm,
    star_axis_fwhm,
    template_coverage,
)
from psfmatch.steps.fields import StepConfig

__all__ = [
    "expected_success",
    "fitting_exposures",
    "preconvolve",
    "psf_image",
    "read_mode",
    "subtraction_mode",
]

logger = logging.getLogger("psfmatch.steps")

#: Candidates bright enough to measure a star's shape (as detect's FWHM measurement).
_BRIGHT_SNR = 50.0


def read_mode(mode_path: str | None) -> dict[str, Any]:
    """``mode/mode.json``, or the record of a forward (convolveTemplate) pair if ``None``."""
    if mode_path is None:
        return {"mode": CONVOLVE_TEMPLATE, "convolved": "template", "preconvolution": False,
                "roles": {"template": "template", "science": "science"}}
    return io.read_json(mode_path)


def fitting_exposures(template: Exposure, science: Exposure, mode: Mapping[str, Any]
                      ) -> tuple[Exposure, Exposure]:
    """``(convolved, matched_to)``: the exposures in the kernel fit's template/science roles."""
    images = {"template": template, "science": science}
    return images[mode["roles"]["template"]], images[mode["roles"]["science"]]


def psf_image(exposure: Exposure, fwhm: float) -> tuple[np.ndarray, str]:
    """Unit-sum PSF image of ``exposure`` at its bbox centre, and where it came from.

    The exposure's PSF model if it has one (``"psf_model"``), else a circular Gaussian of
    ``fwhm`` px sampled at pixel centres, ``2·ceil(4σ) + 1`` px wide (``"gaussian_fwhm"``;
    ``fwhm`` measured on stars includes the pixel response, as a PSF model would).
    """
    from psfmatch.psf import GaussianPsf

    if exposure.psf is not None and hasattr(exposure.psf, "image_at"):
        x0, y0, x1, y1 = exposure.bbox
        image = np.asarray(exposure.psf.image_at(0.5 * (x0 + x1), 0.5 * (y0 + y1)), dtype=float)
        return image / image.sum(), "psf_model"
    image = np.asarray(GaussianPsf(float(fwhm)).image_at(0.0, 0.0), dtype=float)
    return image / image.sum(), "gaussian_fwhm"


def _axis_fwhms(template: Exposure, science: Exposure, candidates_path: str, label: str
                ) -> tuple[dict[str, tuple[float, float] | None], str]:
    """Per-axis FWHMs of both images: PSF models if both have one, else bright stars."""
    if template.psf is not None and science.psf is not None \
            and hasattr(template.psf, "image_at") and hasattr(science.psf, "image_at"):
        try:
            return ({role: psf_axis_fwhm(psf_image(exp, 1.0)[0]) for role, exp in
                     (("template", template), ("science", science))}, "psf_model")
        except ValueError as err:
            logger.warning("%s: per-axis FWHM of the PSF models failed (%s)", label, err)
    table = io.read_table(candidates_path).columns
    bright = (table["snr"] >= _BRIGHT_SNR) & ~np.asarray(table["replaced"], dtype=bool)
    out: dict[str, tuple[float, float] | None] = {}
    for role, exp in (("template", template), ("science", science)):
        try:
            out[role], n = star_axis_fwhm(exp, table["x"][bright], table["y"][bright])
            logger.info("%s: %s per-axis FWHM (%.3f, %.3f) px from %d stars", label, role,
                        *out[role], n)
        except ValueError as err:
            logger.warning("%s: no per-axis %s FWHM (%s); the mean FWHMs decide", label,
                           role, err)
            out[role] = None
    return out, "adaptive_moments"


def subtraction_mode(
    *,
    template_path: str,
    science_path: str,
    candidates_path: str,
    psf_path: str,
    mode_path: str,
    fit_psf_path: str,
    config: Mapping[str, Any],
    label: str,
) -> None:
    """Coverage check and the mode decision of one pair (``mode.json``, ``psf.json``).

    * template coverage (fraction of science pixels where both images have data) below
      ``subtract.requiredTemplateFraction`` raises
      :class:`~psfmatch.errors.TemplateCoverageError` naming the pair and the fraction;
    * ``subtract.mode``: ``auto`` convolves the template unless it is blurrier than the
      science image on both axes (:func:`psfmatch.modes.choose_mode`; per-axis FWHMs from
      the PSF models, else adaptive moments of the bright candidates; the mean FWHMs of
      ``detect/psf.json`` when per-axis values cannot be had);
    * ``difference.preconvolution`` forces convolveTemplate (the template is matched to
      the preconvolved science image, whose FWHM for the basis sizing is
      :math:`\\sqrt 2` times the science FWHM, as ip_diffim assumes).

    ``mode_path`` gets the decision, its inputs, the coverage and whether a failed fit
    is to be reported as low coverage (``minTemplateFractionForExpectedSuccess``);
    ``fit_psf_path`` the FWHMs in fitting roles (read by ``select`` and
    ``fit_single_kernels``).
    """
    cfg = StepConfig("subtraction_mode", config)
    sub, diff = cfg.subtract, cfg.difference
    check_subtraction(sub, diff)
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    coverage = template_coverage(template, science)
    logger.info("%s: template coverage %.4f", label, coverage)
    check_template_coverage(coverage, required=sub.required_template_fraction, label=label)
    psf = io.read_json(psf_path)
    axis, axis_method = _axis_fwhms(template, science, candidates_path, label)
    mean = {"template_fwhm": psf["template"]["fwhm"], "science_fwhm": psf["science"]["fwhm"]}
    if diff.preconvolution:
        decision = ModeDecision(sub.mode, CONVOLVE_TEMPLATE, "preconvolution",
                                axis["template"], axis["science"], **mean)
    else:
        decision = choose_mode(sub.mode, template_fwhm_xy=axis["template"],
                               science_fwhm_xy=axis["science"], **mean)
    convolved, matched_to = fitting_roles(decision.mode)
    fit_psf = {"template": dict(psf[convolved]), "science": dict(psf[matched_to]),
               "roles": {"template": convolved, "science": matched_to}}
    if diff.preconvolution:
        fit_psf["science"] = {**psf["science"], "fwhm": math.sqrt(2.0) * psf["science"]["fwhm"],
                              "method": f"sqrt(2) x {psf['science']['method']} (preconvolved)"}
    expected = coverage >= sub.min_template_fraction_for_expected_success
    record = {
        "mode": decision.mode,
        "convolved": decision.convolved,
        "decision": {**decision.to_dict(), "per_axis_method": axis_method},
        "roles": fit_psf["roles"],
        "preconvolution": bool(diff.preconvolution),
        "template_coverage": coverage,
        "required_template_fraction": sub.required_template_fraction,
        "min_template_fraction_for_expected_success":
            sub.min_template_fraction_for_expected_success,
        "expected_success": bool(expected),
        "fwhm": {role: {"mean": psf[role]["fwhm"], "method": psf[role]["method"],
                        "xy": None if axis[role] is None else list(axis[role])}
                 for role in ("template", "science")},
    }
    logger.info("%s: %s (%s): convolving the %s", label, decision.mode, decision.reason,
                decision.convolved)
    if decision.mode == CONVOLVE_SCIENCE:
        logger.info("%s: kernel maps the science image onto the template; sizing uses the "
                    "template FWHM as the reference", label)
    io.write_json(mode_path, record)
    io.write_json(fit_psf_path, fit_psf)


@contextmanager
def expected_success(mode_path: str | None, label: str) -> Iterator[None]:
    """``minTemplateFractionForExpectedSuccess`` around a fitting step.

    A :class:`~psfmatch.errors.PsfMatchError` raised inside is re-raised as
    :class:`~psfmatch.errors.TemplateCoverageError` (ip_diffim ``NoWorkFound``) naming the
    pair, the coverage and the original error when ``mode.json`` says the coverage is
    below that fraction; otherwise it propagates unchanged.
    """
    try:
        yield
    except TemplateCoverageError:
        raise
    except PsfMatchError as err:
        if mode_path is None:
            raise
        record = io.read_json(mode_path)
        if record.get("expected_success", True):
            raise
        msg = (f"{label}: the kernel fit failed with only {100 * record['template_coverage']:.1f} "
               "% template coverage (subtract.minTemplateFractionForExpectedSuccess = "
               f"{record['min_template_fraction_for_expected_success']:g}): "
               f"{type(err).__name__}: {err}")
        raise TemplateCoverageError(msg) from err


def preconvolve(
    *,
    science_path: str,
    psf_path: str,
    output_path: str,
    psf_output_path: str,
    config: Mapping[str, Any],
    label: str,
) -> None:
    """Correlate the science image with its own PSF (``AlardLuptonPreconvolveSubtractTask``).

    image :math:`P \\star S` after pixels with ``subtract.badMaskPlanes`` are set to the
    image median; variance :math:`P^2 \\star V`; mask dilated by the PSF footprint; the
    ``p // 2`` border keeps its input values and is flagged ``EDGE``
    (:func:`psfmatch.preconvolution.preconvolve`). ``P`` is the science PSF model at the
    centre, else a Gaussian of the measured FWHM (``detect/psf.json``); it is written to
    ``psf_output_path`` for the score image's decorrelation.
    """
    from psfmatch.preconvolution import preconvolve as correlate_with_psf

    sub = StepConfig("preconvolve", config).subtract
    science = io.read_exposure(science_path)
    fwhm = float(io.read_json(psf_path)["science"]["fwhm"])
    image, source = psf_image(science, fwhm)
    out, n_filled = correlate_with_psf(science, image, bad_mask_planes=sub.bad_mask_planes)
    logger.info("%s: science image correlated with its %s PSF (%d px, FWHM %.3f); %d bad "
                "pixels median-filled", label, source, image.shape[0], fwhm, n_filled)
    meta = {**science.metadata, "PRECONV": "science PSF", "PSFSRC": source,
            "NINTERP": int(n_filled)}
    io.write_exposure(output_path, out.with_(metadata=meta, psf=None))
    io.write_psf_image(psf_output_path, image, metadata={"PSFSRC": source, "PSFFWHM": fwhm})
