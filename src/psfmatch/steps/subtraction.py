"""The subtraction mode of a pair (``subtraction_mode``) and the preconvolved science image.

ip_diffim's ``AlardLuptonSubtractTask`` decides at run time which image the kernel
convolves (``mode``; docs/subtraction-modes.md). Here that decision is one small step
after the warp: it checks the template coverage (``requiredTemplateFraction``), compares
the two PSFs per axis and writes ``mode/mode.json`` (the decision, its inputs and the
*fitting roles*: the fit's "template" is the image the kernel convolves, its "science"
the one it is matched to). Every later step that reads images or FWHMs takes them in
those roles (:func:`fitting_exposures`, :func:`fitting_fwhms`); the fitting steps
themselves are role-blind.

``preconvolve`` is the first half of ``AlardLuptonPreconvolveSubtractTask``: the science
image correlated with its own PSF, which the template is then matched to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.config import check_subtraction
from psfmatch.errors import ConfigError, PsfMatchError, TemplateCoverageError
from psfmatch.exposure import Exposure
from psfmatch.modes import (
    CONVOLVE_TEMPLATE,
    ModeDecision,
    basis_fwhms,
    bright_peaks,
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
    "fitting_fwhms",
    "preconvolve",
    "psf_image",
    "psf_image_at",
    "read_mode",
    "subtraction_mode",
]

logger = logging.getLogger("psfmatch.steps")


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
    return psf_image_at(exposure.psf, exposure.bbox, fwhm)


def psf_image_at(psf: Any, bbox: tuple[int, int, int, int], fwhm: float
                 ) -> tuple[np.ndarray, str]:
    """:func:`psf_image` from a PSF model (or None) and the image's bbox."""
    from psfmatch.psf import GaussianPsf

    if psf is not None and hasattr(psf, "image_at"):
        x0, y0, x1, y1 = bbox
        image = np.asarray(psf.image_at(0.5 * (x0 + x1), 0.5 * (y0 + y1)), dtype=float)
        return image / image.sum(), "psf_model"
    image = np.asarray(GaussianPsf(float(fwhm)).image_at(0.0, 0.0), dtype=float)
    return image / image.sum(), "gaussian_fwhm"


def fitting_fwhms(psf: Mapping[str, Any], mode: Mapping[str, Any]) -> tuple[float, float]:
    """``(target, reference)`` FWHMs (px) for the basis sizing, from ``detect/psf.json``.

    The target is the image the kernel convolves; with preconvolution the reference is
    the preconvolved science image, :math:`\\sqrt 2` times the science FWHM
    (:func:`psfmatch.modes.basis_fwhms`).
    """
    return basis_fwhms(mode["mode"], template_fwhm=float(psf["template"]["fwhm"]),
                       science_fwhm=float(psf["science"]["fwhm"]),
                       preconvolved=bool(mode.get("preconvolution")))


def _shapes(template: Exposure, science: Exposure, label: str) -> dict[str, Any]:
    """Per-axis FWHMs of both images: PSF models if both have one, else bright stars.

    The stars are the brightest isolated peaks of the template
    (:func:`psfmatch.modes.bright_peaks`), measured in both images at the same positions.
    Returns ``{"template": (fx, fy) or None, "science": ..., "method": ...}``.
    """
    if all(e.psf is not None and hasattr(e.psf, "image_at") for e in (template, science)):
        try:
            return {role: psf_axis_fwhm(psf_image(exp, 1.0)[0]) for role, exp in
                    (("template", template), ("science", science))} | {"method": "psf_model"}
        except ValueError as err:
            logger.warning("%s: per-axis FWHM of the PSF models failed (%s)", label, err)
    x, y = bright_peaks(template)
    out: dict[str, Any] = {"method": "adaptive_moments"}
    for role, exp in (("template", template), ("science", science)):
        try:
            out[role], n = star_axis_fwhm(exp, x, y)
            logger.info("%s: %s per-axis FWHM (%.3f, %.3f) px from %d stars", label, role,
                        *out[role], n)
        except ValueError as err:
            logger.warning("%s: no per-axis %s FWHM (%s)", label, role, err)
            out[role] = None
    return out


def subtraction_mode(
    *,
    template_path: str,
    science_path: str,
    mode_path: str,
    config: Mapping[str, Any],
    label: str,
) -> None:
    """Coverage check and the mode decision of one pair (``mode/mode.json``).

    * template coverage (fraction of science pixels where both images have data) below
      ``subtract.requiredTemplateFraction`` raises
      :class:`~psfmatch.errors.TemplateCoverageError` naming the pair and the fraction;
    * ``subtract.mode``: ``auto`` convolves the template unless it is blurrier than the
      science image on both axes (:func:`psfmatch.modes.choose_mode`; per-axis FWHMs
      from the PSF models, else adaptive moments of the brightest stars). If no FWHM
      can be had, ``auto`` convolves the template (logged);
    * ``difference.preconvolution`` convolves the template (the template is matched to
      the preconvolved science image).

    ``mode.json`` holds the decision and its inputs, the fitting roles, the coverage and
    whether a failed fit is to be reported as low coverage
    (``minTemplateFractionForExpectedSuccess``).
    """
    cfg = StepConfig("subtraction_mode", config)
    sub, diff = cfg.subtract, cfg.difference
    check_subtraction(sub, diff)
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    coverage = template_coverage(template, science)
    logger.info("%s: template coverage %.4f", label, coverage)
    check_template_coverage(coverage, required=sub.required_template_fraction, label=label)
    shapes = _shapes(template, science, label)
    axes = {"template_fwhm_xy": shapes["template"], "science_fwhm_xy": shapes["science"]}
    if diff.preconvolution:
        decision = ModeDecision(sub.mode, CONVOLVE_TEMPLATE, "preconvolution", **axes)
    else:
        try:
            decision = choose_mode(sub.mode, **axes)
        except ConfigError as err:
            logger.warning("%s: %s; convolving the template", label, err)
            decision = ModeDecision(sub.mode, CONVOLVE_TEMPLATE, "no PSF widths", **axes)
    convolved, matched_to = fitting_roles(decision.mode)
    expected = coverage >= sub.min_template_fraction_for_expected_success
    record = {
        "mode": decision.mode,
        "convolved": decision.convolved,
        "decision": {**decision.to_dict(), "per_axis_method": shapes["method"]},
        "roles": {"template": convolved, "science": matched_to},
        "preconvolution": bool(diff.preconvolution),
        "template_coverage": coverage,
        "required_template_fraction": sub.required_template_fraction,
        "min_template_fraction_for_expected_success":
            sub.min_template_fraction_for_expected_success,
        "expected_success": bool(expected),
    }
    logger.info("%s: %s (%s): convolving the %s", label, decision.mode, decision.reason,
                decision.convolved)
    io.write_json(mode_path, record)


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
