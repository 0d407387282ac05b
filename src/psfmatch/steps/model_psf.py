"""Model-PSF matching for coadds (ip_diffim's ``ModelPsfMatchTask``) as two steps.

``model_psf_kernel`` (PSF models → kernel, cell table, target PSF image) and
``model_psf_convolve`` (exposure + kernel → matched exposure, metrics), per exposure of
the exposures sheet (docs/model-psf.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from psfmatch import io
from psfmatch.diagnostics import model_psf_metrics
from psfmatch.errors import PsfMatchError, PsfModelError
from psfmatch.exposure import Exposure, PsfModel
from psfmatch.model_match import match_psf_models, psf_matched_exposure
from psfmatch.psf import analytic_psf
from psfmatch.steps.fields import StepConfig

__all__ = ["model_psf_convolve", "model_psf_kernel"]

logger = logging.getLogger("psfmatch.steps")


def _exposure_with_psf(
    inputs: Mapping[str, str], reader: Mapping[str, Any], label: str
) -> Exposure:
    """The exposure of one sheet row with its PSF model (the ``psf`` file, else its PSF HDU)."""
    exposure = io.open_exposure(inputs, reader, label=label)
    if exposure.psf is None:
        msg = (f"{label}: exposure {inputs['image']} does not contain a PSF model (no image HDU "
               "named PSF) and the exposures sheet gives no psf file for it")
        raise PsfModelError(msg)
    return exposure


def _target_model(
    target: Mapping[str, Any], target_inputs: Mapping[str, str], label: str
) -> PsfModel:
    """The target PSF model from ``model_psf_match.target`` (files already resolved)."""
    kind = target["model"]
    if kind in ("gaussian", "moffat", "double_gaussian"):
        return analytic_psf(dict(target))
    if kind == "file":
        return io.read_psf_model(target_inputs["target_psf"])
    if kind == "exposure":
        other = {"image": target_inputs["target_image"]}
        if target_inputs.get("target_psf"):
            other["psf"] = target_inputs["target_psf"]
        where = f"{label}: target exposure {target.get('exposure')!r}"
        return _exposure_with_psf(other, {}, where).psf
    msg = f"model_psf_match.target.model {kind!r} is unknown"
    raise PsfMatchError(msg)


def model_psf_kernel(
    *,
    inputs: Mapping[str, str],
    reader: Mapping[str, Any],
    target_inputs: Mapping[str, str],
    config: Mapping[str, Any],
    kernel_path: str,
    cells_path: str,
    target_psf_path: str,
    label: str,
) -> None:
    """Fit the kernel matching an exposure's PSF model to the target.

    ``config`` holds the step's ``model_psf_match`` fields (target, kernel_sum,
    psf_match, kernel). Writes ``kernel.fits`` (the spatial kernel; its metadata records
    the cell grid, PSF image size, padding, basis, FWHMs, condition number and the
    config), the cell table (one row per PSF candidate: position, status and reason,
    single-fit kernel sum and condition number, and the matched-PSF residual
    ``max|K/ΣK ⋆ P − R| / max R``) and the target PSF image at the PSF image size (the
    matched exposure's PSF).
    """
    cfg = StepConfig("model_psf_kernel", config).model_psf_match
    exposure = _exposure_with_psf(inputs, reader, label)
    reference = _target_model(cfg.target, target_inputs, label)
    try:
        result = match_psf_models(exposure.psf, reference, bbox=exposure.bbox,
                                  kernel_sum=cfg.kernel_sum, kernel=cfg.kernel,
                                  padding=cfg.psf_match)
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    describe = getattr(reference, "describe", None)
    target_description = describe() if describe else {"model": type(reference).__name__}
    block = dict(config.get("model_psf_match", {}))
    kernel = result.kernel
    kernel.metadata.update({
        "step": "model_psf_kernel", "target": target_description,
        "exposure_psf": exposure.psf.describe() if hasattr(exposure.psf, "describe") else {},
        "config": {"kernel": dict(block.get("kernel", {})),
                   "psf_match": dict(block.get("psf_match", {})),
                   "target": dict(cfg.target), "kernel_sum": cfg.kernel_sum},
    })
    io.write_kernel(kernel_path, kernel)
    io.write_table(cells_path, result.cells, units={"x": "pixel", "y": "pixel"},
                   metadata={"step": "model_psf_kernel", "summary": result.summary})
    io.write_psf_image(target_psf_path, result.reference_image, metadata={
        "PSFMODEL": str(target_description.get("model", "")),
        "PSFFWHM": float(result.summary["target_fwhm"]),
    })


def model_psf_convolve(
    *,
    inputs: Mapping[str, str],
    reader: Mapping[str, Any],
    kernel_path: str,
    cells_path: str,
    target_psf_path: str,
    matched_path: str,
    metrics_path: str,
    label: str,
) -> None:
    """Convolve the exposure with the kernel, normalised per pixel; write it and its metrics.

    ``matched.fits`` (afw layout) carries the target PSF image as its ``PSF`` HDU, the
    input's WCS and metadata, plus cards ``PSFMATCH``, ``TGTMODEL``, ``TGTFWHM``.
    ``metrics.json`` holds the fit health (:func:`psfmatch.diagnostics.model_psf_metrics`).
    """
    exposure = _exposure_with_psf(inputs, reader, label)
    kernel = io.read_kernel(kernel_path)
    target = io.read_psf_model(target_psf_path)
    cells = io.read_table(cells_path).columns
    logger.info("%s: convolving %s with a %d-px kernel (%d spatial terms)", label,
                exposure.shape, kernel.kernel_size, kernel.kernel_function.n_terms)
    matched = psf_matched_exposure(exposure, kernel, target.image)
    meta = kernel.metadata
    matched = matched.with_(metadata={
        **matched.metadata, "PSFMATCH": "model",
        "TGTMODEL": str(meta.get("target", {}).get("model", "")),
        "TGTFWHM": float(meta.get("target_fwhm", float("nan"))),
        "KERNSUM": float(kernel.kernel_sum),
    })
    metrics = model_psf_metrics(kernel, cells, matched)
    logger.info("%s: metrics %s", label, {k: metrics[k] for k in ("kernel_sum", "verdict")})
    io.write_exposure(matched_path, matched)
    io.write_json(metrics_path, metrics)
