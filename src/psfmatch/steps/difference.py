"""The difference image: ``convolve`` (ip_diffim's convolve-and-subtract)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from psfmatch import io
from psfmatch.diagnostics import difference_metrics
from psfmatch.provenance import input_notes
from psfmatch.steps.fields import StepConfig
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
) -> None:
    """Convolve the warped template with the kernel, subtract, write products and metrics.

    ``difference = science − K ⋆ template − background``; variance ``var_S + K²⋆var_T``;
    masks OR-ed over the kernel footprint, template planes kept as ip_diffim's
    ``updateMasks`` does; a border of ``k // 2`` flagged ``EDGE`` (docs/warp-and-subtract.md).
    ``metrics.json`` carries the fit's health and the residual statistics
    (:func:`psfmatch.diagnostics.difference_metrics`; ``maxSpatialConditionNumber``
    judges the condition number), what ingest assumed about the inputs (``inputs``: an
    estimated variance, a saturation level; :func:`psfmatch.provenance.input_notes`) and
    a ``warnings`` list with both.
    """
    pm = StepConfig("convolve", config).psf_match
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    kernel = io.read_kernel(kernel_path)
    logger.info("%s: convolving %s template with %d spatial terms", label, template.shape,
                kernel.kernel_function.n_terms)
    matched = convolve_exposure(prepare_template_mask(template), kernel)
    logger.info("%s: convolution done; subtracting", label)
    difference = subtract(science, matched, kernel)
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
