"""The difference image: ``convolve`` (ip_diffim's convolve-and-subtract)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from psfmatch import io
from psfmatch.diagnostics import difference_metrics
from psfmatch.modes import CONVOLVE_SCIENCE, difference_convolve_science, restore_mask_planes
from psfmatch.provenance import input_notes
from psfmatch.steps.fields import StepConfig
from psfmatch.steps.subtraction import read_mode
from psfmatch.subtract import convolve_exposure, prepare_template_mask, subtract

__all__ = ["convolve"]

logger = logging.getLogger("psfmatch.steps")


def convolve(
    *,
    template_path: str,
    science_path: str,
    kernel_path: str,
    candidates_path: str,
    difference_path: str,
    matched_path: str | None,
    metrics_path: str,
    config: Mapping[str, Any],
    label: str,
    mode_path: str | None = None,
) -> None:
    """Convolve one image with the kernel, subtract, write the raw difference and metrics.

    convolveTemplate (and the preconvolution variant, where ``science_path`` is the
    preconvolved science image): ``difference = science − K ⋆ template − background``;
    variance ``var_S + K²⋆var_T``; masks OR-ed over the kernel footprint, template planes
    kept as ip_diffim's ``updateMasks`` does (``preserveTemplateMask``,
    ``renameTemplateMask``), ``preserveMaskPlanes`` undilated; a border of ``k // 2``
    flagged ``EDGE`` (docs/warp-and-subtract.md). ``matched_path`` gets ``K ⋆ template``.

    convolveScience (``mode_path`` says so): ``difference = (K ⋆ science + background −
    template) / κ_c`` in science counts with the template's PSF, variance
    ``(K²⋆var_S + var_T)/κ_c²``, the science masks dilated
    (:func:`psfmatch.modes.difference_convolve_science`; docs/subtraction-modes.md);
    ``matched_path`` gets ip_diffim's ``matchedTemplate``, the template itself (masks
    prepared), with ``PSFMCONV = 'science'`` and ``KSUMNORM = κ_c`` in its header.

    The background is subtracted only with ``subtract.doSubtractBackground``.
    ``metrics.json`` carries the fit's health and the residual statistics of this raw
    difference (:func:`psfmatch.diagnostics.difference_metrics`; ``maxSpatialConditionNumber``
    judges the condition number), what ingest assumed about the inputs (``inputs``: an
    estimated variance, a saturation level; :func:`psfmatch.provenance.input_notes`) and
    a ``warnings`` list with both.
    """
    cfg = StepConfig("convolve", config)
    pm, sub = cfg.psf_match, cfg.subtract
    mode = read_mode(mode_path)
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    kernel = io.read_kernel(kernel_path)
    masks = {"preserve": sub.preserve_template_mask, "rename": sub.rename_template_mask}
    logger.info("%s: convolving the %s %s with %d spatial terms", label, mode["convolved"],
                template.shape, kernel.kernel_function.n_terms)
    if mode["mode"] == CONVOLVE_SCIENCE:
        x0, y0, x1, y1 = science.bbox
        norm = kernel.sum_at(0.5 * (x0 + x1), 0.5 * (y0 + y1))
        difference, _ = difference_convolve_science(
            science, template, kernel, norm=norm,
            subtract_background=sub.do_subtract_background,
            preserve_template=masks["preserve"], rename_template=masks["rename"],
            preserve_planes=sub.preserve_mask_planes)
        prepared = prepare_template_mask(template, **masks)
        matched = prepared.with_(metadata={**prepared.metadata, "PSFMCONV": "science",
                                           "KSUMNORM": float(norm)})
        logger.info("%s: convolution done; difference divided by the kernel sum %.6f at the "
                    "centre", label, norm)
    else:
        prepared = prepare_template_mask(template, **masks)
        matched = restore_mask_planes(convolve_exposure(prepared, kernel), prepared,
                                      sub.preserve_mask_planes)
        logger.info("%s: convolution done; subtracting", label)
        difference = subtract(science, matched, kernel,
                              subtract_background=sub.do_subtract_background)
    candidates = io.read_table(candidates_path).columns
    metrics = difference_metrics(
        difference, kernel, candidates, n_star_per_cell=pm.n_star_per_cell,
        max_spatial_condition_number=pm.max_spatial_condition_number)
    metrics["inputs"] = input_notes({"science": science.metadata,
                                     "template": template.metadata})
    for role, notes in metrics["inputs"].items():
        if "variance" in notes:
            metrics["warnings"].append(f"{role} variance {notes['variance']}")
    logger.info("%s: metrics %s", label, {k: metrics[k] for k in ("kernel_sum", "verdict")})
    if matched_path is not None:
        io.write_exposure(matched_path, matched)
    io.write_exposure(difference_path, difference)
    io.write_json(metrics_path, metrics)
