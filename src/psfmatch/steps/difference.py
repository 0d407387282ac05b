"""The difference image: ``convolve`` (ip_diffim's convolve-and-subtract)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.convolve_bands import BandConvolver
from psfmatch.diagnostics import difference_metrics, normalised_residual, residual_summary
from psfmatch.exposure import Exposure
from psfmatch.modes import CONVOLVE_SCIENCE, combine_convolve_science, restore_mask_planes
from psfmatch.provenance import input_notes
from psfmatch.steps.fields import StepConfig
from psfmatch.steps.subtraction import read_mode
from psfmatch.subtract import CLEAR_SCIENCE_PLANES, prepare_template_mask, subtract

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

    The background is subtracted only with ``subtract.doSubtractBackground``. The work
    is done in bands of 512 rows (:class:`psfmatch.convolve_bands.BandConvolver`; read
    and written band by band through :mod:`psfmatch.io.streams`), so memory is bounded
    by a band, not by the image.
    ``metrics.json`` carries the fit's health and the residual statistics of this raw
    difference (:func:`psfmatch.diagnostics.difference_metrics`; ``maxSpatialConditionNumber``
    judges the condition number), what ingest assumed about the inputs (``inputs``: an
    estimated variance, a saturation level; :func:`psfmatch.provenance.input_notes`) and
    a ``warnings`` list with both.
    """
    cfg = StepConfig("convolve", config)
    pm, sub = cfg.psf_match, cfg.subtract
    mode = read_mode(mode_path)
    kernel = io.read_kernel(kernel_path)
    with ExitStack() as stack:
        template = stack.enter_context(io.open_exposure_rows(template_path))
        science = stack.enter_context(io.open_exposure_rows(science_path))
        if science.shape != template.shape or science.xy0 != template.xy0:
            msg = (f"science ({science.shape} at {science.xy0}) and template "
                   f"({template.shape} at {template.xy0}) must share one grid")
            raise ValueError(msg)
        bands = _Bands(template, science, kernel, mode, sub)
        logger.info("%s: convolving the %s %s with %d spatial terms, in %d bands of %d rows",
                    label, mode["convolved"], template.shape, kernel.kernel_function.n_terms,
                    len(bands.convolver.bands()), bands.convolver.band)
        ny, nx = science.shape
        z = np.empty(ny * nx, dtype=np.float32)  # usable D/sigma, in row-major order
        n_z = n_usable = 0
        writers: dict[str, Any] = {}
        for start, stop in bands.convolver.bands():
            difference, matched = bands.band(start, stop)
            if not writers:  # every band has the planes of the first
                writers = bands.open_writers(stack, difference, matched, difference_path,
                                             matched_path)
            writers["difference"].write(start, difference)
            if "matched" in writers:
                writers["matched"].write(start, matched)
            values, usable = normalised_residual(difference)
            z[n_z : n_z + values.size] = values
            n_z += values.size
            n_usable += int(np.count_nonzero(usable))
        if mode["mode"] == CONVOLVE_SCIENCE:
            logger.info("%s: convolution done; difference divided by the kernel sum %.6f at "
                        "the centre", label, bands.norm)
        statistics = residual_summary(z[:n_z], n_usable=n_usable, n_total=ny * nx)
        del z
        inputs = {"science": science.metadata, "template": template.metadata}
    candidates = io.read_table(candidates_path).columns
    metrics = difference_metrics(
        None, kernel, candidates, n_star_per_cell=pm.n_star_per_cell,
        max_spatial_condition_number=pm.max_spatial_condition_number, statistics=statistics)
    metrics["inputs"] = input_notes(inputs)
    for role, notes in metrics["inputs"].items():
        if "variance" in notes:
            metrics["warnings"].append(f"{role} variance {notes['variance']}")
    logger.info("%s: metrics %s", label, {k: metrics[k] for k in ("kernel_sum", "verdict")})
    io.write_json(metrics_path, metrics)


