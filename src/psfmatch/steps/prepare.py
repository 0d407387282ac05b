"""Preparing a pair for the kernel fit: ``warp``, ``detect``, ``select``.

ip_diffim's preparation before ``MakeKernelTask`` solves: the template on the science
pixel grid, kernel candidates detected, vetted and cut into stamps (docs/candidates.md,
docs/warp-and-subtract.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.errors import (
    InsufficientCandidatesError,
    PsfMatchError,
)
from psfmatch.steps.fields import StepConfig
from psfmatch.steps.subtraction import fitting_exposures, fitting_fwhms, read_mode

__all__ = ["detect", "select", "warp"]

logger = logging.getLogger("psfmatch.steps")


def warp(
    *,
    template_path: str,
    science_path: str,
    output_path: str,
    info_path: str,
    config: Mapping[str, Any],
    label: str,
) -> None:
    """Bring the template onto the science grid (through the WCSs or by the stars).

    ``config``: the step's params (:mod:`psfmatch.steps.fields`), read for
    ``psf_match.warpingConfig`` and ``warp`` (``registration``, ``sources``,
    ``same_grid_tolerance_pix``); :func:`psfmatch.align.align_template` does the work.
    Writes the warped template (afw layout) and a JSON sidecar with what was done
    (registration method and why, the fitted transform with its matches and rms,
    resampled or passed through, grid offset, coverage fraction). A template whose
    header has the science image's WCS cards, shape and ``xy0`` (registration ``auto``
    or ``wcs``) is already on the science grid: the output is a relative symbolic link
    to it (:func:`psfmatch.io.link_product`), no pixel read or written.
    """
    from psfmatch.align import align_template, pass_through_record

    cfg = StepConfig("warp", config)
    if cfg.warp.registration in ("auto", "wcs"):
        same = io.same_pixel_grid(template_path, science_path)
        if same is not None:  # identical WCS cards, shape and xy0: nothing to resample
            mask, planes = same
            no_data = np.int32(1 << planes["NO_DATA"]) if "NO_DATA" in planes else 0
            covered = 1.0 - np.count_nonzero(mask & no_data) / mask.size if no_data else 1.0
            info = pass_through_record(registration=cfg.warp.registration,
                                       warping=cfg.psf_match.warping, warp=cfg.warp,
                                       shape=mask.shape, coverage_fraction=covered)
            logger.info("%s: warp %s", label, info)
            io.link_product(output_path, template_path)
            io.write_json(info_path, info)
            return
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    try:
        warped, info, _ = align_template(template, science, warp=cfg.warp,
                                         warping=cfg.psf_match.warping, label=label)
    except PsfMatchError as err:
        msg = f"{label}: {err} (template {template_path}, science {science_path})"
        raise type(err)(msg) from err
    logger.info("%s: warp %s", label, info)
    io.write_exposure(output_path, warped)
    io.write_json(info_path, info)


def detect(
    *,
    template_path: str,
    science_path: str,
    candidates_path: str,
    psf_path: str,
    config: Mapping[str, Any],
    label: str,
    mode_path: str | None = None,
) -> None:
    """Detect kernel candidates and measure both PSF FWHMs.

    Pixels with ``detectionConfig.badMaskPlanes`` or ``detection.exclude_mask_planes``
    cannot be part of a detection (so a bad column is not mistaken for a source).
    Detection runs on the image that gets convolved if ``detOnTemplate`` (the template,
    or the science image when ``mode_path`` says convolveScience), else on the other.
    FWHMs come from the exposures' PSF models when present, else from adaptive moments
    of the bright (S/N >= 50) candidates in each image; ``psf.json`` keeps the
    astronomical roles (``template``, ``science``).
    """
    from psfmatch.detect import detect_candidates, measure_fwhm

    cfg = StepConfig("detect", config)
    det = cfg.psf_match.detection
    mode = read_mode(mode_path)
    detected_on = mode["roles"]["template" if det.det_on_template else "science"]
    paths = {"template": template_path, "science": science_path}
    # one image in memory at a time: the detection image, then the other one
    image = io.read_exposure(paths[detected_on])
    table = detect_candidates(
        image,
        threshold=det.det_threshold,
        threshold_type=det.det_threshold_type,
        n_pixels_min=det.fp_npix_min,
        n_pixels_max=det.fp_npix_max,
        background_box_size=cfg.detection.background_box_size,
        bad_mask_planes=tuple(dict.fromkeys([*det.bad_mask_planes,
                                             *cfg.detection.exclude_mask_planes])),
    )
    n = len(table["id"])
    logger.info("%s: %d detections on the %s", label, n,
                "template" if detected_on == "template" else "science image")
    if n == 0:
        msg = f"{label}: no kernel candidates detected"
        raise InsufficientCandidatesError(msg, {"detected": 0})
    # FWHMs from well-measured stars only: S/N >= 50, footprint not replaced.
    bright = (table["snr"] >= 50.0) & ~table["replaced"]
    other = "science" if detected_on == "template" else "template"
    measured: dict[str, Any] = {}
    for role in (detected_on, other):
        exposure = image if role == detected_on else io.read_exposure(paths[role])
        image = None  # the detection image is not needed beyond its own FWHM
        if exposure.psf is not None:
            measured[role] = {"fwhm": float(exposure.psf.fwhm), "method": "psf_model",
                              "n_stars": 0}
        else:
            try:
                fwhm, used = measure_fwhm(
                    exposure, table["x"][bright], table["y"][bright], min_separation=10.0
                )
                measured[role] = {"fwhm": fwhm, "method": "adaptive_moments", "n_stars": used}
            except PsfMatchError as err:
                measured[role] = err
        del exposure
    psf: dict[str, Any] = {}
    for role in ("template", "science"):  # a failure is reported in this order
        if isinstance(measured[role], PsfMatchError):
            err = measured[role]
            raise type(err)(f"{label}: measuring the {role} PSF FWHM: {err}") from err
        psf[role] = measured[role]
    logger.info("%s: PSF FWHM template %.3f px, science %.3f px", label,
                psf["template"]["fwhm"], psf["science"]["fwhm"])
    io.write_table(
        candidates_path, table,
        units={"x": "pixel", "y": "pixel", "flux": "count", "flux_err": "count", "area": "pixel2"},
        metadata={"step": "detect", "psf_match": cfg.block("psf_match")},
    )
    io.write_json(psf_path, psf)


def select(
    *,
    template_path: str,
    science_path: str,
    candidates_path: str,
    psf_path: str,
    output_candidates: str,
    output_stamps: str,
    config: Mapping[str, Any],
    label: str,
    mode_path: str | None = None,
) -> None:
    """Vet candidates, assign spatial cells, cut ``2·g + 1`` stamps.

    ``mode_path`` (``mode/mode.json``) gives the fitting roles: in convolveScience the
    science image is the fit's "template" (the image convolved, stamps ``T_*``) and the
    template its "science", and the kernel size follows from the FWHMs in those roles
    (:func:`psfmatch.steps.subtraction.fitting_fwhms`;
    docs/subtraction-modes.md#fitting-roles). Without it the template is convolved.

    Stamps touching ``badMaskPlanes`` or ``detection.exclude_mask_planes`` in either
    image are rejected (ip_diffim's production selector also excludes ``BAD``; a bad
    column that is identical in both images otherwise fits perfectly and dominates the
    spatial fit). ``g = int(fpGrowKernelScaling · kernelSize + 0.5)`` when
    ``detectionConfig.scaleByFwhm`` (the kernel size from the AL sizing rule), else
    ``fpGrowPix`` — ``2·kernelSize + 1`` with the defaults. Every candidate is written
    with its status and reason; stamps of the accepted ones go to a FITS cube file.
    """
    from psfmatch.basis import choose_basis
    from psfmatch.select import check_overlap, common_region, cut_stamps, select_candidates

    cfg = StepConfig("select", config)
    pm = cfg.psf_match
    mode = read_mode(mode_path)
    target, reference = fitting_fwhms(io.read_json(psf_path), mode)
    choice = choose_basis(pm, target_fwhm=target, reference_fwhm=reference)
    det = pm.detection
    grow = (int(det.fp_grow_kernel_scaling * choice.kernel_size + 0.5)
            if det.scale_by_fwhm else det.fp_grow_pix)
    template, science = fitting_exposures(io.read_exposure(template_path),
                                          io.read_exposure(science_path), mode)
    found = io.read_table(candidates_path).columns
    try:
        check_overlap(template, science, pm.size_cell_x, pm.size_cell_y)
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    table = select_candidates(
        found, template, science,
        kernel_size=grow,
        bad_mask_planes=tuple(dict.fromkeys([*pm.bad_mask_planes,
                                             *cfg.detection.exclude_mask_planes])),
        min_snr=cfg.detection.min_snr,
        max_candidates=cfg.detection.max_candidates,
        size_cell_x=pm.size_cell_x,
        size_cell_y=pm.size_cell_y,
    )
    ok = table["status"] == "OK"
    counts = {"detected": len(ok), "selected": int(ok.sum())}
    logger.info("%s: %s; kernel size %d (%s), stamps %d px", label, counts,
                choice.kernel_size, choice.mode, 2 * grow + 1)
    if not ok.any():
        msg = f"{label}: no kernel candidate passed selection"
        raise InsufficientCandidatesError(msg, counts)
    boxes = [table[c][ok] for c in ("stamp_x0", "stamp_y0", "stamp_x1", "stamp_y1")]
    stamps = {}
    for prefix, exposure in (("T", template), ("S", science)):
        img, var, msk = cut_stamps(exposure, *boxes)
        stamps.update({f"{prefix}_IMAGE": img, f"{prefix}_VARIANCE": var, f"{prefix}_MASK": msk})
    stamps["IDS"] = np.asarray(table["id"][ok], dtype=np.int64)
    meta = {
        "step": "select",
        "region": common_region(template, science),
        "kernel_size": choice.kernel_size,
        "mask_planes": {"template": template.mask_planes, "science": science.mask_planes},
    }
    io.write_arrays(output_stamps, stamps, metadata=meta)
    io.write_table(output_candidates, table, units={"x": "pixel", "y": "pixel"},
                   metadata={**meta, "counts": counts, "psf_match": cfg.block("psf_match")})