class _Bands:
    """The convolve step's work on one band of rows, in the mode of the pair."""

    def __init__(self, template: Any, science: Any, kernel: Any, mode: Mapping[str, Any],
                 sub: Any):
        self.template, self.science, self.kernel, self.sub = template, science, kernel, sub
        self.convolve_science = mode["mode"] == CONVOLVE_SCIENCE
        source = science if self.convolve_science else template
        self.convolver = BandConvolver(kernel, source.shape, source.xy0)
        self.masks = {"preserve": sub.preserve_template_mask,
                      "rename": sub.rename_template_mask}
        self.norm = None
        if self.convolve_science:
            (x0, y0), (ny, nx) = science.xy0, science.shape  # a row reader: no bbox
            self.norm = kernel.sum_at_centre_of((x0, y0, x0 + nx - 1, y0 + ny - 1))
            if not (math.isfinite(self.norm) and self.norm > 0):
                msg = f"kernel sum at the science centre must be > 0, got {self.norm!r}"
                raise ValueError(msg)

    def band(self, start: int, stop: int) -> tuple[Exposure, Exposure]:
        """``(difference, matched)`` of rows ``start .. stop - 1``."""
        lo, hi = self.convolver.rows_needed(start, stop)
        sub, preserve = self.sub, self.sub.preserve_mask_planes
        if self.convolve_science:
            rows = self.science.rows(lo, hi)
            cleared = rows.with_(mask=rows.mask & ~rows.plane_bitmask(CLEAR_SCIENCE_PLANES))
            convolved = restore_mask_planes(self.convolver.convolve(cleared, start, stop),
                                            _rows(cleared, start - lo, stop - lo), preserve)
            template = self.template.rows(start, stop)
            difference, _ = combine_convolve_science(
                convolved, template, self.kernel, norm=self.norm,
                subtract_background=sub.do_subtract_background,
                preserve_template=self.masks["preserve"], rename_template=self.masks["rename"])
            return difference, prepare_template_mask(template, **self.masks)
        prepared = prepare_template_mask(self.template.rows(lo, hi), **self.masks)
        matched = restore_mask_planes(self.convolver.convolve(prepared, start, stop),
                                      _rows(prepared, start - lo, stop - lo), preserve)
        difference = subtract(self.science.rows(start, stop), matched, self.kernel,
                              subtract_background=sub.do_subtract_background)
        return difference, matched

    def open_writers(self, stack: ExitStack, difference: Exposure, matched: Exposure,
                     difference_path: str, matched_path: str | None) -> dict[str, Any]:
        """The two output files, with the headers ``write_exposure`` would write."""
        sci, tmpl = self.science, self.template
        shape = sci.shape
        diff_psf = tmpl.psf if self.convolve_science else sci.psf
        writers = {"difference": stack.enter_context(io.exposure_writer(
            difference_path, shape=shape, metadata=sci.metadata, wcs=sci.wcs, xy0=sci.xy0,
            mask_planes=difference.mask_planes, psf_image=_psf_image(diff_psf)))}
        if matched_path is not None:
            metadata = dict(tmpl.metadata)
            if self.convolve_science:
                metadata.update(PSFMCONV="science", KSUMNORM=float(self.norm))
            writers["matched"] = stack.enter_context(io.exposure_writer(
                matched_path, shape=shape, metadata=metadata, wcs=tmpl.wcs, xy0=tmpl.xy0,
                mask_planes=matched.mask_planes, psf_image=_psf_image(tmpl.psf)))
        return writers


def _rows(exposure: Exposure, start: int, stop: int) -> Exposure:
    """Rows ``start .. stop - 1`` of ``exposure`` (views), ``xy0`` moved with them."""
    return exposure.with_(image=exposure.image[start:stop], mask=exposure.mask[start:stop],
                          variance=exposure.variance[start:stop],
                          xy0=(exposure.xy0[0], exposure.xy0[1] + start))


def _psf_image(psf: Any) -> np.ndarray | None:
    """What ``write_exposure`` writes of a PSF (its image; others are not persisted)."""
    if psf is None:
        return None
    if not hasattr(psf, "image"):
        logger.warning("PSF %s is not persisted", type(psf).__name__)
        return None
    return np.asarray(psf.image, dtype=np.float64)
