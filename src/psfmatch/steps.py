"""One function per workflow step: files in → validation → array core → files out.

These are what the ``scripts/`` adapters call; they are plain functions, importable
and testable without Snakemake. Only :mod:`psfmatch.io` touches files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.errors import PsfMatchError
from psfmatch.exposure import remap_mask_bits

__all__ = [
    "assess",
    "convolve",
    "detect",
    "fit_single_kernels",
    "ingest",
    "kernel_sum_clip",
    "select",
    "simulate",
    "spatial_fit",
    "warp",
]

logger = logging.getLogger("psfmatch.steps")

#: How the pairs-sheet ``<role>_mask_convention`` column maps to reader options.
MASK_CONVENTIONS: dict[str, dict[str, Any]] = {
    "afw": {},
    "ztf": {"mask_bits": io.ZTF_MASK_BITS},
    "decam_cp": {"mask_values": io.DECAM_CP_MASK_VALUES},
}


def simulate(
    *,
    simulation: Mapping[str, Any],
    template_path: str,
    science_path: str,
    truth_path: str,
    sources_path: str,
) -> None:
    """Simulate one pair (:func:`psfmatch.synth.make_pair`) and write it with its truth.

    ``simulation`` holds :class:`~psfmatch.synth.SimulationParams` fields (lists are
    accepted for tuple fields). Writes the two exposures (afw layout), ``truth.json``
    (kernel, scale, background, catalogues' summary) and ``sources.parquet`` (every
    simulated source with its kind, position and fluxes).
    """
    from psfmatch import synth

    params = synth.SimulationParams(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in simulation.items()}
    )
    logger.info("simulating %s", params)
    pair = synth.make_pair(params)
    io.write_exposure(template_path, pair.template)
    io.write_exposure(science_path, pair.science)
    truth = pair.truth.to_dict()
    truth["params"] = dataclasses.asdict(params)
    io.write_json(truth_path, truth)
    columns, units = synth.source_table(pair.truth)
    io.write_table(sources_path, columns, units=units, metadata={"step": "simulate", "params": truth["params"]})
    logger.info("wrote %s and %s", template_path, science_path)


def ingest(
    *,
    inputs: Mapping[str, str],
    output_path: str,
    label: str,
    mask_convention: str = "afw",
    gain: float | None = None,
    layout: str = "auto",
    missing: Mapping[str, str] | None = None,
) -> None:
    """Read one input image in any supported layout and write it in the afw layout.

    Parameters
    ----------
    inputs : mapping
        ``image`` and optionally ``variance``, ``weight``, ``error``, ``mask``, ``psf``
        paths (as in the pairs sheet).
    output_path : str
        Destination (afw MEF).
    label : str
        Names the pair and role in errors and logs.
    mask_convention : {"afw", "ztf", "decam_cp"}
        How to read a separate integer mask.
    gain : float, optional
        Gain (e-/ADU) for the variance estimate when no variance map is given.
    layout : {"auto", "mef", "single"}
        The sheet's declared file layout (:func:`psfmatch.io.read_exposure`).
    missing : mapping, optional
        ``{sheet column: message}`` of input files the pairs sheet names but that do
        not exist; any entry fails this pair's job with :class:`InputFileError`.

    Image, mask and variance are copied unchanged (apart from dtype: float32/int32);
    non-finite image pixels and pixels with a variance <= 0 or non-finite are flagged
    ``NO_DATA`` by the reader (variance +inf).

    Raises
    ------
    InputFileError, ExposureError
        Unreadable or inconsistent inputs (named with ``label``), or an image without a
        single usable pixel (all non-finite, all flagged or no valid variance).
    """
    from psfmatch.errors import ExposureError, InputFileError

    if missing:
        raise InputFileError(f"{label}: " + "; ".join(missing.values()))
    if mask_convention not in MASK_CONVENTIONS:
        msg = f"{label}: unknown mask convention {mask_convention!r}; use one of {sorted(MASK_CONVENTIONS)}"
        raise PsfMatchError(msg)
    try:
        exposure = io.read_exposure(
            inputs["image"],
            variance=inputs.get("variance"),
            weight=inputs.get("weight"),
            error=inputs.get("error"),
            mask=inputs.get("mask"),
            gain=gain,
            layout=layout,
            **MASK_CONVENTIONS[mask_convention],
        )
        if "psf" in inputs:
            exposure = exposure.with_(psf=io.read_psf_image(inputs["psf"]))
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    n_bad_variance = int(np.count_nonzero(~(exposure.variance > 0)))  # NaN compares False
    exposure = flag_unusable_variance(exposure, label)
    usable = np.isfinite(exposure.image) & (exposure.mask == 0)
    if not usable.any():
        flagged = {name: int(np.count_nonzero(exposure.plane(name))) for name in exposure.mask_planes}
        msg = (f"{label}: {inputs['image']} has no usable pixel: all {exposure.image.size} pixels are "
               f"non-finite or flagged (pixels per plane: {({k: v for k, v in flagged.items() if v})}; "
               f"non-finite image values: {int(np.count_nonzero(~np.isfinite(exposure.image)))}; "
               f"variance <= 0 or NaN: {n_bad_variance})")
        raise ExposureError(msg)
    logger.info(
        "%s: %s, planes %s, %.1f%% pixels unflagged, median variance %.4g",
        label,
        exposure.shape,
        sorted(exposure.mask_planes),
        100.0 * usable.mean(),
        float(np.nanmedian(exposure.variance[np.isfinite(exposure.variance)]))
        if np.isfinite(exposure.variance).any()
        else float("nan"),
    )
    io.write_exposure(output_path, exposure)


def flag_unusable_variance(exposure, label: str):
    """Flag pixels whose variance is <= 0 or not finite ``NO_DATA`` (variance +inf).

    image: unchanged; variance: such pixels become +inf (a weight of 0 everywhere
    downstream); mask: they gain ``NO_DATA``. Such a variance cannot weight a fit
    (1/0) or be propagated; the count is logged as a warning.
    """
    with np.errstate(invalid="ignore"):
        bad = ~(exposure.variance > 0) | ~np.isfinite(exposure.variance)
    n_bad = int(np.count_nonzero(bad & np.isfinite(exposure.image)))
    if not bad.any():
        return exposure
    if n_bad:
        logger.warning("%s: %d pixels have a variance <= 0 or not finite; flagged NO_DATA, variance +inf",
                       label, n_bad)
    exp = exposure.with_planes(["NO_DATA"])
    mask = exp.mask.copy()
    mask[bad] |= np.int32(1 << exp.mask_planes["NO_DATA"])
    variance = np.where(bad, np.inf, exp.variance).astype(exp.variance.dtype)
    return exp.with_(mask=mask, variance=variance)


# ---------------------------------------------------------------------- kernel DAG
# The remaining steps form ip_diffim's MakeKernelTask / _solve loop as separate jobs:
# warp -> detect -> select -> fit_single_kernels -> [kernel_sum_clip -> spatial_fit ->
# assess] x maxSpatialIterations -> final spatial_fit -> convolve.
# Candidate tables carry every candidate with status GOOD/BAD, the stage that rejected
# it (select, single, ksum, spatial), the iteration and the reason.

def _config(psf_match: Mapping[str, Any]):
    """PsfMatchConfig from the subset of LSST-named fields a step receives."""
    from psfmatch.config import PsfMatchConfig

    return PsfMatchConfig.from_lsst(psf_match)


def warp(
    *,
    template_path: str,
    science_path: str,
    output_path: str,
    info_path: str,
    warping: Mapping[str, Any],
    same_grid_tolerance: float,
    label: str,
) -> None:
    """Resample the template onto the science grid (reference §9); pass through if identical.

    Writes the warped template (afw layout) and a JSON sidecar with what was done
    (resampled or not, grid offset, coverage fraction).
    """
    from psfmatch.config import WarpingConfig
    from psfmatch.warp import warp_exposure

    cfg = WarpingConfig.from_lsst(warping, where="psf_match.warpingConfig")
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    try:
        warped, info = warp_exposure(
            template,
            wcs=science.wcs,
            shape=science.shape,
            xy0=science.xy0,
            kernel=cfg.warping_kernel_name,
            mask_kernel=cfg.mask_warping_kernel_name,
            interp_length=cfg.interp_length,
            grow_full_mask=cfg.grow_full_mask,
            same_grid_tolerance=same_grid_tolerance,
        )
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err} (template {template_path}, science {science_path})") from err
    logger.info("%s: warp %s", label, info)
    io.write_exposure(output_path, warped)
    io.write_json(info_path, info)


def detect(
    *,
    template_path: str,
    science_path: str,
    candidates_path: str,
    psf_path: str,
    psf_match: Mapping[str, Any],
    background_box_size: int,
    label: str,
    exclude_mask_planes: tuple[str, ...] = (),
) -> None:
    """Detect kernel candidates and measure both PSF FWHMs (reference §1.4, §6.1, §6.4a).

    Pixels with ``detectionConfig.badMaskPlanes`` or ``exclude_mask_planes`` cannot be
    part of a detection (so a bad column is not mistaken for a source).

    Detection runs on the template if ``detOnTemplate`` (the image that gets convolved),
    else on the science image. FWHMs come from the exposures' PSF models when present,
    else from adaptive moments of the brightest isolated candidates in each image.
    """
    from psfmatch.detect import detect_candidates, measure_fwhm
    from psfmatch.errors import InsufficientCandidatesError

    cfg = _config(psf_match)
    det = cfg.detection
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    image = template if det.det_on_template else science
    table = detect_candidates(
        image,
        threshold=det.det_threshold,
        threshold_type=det.det_threshold_type,
        n_pixels_min=det.fp_npix_min,
        n_pixels_max=det.fp_npix_max,
        background_box_size=background_box_size,
        bad_mask_planes=tuple(dict.fromkeys([*det.bad_mask_planes, *exclude_mask_planes])),
    )
    n = len(table["id"])
    logger.info("%s: %d detections on the %s", label, n, "template" if det.det_on_template else "science image")
    if n == 0:
        msg = f"{label}: no kernel candidates detected"
        raise InsufficientCandidatesError(msg, {"detected": 0})
    psf: dict[str, Any] = {}
    # FWHMs from well-measured stars only: S/N >= 50, footprint not replaced.
    bright = (table["snr"] >= 50.0) & ~table["replaced"]
    for role, exposure in (("template", template), ("science", science)):
        if exposure.psf is not None:
            psf[role] = {"fwhm": float(exposure.psf.fwhm), "method": "psf_model", "n_stars": 0}
            continue
        try:
            fwhm, used = measure_fwhm(
                exposure, table["x"][bright], table["y"][bright], min_separation=10.0
            )
        except PsfMatchError as err:
            raise type(err)(f"{label}: measuring the {role} PSF FWHM: {err}") from err
        psf[role] = {"fwhm": fwhm, "method": "adaptive_moments", "n_stars": used}
    logger.info("%s: PSF FWHM template %.3f px, science %.3f px", label,
                psf["template"]["fwhm"], psf["science"]["fwhm"])
    io.write_table(
        candidates_path, table,
        units={"x": "pixel", "y": "pixel", "flux": "count", "flux_err": "count", "area": "pixel2"},
        metadata={"step": "detect", "psf_match": dict(psf_match)},
    )
    io.write_json(psf_path, psf)


def _basis_choice(cfg, psf: Mapping[str, Any]):
    """AL sigmas/degrees/kernel size from the config and the measured FWHMs (§2.2).

    A delta-function basis has ``kernelSize`` pixels whatever the FWHMs (§3.1).
    """
    from psfmatch.basis import AlardLuptonChoice, choose_alard_lupton
    from psfmatch.config import DF

    if cfg.kernel_basis_set == DF:
        return AlardLuptonChoice((), (), cfg.kernel_size, "delta-function")
    return choose_alard_lupton(
        kernel_size=cfg.kernel_size,
        sigmas=cfg.alard_sig_gauss,
        degrees=cfg.alard_deg_gauss,
        target_fwhm=psf["template"]["fwhm"],
        reference_fwhm=psf["science"]["fwhm"],
        scale_by_fwhm=cfg.scale_by_fwhm,
        kernel_size_fwhm_scaling=cfg.kernel_size_fwhm_scaling,
        kernel_size_min=cfg.kernel_size_min,
        kernel_size_max=cfg.kernel_size_max,
        gauss_beta=cfg.alard_gauss_beta,
        min_sigma=cfg.alard_min_sig,
        min_sigma_deconv=cfg.alard_min_sig_deconv,
    )


def select(
    *,
    template_path: str,
    science_path: str,
    candidates_path: str,
    psf_path: str,
    output_candidates: str,
    output_stamps: str,
    psf_match: Mapping[str, Any],
    min_snr: float,
    max_candidates: int,
    label: str,
    exclude_mask_planes: tuple[str, ...] = (),
) -> None:
    """Vet candidates, assign spatial cells, cut ``2·g + 1`` stamps (reference §6.2, §5.1).

    Stamps touching ``badMaskPlanes`` or ``exclude_mask_planes`` in either image are
    rejected (ip_diffim's production selector also excludes ``BAD``; a bad column that
    is identical in both images otherwise fits perfectly and dominates the spatial fit).

    ``g = int(fpGrowKernelScaling · kernelSize + 0.5)`` when ``scaleByFwhm`` (the
    kernel size from the AL sizing rule), else ``fpGrowPix`` — ``2·kernelSize + 1`` with
    the defaults. Every candidate is written with its status and reason; stamps of the
    accepted ones go to a FITS cube file.
    """
    from psfmatch.errors import InsufficientCandidatesError
    from psfmatch.select import cut_stamps, select_candidates

    cfg = _config(psf_match)
    psf = io.read_json(psf_path)
    choice = _basis_choice(cfg, psf)
    det = cfg.detection
    grow = (
        int(det.fp_grow_kernel_scaling * choice.kernel_size + 0.5)
        if det.scale_by_fwhm
        else det.fp_grow_pix
    )
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    found = io.read_table(candidates_path).columns
    _check_overlap(template, science, cfg.size_cell_x, cfg.size_cell_y, label)
    table = select_candidates(
        found, template, science,
        kernel_size=grow,
        bad_mask_planes=tuple(dict.fromkeys([*cfg.bad_mask_planes, *exclude_mask_planes])),
        min_snr=min_snr,
        max_candidates=max_candidates,
        size_cell_x=cfg.size_cell_x,
        size_cell_y=cfg.size_cell_y,
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
    region = _region(template, science)
    meta = {
        "step": "select",
        "region": region,
        "kernel_size": choice.kernel_size,
        "mask_planes": {"template": template.mask_planes, "science": science.mask_planes},
    }
    io.write_arrays(output_stamps, stamps, metadata=meta)
    io.write_table(output_candidates, table, units={"x": "pixel", "y": "pixel"},
                   metadata={**meta, "counts": counts, "psf_match": dict(psf_match)})


def _check_overlap(template, science, size_cell_x: int, size_cell_y: int, label: str) -> None:
    """Refuse a pair whose common area with data is smaller than one spatial cell."""
    from psfmatch.select import SelectionError, data_overlap

    box = data_overlap(template, science)
    width, height = (0, 0) if box is None else (box[2] - box[0] + 1, box[3] - box[1] + 1)
    if width < size_cell_x or height < size_cell_y:
        where = "no pixel" if box is None else f"only {width} x {height} pixels (x {box[0]}..{box[2]}, y {box[1]}..{box[3]})"
        msg = (f"{label}: template and science share {where} with data, less than one kernel cell "
               f"(psf_match.sizeCellX={size_cell_x}, sizeCellY={size_cell_y}); "
               f"not enough area to fit a kernel")
        raise SelectionError(msg)


def _region(template, science) -> list[int]:
    """Cell-set region: template bbox ∩ science bbox (inclusive parent coordinates)."""
    t, s = template.bbox, science.bbox
    return [max(t[0], s[0]), max(t[1], s[1]), min(t[2], s[2]), min(t[3], s[3])]


def _load_stamps(path: str):
    """Template and science stamp stacks, both masks in the science plane numbering."""
    arrays, meta = io.read_arrays(
        path, ("T_IMAGE", "T_VARIANCE", "T_MASK", "S_IMAGE", "S_VARIANCE", "S_MASK", "IDS")
    )
    template = (arrays["T_IMAGE"], arrays["T_VARIANCE"], arrays["T_MASK"])
    science = (arrays["S_IMAGE"], arrays["S_VARIANCE"], arrays["S_MASK"])
    science_planes = meta["mask_planes"]["science"]
    template = (*template[:2], remap_mask_bits(template[2], meta["mask_planes"]["template"],
                                               science_planes))
    meta = {**meta, "mask_planes": {"template": science_planes, "science": science_planes}}
    return template, science, np.asarray(arrays["IDS"], dtype=np.int64), meta


def _bad_bits(meta: Mapping[str, Any], planes) -> int:
    """Bits of ``planes`` in the template and science numbering (stamps keep both masks)."""
    bits = 0
    for role in ("template", "science"):
        numbering = meta["mask_planes"][role]
        bits |= sum(1 << numbering[p] for p in planes if p in numbering)
    return bits


def fit_single_kernels(
    *,
    candidates_path: str,
    stamps_path: str,
    psf_path: str,
    output_candidates: str,
    output_kernels: str,
    psf_match: Mapping[str, Any],
    label: str,
) -> None:
    """Per-candidate fits with residual clipping (reference §2–§4, §5.2, §5.9).

    Basis: Alard–Lupton (degrees chosen by BIC votes of the active candidates when
    ``useBicForKernelBasis``) or delta functions, regularized by ``λH`` when
    ``useRegularization`` (λ per candidate from ``lambdaType``; written to the table's
    ``lambda`` column).
    """
    from psfmatch.candidates import fit_single_kernels as fit_all
    from psfmatch.config import DF

    cfg = _config(psf_match)
    choice = _basis_choice(cfg, io.read_json(psf_path))
    selected = io.read_table(candidates_path)
    table = dict(selected.columns)
    t_stamps, s_stamps, ids, meta = _load_stamps(stamps_path)
    bad_bits = _bad_bits(meta, cfg.bad_mask_planes)
    fit_options = {
        "fit_background": cfg.fit_for_background,
        "constant_variance_weighting": cfg.constant_variance_weighting,
        "iterate_single_kernel": cfg.iterate_single_kernel,
        "check_condition_number": cfg.check_condition_number,
        "max_condition_number": cfg.max_condition_number,
        "condition_number_type": cfg.condition_number_type,
        "single_kernel_clipping": cfg.single_kernel_clipping,
        "residual_mean_max": cfg.candidate_residual_mean_max,
        "residual_std_max": cfg.candidate_residual_std_max,
        "bad_bits": bad_bits,
        "core_radius": cfg.candidate_core_radius if cfg.use_core_stats else None,
    }
    n = len(table["id"])
    row = {int(i): r for r, i in enumerate(table["id"])}
    index = np.array([row[int(i)] for i in ids], dtype=np.int64)
    if cfg.kernel_basis_set == DF:
        basis, basis_meta, regularization = _delta_function_setup(cfg, choice.kernel_size)
        fit_options.update(regularization)
    else:
        basis, basis_meta = _alard_lupton_setup(cfg, choice, table, index, t_stamps, s_stamps,
                                                fit_options, label)
    logger.info("%s: fitting %d candidates with %d %s basis kernels of %d px (%s)",
                label, len(ids), basis.shape[0], basis_meta["type"], choice.kernel_size,
                choice.mode)
    fits = fit_all(t_stamps, s_stamps, basis, **fit_options)
    out = dict(table)
    out["status"] = np.full(n, "BAD", dtype=object)
    out["stage"] = np.where(table["status"] == "OK", "", "select").astype(object)
    out["iteration"] = np.full(n, -1, dtype=np.int64)
    out["reason"] = np.asarray(table["reason"], dtype=object).copy()
    for name, values in (("kernel_sum", fits.kernel_sum), ("background", fits.background),
                         ("condition_number", fits.condition_number),
                         ("lambda", fits.regularization_lambda),
                         ("single_mean", fits.mean), ("single_rms", fits.rms)):
        column = np.full(n, np.nan)
        column[index] = values
        out[name] = column
    out["status"][index] = np.where(fits.good, "GOOD", "BAD")
    out["stage"][index] = np.where(fits.good, "", "single")
    out["reason"][index] = fits.reason
    counts = {**selected.metadata.get("counts", {}),
              "single_good": int(fits.good.sum())}
    if regularization := basis_meta.get("regularization"):
        lam = fits.regularization_lambda[fits.good]
        regularization["lambda_median"] = float(np.median(lam)) if lam.size else None
        regularization["n_lambda_at_scan_edge"] = int(fits.lambda_at_grid_edge[fits.good].sum())
        if regularization["n_lambda_at_scan_edge"]:
            logger.warning("%s: %d good candidates have their risk-minimising lambda at an end of "
                           "the scan lambdaMin..lambdaMax (%s..%s); widen the scan", label,
                           regularization["n_lambda_at_scan_edge"], cfg.lambda_min, cfg.lambda_max)
        logger.info("%s: regularization %s", label, regularization)
    logger.info("%s: single-kernel fits %s", label, counts)
    io.write_arrays(
        output_kernels,
        {"BASIS": basis, "KERNELS": fits.kernels, "NORMAL_MATRIX": fits.normal_matrix,
         "NORMAL_VECTOR": fits.normal_vector, "IDS": ids},
        metadata={"basis": basis_meta, "fit_background": cfg.fit_for_background,
                  "region": meta["region"], "psf_match": dict(psf_match)},
    )
    io.write_table(output_candidates, out, units={"x": "pixel", "y": "pixel"},
                   metadata={"step": "fit_single_kernels", "counts": counts,
                             "region": meta["region"], "psf_match": dict(psf_match)})
    if not fits.good.any():
        from psfmatch.errors import InsufficientCandidatesError

        raise InsufficientCandidatesError(f"{label}: no candidate has a good single-kernel fit", counts)


def _delta_function_setup(cfg, kernel_size: int):
    """DF basis, its description, and the regularization options of the fits (§3)."""
    from psfmatch.basis import delta_function_basis
    from psfmatch.regularization import LambdaRule, regularization_matrix

    basis = delta_function_basis(kernel_size)
    meta: dict[str, Any] = {"type": "delta-function", "kernel_size": kernel_size}
    if not cfg.use_regularization:
        return basis, meta, {}
    h = regularization_matrix(
        kernel_size,
        regularization_type=cfg.regularization_type,
        stencil=cfg.central_regularization_stencil,
        orders=cfg.forward_regularization_orders,
        border_penalty=cfg.regularization_border_penalty,
        fit_background=cfg.fit_for_background,
    )
    rule = LambdaRule(
        lambda_type=cfg.lambda_type, value=cfg.lambda_value, scaling=cfg.lambda_scaling,
        step_type=cfg.lambda_step_type, minimum=cfg.lambda_min, maximum=cfg.lambda_max,
        step=cfg.lambda_step,
    )
    meta["regularization"] = {
        "type": cfg.regularization_type,
        "stencil": cfg.central_regularization_stencil,
        "orders": list(cfg.forward_regularization_orders),
        "border_penalty": cfg.regularization_border_penalty,
        "lambda_type": cfg.lambda_type,
    }
    return basis, meta, {"regularization": h, "regularization_lambda": rule}


def _alard_lupton_setup(cfg, choice, table, index, t_stamps, s_stamps, fit_options, label):
    """AL basis (degrees by BIC votes if configured) and its description (§2, §5.9)."""
    from psfmatch.basis import alard_lupton_basis
    from psfmatch.bic import choose_degrees_by_bic
    from psfmatch.candidates import active_set
    from psfmatch.errors import InsufficientCandidatesError

    degrees = choice.degrees
    meta: dict[str, Any] = {"type": "alard-lupton", "sigmas": choice.sigmas,
                            "kernel_size": choice.kernel_size, "mode": choice.mode}
    if cfg.use_bic_for_kernel_basis:
        # voters: the active set of the selected candidates (top nStarPerCell per cell)
        voters = active_set(table["cell"][index], table["rank"][index],
                            np.ones(index.size, dtype=bool), cfg.n_star_per_cell)
        pick = lambda stamps: tuple(a[voters] for a in stamps)  # noqa: E731
        try:
            bic = choose_degrees_by_bic(
                pick(t_stamps), pick(s_stamps), sigmas=choice.sigmas,
                max_degrees=choice.degrees, half_width=choice.kernel_size // 2,
                **fit_options,
            )
        except ValueError as err:
            raise InsufficientCandidatesError(f"{label}: {err}") from err
        logger.info("%s: BIC degrees %s (votes %s)", label, bic.degrees, bic.votes)
        degrees = bic.degrees
        meta["bic"] = {**bic.to_dict(), "max_degrees": list(choice.degrees)}
    meta["degrees"] = degrees
    basis = alard_lupton_basis(half_width=choice.kernel_size // 2, sigmas=choice.sigmas,
                               degrees=degrees)
    return basis, meta


def kernel_sum_clip(
    *,
    candidates_path: str,
    output_candidates: str,
    psf_match: Mapping[str, Any],
    iteration: int,
    label: str,
) -> None:
    """Reject active candidates whose kernel sum is an outlier (reference §5.3, §5.7)."""
    from psfmatch.candidates import clip_kernel_sums, reject
    from psfmatch.errors import InsufficientCandidatesError

    cfg = _config(psf_match)
    data = io.read_table(candidates_path)
    table = dict(data.columns)
    good = table["status"] == "GOOD"
    try:
        rejected, passes = clip_kernel_sums(
            table["kernel_sum"], table["cell"], table["rank"], good,
            n_star_per_cell=cfg.n_star_per_cell,
            max_ksum_sigma=cfg.max_ksum_sigma,
            clipping=cfg.kernel_sum_clipping,
        )
    except PsfMatchError as err:
        raise InsufficientCandidatesError(f"{label}: {err}", data.metadata.get("counts")) from err
    last = passes[-1]
    reasons = np.array(
        [f"|ksum - {last['mean']:.5g}| = {abs(k - last['mean']):.3g} > {cfg.max_ksum_sigma} x {last['std']:.3g}"
         for k in table["kernel_sum"]], dtype=object)
    table = reject(table, rejected, stage="ksum", iteration=iteration, reasons=reasons)
    logger.info("%s: iteration %d kernel-sum passes %s", label, iteration, passes)
    io.write_table(output_candidates, table, units={"x": "pixel", "y": "pixel"},
                   metadata={**data.metadata, "step": "kernel_sum_clip", "iteration": iteration,
                             "kernel_sum_passes": passes, "psf_match": dict(psf_match)})


def spatial_fit(
    *,
    candidates_path: str,
    kernels_path: str,
    stamps_path: str,
    output_kernel: str,
    output_candidates: str,
    psf_match: Mapping[str, Any],
    iteration: int | str,
    label: str,
) -> None:
    """Joint spatial kernel + background fit over the active candidates (reference §5.4, §5.5).

    With ``usePcaForSpatialKernel`` the active candidates' kernels are first reduced to
    a PCA basis and refitted with it (no regularization); candidates that fail the
    refit's residual clipping are rejected (stage ``pca``), the kernel sums re-clipped
    and the PCA redone, until a refit rejects nothing (ip_diffim's ``_solve`` restarts
    its loop on a PCA rejection, §5.7). The candidate table, with those rejections, is
    written to ``output_candidates``. With ``calculateKernelUncertainty`` the kernel
    carries the covariance of its coefficients (``kernel.fits`` ``COVARIANCE``).
    """
    from psfmatch.candidates import active_set
    from psfmatch.config import AL
    from psfmatch.errors import InsufficientCandidatesError
    from psfmatch.kernel import SpatialKernel
    from psfmatch.spatial import SpatialFunction, fit_spatial_reducing_order

    cfg = _config(psf_match)
    data = io.read_table(candidates_path)
    table = {k: np.array(v, copy=True) for k, v in data.columns.items()}
    arrays, kmeta = io.read_arrays(
        kernels_path, ("BASIS", "KERNELS", "NORMAL_MATRIX", "NORMAL_VECTOR", "IDS"))
    position = {int(i): p for p, i in enumerate(arrays["IDS"])}
    counts = data.metadata.get("counts")
    basis = np.asarray(arrays["BASIS"], dtype=np.float64)
    basis_meta = kmeta["basis"]
    normal_matrix, normal_vector = arrays["NORMAL_MATRIX"], arrays["NORMAL_VECTOR"]
    if cfg.use_pca_for_spatial_kernel:
        table, basis, normal_matrix, normal_vector, position, basis_meta = _pca_refit(
            cfg, table, arrays, kmeta, stamps_path, iteration, label, counts)
    active = active_set(table["cell"], table["rank"], table["status"] == "GOOD", cfg.n_star_per_cell)
    if not active.any():
        raise InsufficientCandidatesError(f"{label}: no active candidate for the spatial fit",
                                          counts)
    rows = np.array([position[int(i)] for i in table["id"][active]], dtype=np.int64)
    bbox = tuple(int(v) for v in kmeta["region"])
    kernel_function = SpatialFunction(cfg.spatial_kernel_order, cfg.spatial_model_type, bbox)
    bg_function = (
        SpatialFunction(cfg.spatial_bg_order, cfg.spatial_model_type, bbox)
        if kmeta["fit_background"] else None
    )
    try:
        solved = fit_spatial_reducing_order(
            list(zip(table["x"][active], table["y"][active], strict=True)),
            normal_matrix[rows], normal_vector[rows],
            n_basis=basis.shape[0],
            kernel_function=kernel_function,
            background_function=bg_function,
            constant_first_term=kmeta["basis"]["type"] == AL or cfg.use_pca_for_spatial_kernel,
            condition_number_type=cfg.condition_number_type,
            compute_covariance=cfg.calculate_kernel_uncertainty,
        )
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err} ({int(active.sum())} candidates)") from err
    fit, kernel_function, bg_function = solved.fit, solved.kernel_function, solved.background_function
    if solved.reduced:
        logger.warning(
            "%s: spatial fit ill-posed at the configured orders (kernel %d, background %s): %s; "
            "using kernel order %d, background order %s",
            label, cfg.spatial_kernel_order, solved.attempts[0]["background_order"],
            solved.attempts[0]["refused"], kernel_function.order,
            None if bg_function is None else bg_function.order)
    if fit.condition_number > cfg.max_spatial_condition_number:
        logger.warning("%s: spatial condition number %.3g exceeds maxSpatialConditionNumber %.3g",
                       label, fit.condition_number, cfg.max_spatial_condition_number)
    kernel = SpatialKernel(
        basis=basis,
        coefficients=fit.kernel_coefficients,
        kernel_function=kernel_function,
        background_coefficients=fit.background_coefficients if bg_function else np.zeros(0),
        background_function=bg_function,
        covariance=fit.covariance,
        metadata={"basis": basis_meta, "iteration": iteration,
                  "n_candidates": int(active.sum()), "n_unknowns": fit.n_unknowns,
                  "condition_number": fit.condition_number,
                  "spatial_order_attempts": solved.attempts,
                  "config": {"fit_single_kernels": kmeta.get("psf_match", {}),
                             "spatial_fit": dict(psf_match)}},
    )
    logger.info("%s: spatial fit (iteration %s) on %d candidates, %d unknowns, condition %.3g, "
                "kernel sum %.5f", label, iteration, int(active.sum()), fit.n_unknowns,
                fit.condition_number, kernel.kernel_sum)
    io.write_kernel(output_kernel, kernel)
    io.write_table(output_candidates, table, units={"x": "pixel", "y": "pixel"},
                   metadata={**data.metadata, "step": "spatial_fit", "iteration": iteration,
                             "psf_match": dict(psf_match)})


def _pca_refit(cfg, table, arrays, kmeta, stamps_path, iteration, label, counts):
    """PCA basis of the active kernels and the refit loop of :func:`spatial_fit`."""
    from psfmatch.candidates import active_set, clip_kernel_sums, fit_single_kernels, reject
    from psfmatch.errors import InsufficientCandidatesError
    from psfmatch.pca import pca_basis

    t_stamps, s_stamps, ids, meta = _load_stamps(stamps_path)
    stamp_row = {int(i): p for p, i in enumerate(ids)}
    kernel_row = {int(i): p for p, i in enumerate(arrays["IDS"])}
    n_pass = 0
    while True:
        n_pass += 1
        active = active_set(table["cell"], table["rank"], table["status"] == "GOOD",
                            cfg.n_star_per_cell)
        act = np.flatnonzero(active)
        if act.size == 0:
            raise InsufficientCandidatesError(f"{label}: no active candidate for the PCA basis",
                                              counts)
        act_ids = [int(table["id"][r]) for r in act]
        try:
            pca = pca_basis(arrays["KERNELS"][[kernel_row[i] for i in act_ids]],
                            subtract_mean=cfg.subtract_mean_for_pca,
                            n_components=cfg.num_principal_components)
        except ValueError as err:
            raise InsufficientCandidatesError(f"{label}: {err}", counts) from err
        srows = np.array([stamp_row[i] for i in act_ids], dtype=np.int64)
        fits = fit_single_kernels(
            tuple(a[srows] for a in t_stamps), tuple(a[srows] for a in s_stamps), pca.basis,
            fit_background=kmeta["fit_background"],
            constant_variance_weighting=cfg.constant_variance_weighting,
            iterate_single_kernel=cfg.iterate_single_kernel,
            check_condition_number=cfg.check_condition_number,
            max_condition_number=cfg.max_condition_number,
            condition_number_type=cfg.condition_number_type,
            single_kernel_clipping=cfg.single_kernel_clipping,
            residual_mean_max=cfg.candidate_residual_mean_max,
            residual_std_max=cfg.candidate_residual_std_max,
            bad_bits=_bad_bits(meta, cfg.bad_mask_planes),
            core_radius=cfg.candidate_core_radius if cfg.use_core_stats else None,
        )
        logger.info("%s: PCA pass %d: %d kernels, %d components (%.4f of the variance), "
                    "%d refits rejected",
                    label, n_pass, pca.n_kernels, pca.basis.shape[0], pca.explained_fraction,
                    int((~fits.good).sum()))
        if fits.good.all():
            break
        bad = np.zeros(len(table["id"]), dtype=bool)
        bad[act[~fits.good]] = True
        reasons = np.full(len(table["id"]), "", dtype=object)
        reasons[act] = [f"PCA refit: {r}" for r in fits.reason]
        table = reject(table, bad, stage="pca", iteration=_iteration_number(iteration),
                       reasons=reasons)
        try:
            rejected, passes = clip_kernel_sums(
                table["kernel_sum"], table["cell"], table["rank"], table["status"] == "GOOD",
                n_star_per_cell=cfg.n_star_per_cell, max_ksum_sigma=cfg.max_ksum_sigma,
                clipping=cfg.kernel_sum_clipping)
        except PsfMatchError as err:
            raise InsufficientCandidatesError(f"{label}: {err}", counts) from err
        if rejected.any():
            last = passes[-1]
            reason = f"|ksum - {last['mean']:.5g}| > {cfg.max_ksum_sigma} x {last['std']:.3g}"
            table = reject(table, rejected, stage="ksum", iteration=_iteration_number(iteration),
                           reasons=reason)
    position = {i: p for p, i in enumerate(act_ids)}
    basis_meta = {
        "type": "pca",
        "n_components": int(pca.basis.shape[0]),
        "subtract_mean": cfg.subtract_mean_for_pca,
        "n_kernels": pca.n_kernels,
        "explained_fraction": pca.explained_fraction,
        "eigenvalues": [float(v) for v in pca.eigenvalues[:10]],
        "fitting_basis": kmeta["basis"],
    }
    return table, pca.basis, fits.normal_matrix, fits.normal_vector, position, basis_meta


def _iteration_number(iteration: int | str) -> int:
    """Iteration recorded with a rejection (the final fit counts as -1)."""
    return int(iteration) if str(iteration).lstrip("-").isdigit() else -1


def assess(
    *,
    candidates_path: str,
    stamps_path: str,
    kernel_path: str,
    output_candidates: str,
    psf_match: Mapping[str, Any],
    iteration: int,
    label: str,
) -> None:
    """Residuals of the spatial model at each active candidate; reject (reference §5.6)."""
    from psfmatch.candidates import active_set, assess_spatial, reject
    from psfmatch.errors import InsufficientCandidatesError
    from psfmatch.kernel import SpatialKernel

    cfg = _config(psf_match)
    data = io.read_table(candidates_path)
    table = {k: np.array(v, copy=True) for k, v in data.columns.items()}
    kernel = SpatialKernel.read(kernel_path)
    t_stamps, s_stamps, ids, meta = _load_stamps(stamps_path)
    active = active_set(table["cell"], table["rank"], table["status"] == "GOOD", cfg.n_star_per_cell)
    position = {int(i): p for p, i in enumerate(ids)}
    act_rows = np.flatnonzero(active)
    rows = np.array([position[int(table["id"][r])] for r in act_rows], dtype=np.int64)
    xs, ys = table["x"][act_rows], table["y"][act_rows]
    kernels = np.array([kernel.image_at(x, y) for x, y in zip(xs, ys, strict=True)])
    backgrounds = np.array([float(kernel.background_at(x, y)) for x, y in zip(xs, ys, strict=True)])
    pick = lambda stamps: tuple(a[rows] for a in stamps)  # noqa: E731
    result = assess_spatial(
        pick(t_stamps), pick(s_stamps), kernels, backgrounds,
        clipping=cfg.spatial_kernel_clipping,
        residual_mean_max=cfg.candidate_residual_mean_max,
        residual_std_max=cfg.candidate_residual_std_max,
        bad_bits=_bad_bits(meta, cfg.bad_mask_planes),
        core_radius=cfg.candidate_core_radius if cfg.use_core_stats else None,
    )
    n = len(table["id"])
    for name in ("spatial_mean", "spatial_rms"):
        if name not in table:
            table[name] = np.full(n, np.nan)
    table["spatial_mean"][act_rows] = result["mean"]
    table["spatial_rms"][act_rows] = result["rms"]
    bad = np.zeros(n, dtype=bool)
    bad[act_rows] = ~result["good"]
    reasons = np.full(n, "", dtype=object)
    reasons[act_rows] = result["reason"]
    table = reject(table, bad, stage="spatial", iteration=iteration, reasons=reasons)
    n_good, n_rejected = int(result["good"].sum()), int(bad.sum())
    summary = {"iteration": iteration, "n_good": n_good, "n_rejected": n_rejected,
               "converged": n_rejected == 0}
    logger.info("%s: assessment %s", label, summary)
    if n_good == 0 and n_rejected == 0:
        raise InsufficientCandidatesError(f"{label}: no candidate to assess the spatial kernel",
                                          data.metadata.get("counts"))
    io.write_table(output_candidates, table, units={"x": "pixel", "y": "pixel"},
                   metadata={**data.metadata, "step": "assess", "assessment": summary,
                             "psf_match": dict(psf_match)})


#: Planes that exclude a difference-image pixel from the residual statistics.
STATS_BAD_PLANES = ("NO_DATA", "EDGE", "SAT", "SAT_TEMPLATE", "BAD", "CR", "SUSPECT", "INTRP")


def convolve(
    *,
    template_path: str,
    science_path: str,
    kernel_path: str,
    candidates_path: str,
    difference_path: str,
    matched_path: str | None,
    metrics_path: str,
    psf_match: Mapping[str, Any],
    label: str,
) -> None:
    """Convolve the warped template with the kernel, subtract, write products and metrics.

    ``difference = science − K ⋆ template − background``; variance ``var_S + K²⋆var_T``;
    masks OR-ed over the kernel footprint, template planes kept per ip_diffim's
    ``updateMasks`` (§7.4.1); border of ``k // 2`` flagged ``EDGE``. ``metrics.json``
    carries the reference's diagnostics (§5.8) and the residual statistics.
    """
    from psfmatch.kernel import SpatialKernel
    from psfmatch.subtract import convolve_exposure, prepare_template_mask, subtract

    cfg = _config(psf_match)
    template = io.read_exposure(template_path)
    science = io.read_exposure(science_path)
    kernel = SpatialKernel.read(kernel_path)
    logger.info("%s: convolving %s template with %d spatial terms", label, template.shape,
                kernel.kernel_function.n_terms)
    matched = convolve_exposure(prepare_template_mask(template), kernel)
    logger.info("%s: convolution done; subtracting", label)
    difference = subtract(science, matched, kernel)
    table = io.read_table(candidates_path)
    metrics = _metrics(difference, kernel, table, cfg)
    logger.info("%s: metrics %s", label, {k: metrics[k] for k in ("kernel_sum", "verdict")})
    if matched_path is not None:
        io.write_exposure(matched_path, matched)
    io.write_exposure(difference_path, difference)
    io.write_json(metrics_path, metrics)


def _metrics(difference, kernel, table, cfg) -> dict[str, Any]:
    """ip_diffim ``_diagnostic`` (§5.8) plus difference-image residual statistics."""
    from psfmatch.candidates import active_set
    from psfmatch.stats import clipped_mean_std

    columns = table.columns
    status, stage = columns["status"], columns["stage"]
    n_good = int((status == "GOOD").sum())
    n_bad = int((status == "BAD").sum())
    n_kernel_terms = kernel.kernel_function.n_terms
    attempts = kernel.metadata.get("spatial_order_attempts") or []
    if n_good < n_kernel_terms:
        verdict = "underconstrained"
    elif len(attempts) > 1:
        verdict = "reduced spatial order"
    elif n_good <= 2 * n_kernel_terms:
        verdict = "poorly constrained"
    else:
        verdict = "well constrained"
    rejected: dict[str, dict[str, int]] = {}
    for st in ("select", "single", "ksum", "pca", "spatial"):
        reasons = columns["reason"][stage == st]
        summary: dict[str, int] = {}
        for reason in reasons:
            key = str(reason).split(" = ")[0].split(":")[0] if st != "select" else str(reason)
            summary[key] = summary.get(key, 0) + 1
        rejected[st] = summary
    usable = (difference.mask & difference.plane_bitmask(STATS_BAD_PLANES)) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        z = difference.image / np.sqrt(difference.variance)
    z = z[usable & np.isfinite(z)]
    clip_mean, clip_std = clipped_mean_std(z) if z.size else (float("nan"), float("nan"))
    active = active_set(columns["cell"], columns["rank"], status == "GOOD", cfg.n_star_per_cell)
    basis = kernel.metadata.get("basis") or {}
    return {
        "kernel_sum": kernel.kernel_sum,
        "kernel_size": kernel.kernel_size,
        "spatial_condition_number": kernel.metadata.get("condition_number"),
        "n_spatial_unknowns": kernel.metadata.get("n_unknowns"),
        "n_kernel_terms": n_kernel_terms,
        "spatial_orders": {
            "requested": {"kernel": attempts[0]["kernel_order"],
                          "background": attempts[0]["background_order"]} if attempts else None,
            "used": {"kernel": kernel.kernel_function.order,
                     "background": None if kernel.background_function is None
                     else kernel.background_function.order},
            "attempts": attempts,
        },
        "candidates": {
            "total": len(status), "good": n_good, "bad": n_bad,
            "used_in_final_fit": int(active.sum()),
            "rejected_by_stage": {k: int((stage == k).sum()) for k in rejected},
            "rejected_reasons": rejected,
        },
        "verdict": verdict,
        "difference": {
            "n_pixels": int(z.size),
            "mean": float(z.mean()) if z.size else float("nan"),
            "std": float(z.std()) if z.size else float("nan"),
            "clipped_mean": clip_mean,
            "clipped_std": clip_std,
            "masked_fraction": float(1.0 - usable.mean()),
            "statistic": "difference / sqrt(variance) over pixels without " + ",".join(STATS_BAD_PLANES),
        },
        "basis": basis,
        "bic": (basis.get("fitting_basis", basis) or {}).get("bic"),
        "regularization": (basis.get("fitting_basis", basis) or {}).get("regularization"),
        "uncertainty": _uncertainty_summary(kernel),
    }


def _uncertainty_summary(kernel) -> dict[str, float] | None:
    """1σ of the kernel sum and background at the bbox centre, if the kernel has a covariance."""
    if kernel.covariance is None:
        return None
    x, y = kernel.centre
    return {
        "kernel_sum_sigma": float(np.sqrt(kernel.sum_variance_at(x, y))),
        "background_sigma_at_centre": float(np.sqrt(kernel.background_variance_at(x, y))),
        "kernel_pixel_sigma_max_at_centre": float(np.sqrt(kernel.image_variance_at(x, y).max())),
    }


# ====================================================================== model-PSF matching
# (issue 5) ip_diffim's ModelPsfMatchTask as two steps per exposure of the exposures
# sheet: model_psf_kernel (PSF models -> kernel, cell table, target PSF image) and
# model_psf_convolve (exposure + kernel -> matched exposure, metrics). A third, tiny step
# writes the constant PSF of a simulated template for the demo.

#: Kernel options model-PSF matching does not implement (ModelPsfMatchTask is AL only,
#: and its clipping is off): LSST name -> the value that is refused.
_MODEL_UNSUPPORTED = {
    "kernelBasisSet": "delta-function",
    "usePcaForSpatialKernel": True,
    "singleKernelClipping": True,
    "kernelSumClipping": True,
    "spatialKernelClipping": True,
}


def model_kernel_config(kernel: Mapping[str, Any]):
    """``model_psf_match.kernel`` as a PsfMatchConfig; unsupported options raise ConfigError."""
    from psfmatch.config import ModelPsfMatchConfig
    from psfmatch.errors import ConfigError

    cfg = ModelPsfMatchConfig.kernel_from_lsst(kernel)
    values = cfg.to_lsst()
    for name, refused in _MODEL_UNSUPPORTED.items():
        if values.get(name) == refused:
            msg = (f"model_psf_match.kernel.{name}: {refused!r} is not supported by model-PSF "
                   "matching (ip_diffim's ModelPsfMatchTask is Alard-Lupton only, with clipping off)")
            raise ConfigError(msg)
    return cfg


def _read_model_exposure(inputs: Mapping[str, str], reader: Mapping[str, Any], label: str):
    """The exposure of one sheet row with its PSF model (the ``psf`` file, else its PSF HDU)."""
    from psfmatch import io_psf
    from psfmatch.errors import PsfModelError

    convention = reader.get("mask_convention", "afw")
    if convention not in MASK_CONVENTIONS:
        msg = f"{label}: unknown mask convention {convention!r}; use one of {sorted(MASK_CONVENTIONS)}"
        raise PsfMatchError(msg)
    try:
        exposure = io.read_exposure(
            inputs["image"], variance=inputs.get("variance"), weight=inputs.get("weight"),
            error=inputs.get("error"), mask=inputs.get("mask"), gain=reader.get("gain"),
            **MASK_CONVENTIONS[convention],
        )
        if inputs.get("psf"):
            exposure = exposure.with_(psf=io_psf.read_psf_model(inputs["psf"]))
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    if exposure.psf is None:
        msg = (f"{label}: exposure {inputs['image']} does not contain a PSF model (no image HDU "
               "named PSF) and the exposures sheet gives no psf file for it")
        raise PsfModelError(msg)
    return exposure


def _target_model(target: Mapping[str, Any], target_inputs: Mapping[str, str], label: str):
    """The target PSF model from ``model_psf_match.target`` (files already resolved)."""
    from psfmatch import io_psf
    from psfmatch.psf import analytic_psf

    kind = target["model"]
    if kind in ("gaussian", "moffat", "double_gaussian"):
        return analytic_psf(dict(target))
    if kind == "file":
        return io_psf.read_psf_model(target_inputs["target_psf"])
    if kind == "exposure":
        other = {"image": target_inputs["target_image"]}
        if target_inputs.get("target_psf"):
            other["psf"] = target_inputs["target_psf"]
        return _read_model_exposure(
            other, {}, f"{label}: target exposure {target.get('exposure')!r}"
        ).psf
    msg = f"model_psf_match.target.model {kind!r} is unknown"
    raise PsfMatchError(msg)


def model_psf_kernel(
    *,
    inputs: Mapping[str, str],
    reader: Mapping[str, Any],
    target: Mapping[str, Any],
    target_inputs: Mapping[str, str],
    kernel_sum: float,
    psf_match: Mapping[str, Any],
    kernel: Mapping[str, Any],
    kernel_path: str,
    cells_path: str,
    target_psf_path: str,
    label: str,
) -> None:
    """Fit the kernel matching an exposure's PSF model to the target (reference §8).

    Writes ``kernel.fits`` (the spatial kernel; its metadata records the cell grid, PSF
    image size, padding, basis, FWHMs, condition number and the config), the cell table
    (one row per PSF candidate: position, status and reason, single-fit kernel sum and
    condition number, and the matched-PSF residual ``max|K/ΣK ⋆ P − R| / max R``) and the
    target PSF image at the PSF image size (the matched exposure's PSF).
    """
    from psfmatch import io_psf
    from psfmatch.config import ModelPsfMatchConfig
    from psfmatch.model_match import match_psf_models

    own = ModelPsfMatchConfig.from_lsst(psf_match, where="model_psf_match.psf_match")
    cfg = model_kernel_config(kernel)
    exposure = _read_model_exposure(inputs, reader, label)
    reference = _target_model(target, target_inputs, label)
    try:
        result = match_psf_models(
            exposure.psf, reference, bbox=exposure.bbox, kernel_sum=float(kernel_sum),
            kernel_size=cfg.kernel_size, alard_sig_gauss=cfg.alard_sig_gauss,
            alard_deg_gauss=cfg.alard_deg_gauss, scale_by_fwhm=cfg.scale_by_fwhm,
            kernel_size_fwhm_scaling=cfg.kernel_size_fwhm_scaling,
            kernel_size_min=cfg.kernel_size_min, kernel_size_max=cfg.kernel_size_max,
            alard_gauss_beta=cfg.alard_gauss_beta, alard_min_sig=cfg.alard_min_sig,
            alard_min_sig_deconv=cfg.alard_min_sig_deconv, size_cell_x=cfg.size_cell_x,
            size_cell_y=cfg.size_cell_y, spatial_kernel_order=cfg.spatial_kernel_order,
            spatial_model_type=cfg.spatial_model_type, fit_for_background=cfg.fit_for_background,
            spatial_bg_order=cfg.spatial_bg_order,
            constant_variance_weighting=cfg.constant_variance_weighting,
            check_condition_number=cfg.check_condition_number,
            max_condition_number=cfg.max_condition_number,
            condition_number_type=cfg.condition_number_type,
            do_auto_pad_psf=own.do_auto_pad_psf, auto_pad_psf_to=own.auto_pad_psf_to,
            pad_psf_by=own.pad_psf_by,
        )
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    describe = getattr(reference, "describe", None)
    target_description = describe() if describe else {"model": type(reference).__name__}
    kernel_obj = result.kernel
    kernel_obj.metadata.update({
        "step": "model_psf_kernel", "target": target_description,
        "exposure_psf": exposure.psf.describe() if hasattr(exposure.psf, "describe") else {},
        "config": {"kernel": dict(kernel), "psf_match": dict(psf_match), "target": dict(target),
                   "kernel_sum": kernel_sum},
    })
    io.write_kernel(kernel_path, kernel_obj)
    io.write_table(cells_path, result.cells, units={"x": "pixel", "y": "pixel"},
                   metadata={"step": "model_psf_kernel", "summary": result.summary})
    io_psf.write_psf_image(target_psf_path, result.reference_image, metadata={
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
    ``metrics.json`` holds the fit health: kernel sum, spatial condition number, cells
    used/rejected with reasons, the ip_diffim under/poorly/well-constrained verdict and
    the matched-PSF residuals over the cells.
    """
    from psfmatch import io_psf
    from psfmatch.kernel import SpatialKernel
    from psfmatch.model_match import psf_matched_exposure

    exposure = _read_model_exposure(inputs, reader, label)
    kernel = SpatialKernel.read(kernel_path)
    target = io_psf.read_psf_model(target_psf_path)
    cells = io.read_table(cells_path).columns
    logger.info("%s: convolving %s with a %d-px kernel (%d spatial terms)", label, exposure.shape,
                kernel.kernel_size, kernel.kernel_function.n_terms)
    matched = psf_matched_exposure(exposure, kernel, target.image)
    meta = kernel.metadata
    matched = matched.with_(metadata={
        **matched.metadata, "PSFMATCH": "model", "TGTMODEL": str(meta.get("target", {}).get("model", "")),
        "TGTFWHM": float(meta.get("target_fwhm", float("nan"))), "KERNSUM": float(kernel.kernel_sum),
    })
    metrics = _model_psf_metrics(kernel, cells, matched)
    logger.info("%s: metrics %s", label, {k: metrics[k] for k in ("kernel_sum", "verdict")})
    io.write_exposure(matched_path, matched)
    io.write_json(metrics_path, metrics)


def _model_psf_metrics(kernel, cells: Mapping[str, np.ndarray], matched) -> dict[str, Any]:
    """Health of a model-PSF match (ip_diffim §5.8 counts, plus matched-PSF residuals)."""
    meta = kernel.metadata
    status = np.asarray(cells["status"]).astype(str)
    good = status == "GOOD"
    n_good = int(good.sum())
    nkt = kernel.kernel_function.n_terms
    if n_good < nkt:
        verdict = "underconstrained"
    elif n_good <= 2 * nkt:
        verdict = "poorly constrained"
    else:
        verdict = "well constrained"
    reasons: dict[str, int] = {}
    for reason in np.asarray(cells["reason"]).astype(str)[~good]:
        key = reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1

    def _stats(column: str) -> dict[str, float]:
        values = np.asarray(cells[column], dtype=np.float64)[good]
        values = values[np.isfinite(values)]
        if not values.size:
            return {"max": float("nan"), "median": float("nan")}
        return {"max": float(values.max()), "median": float(np.median(values))}

    finite = np.isfinite(matched.image)
    return {
        "kernel_sum": kernel.kernel_sum,
        "kernel_sum_requested": meta.get("kernel_sum"),
        "fitted_kernel_sum": meta.get("fitted_kernel_sum"),
        "kernel_size": kernel.kernel_size,
        "psf_size": meta.get("psf_size"),
        "padding": meta.get("padding"),
        "basis": meta.get("basis"),
        "spatial_kernel_order": kernel.kernel_function.order,
        "spatial_condition_number": meta.get("condition_number"),
        "n_spatial_unknowns": meta.get("n_unknowns"),
        "n_kernel_terms": nkt,
        "cells": {"total": int(status.size), "used": n_good, "rejected": int((~good).sum()),
                  "rejected_reasons": reasons, "grid": [meta.get("n_cells_x"), meta.get("n_cells_y")],
                  "region": meta.get("region")},
        "verdict": verdict,
        "matched_psf_residual": {
            "fit_region": _stats("residual_spatial"),
            "whole_stamp": _stats("residual_spatial_stamp"),
            "single_fits": _stats("residual_single"),
            "statistic": "per cell, max|K/sum(K) * P - R| / max R (P exposure PSF, R target)",
        },
        "psf_fwhm": meta.get("psf_fwhm"),
        "target_fwhm": meta.get("target_fwhm"),
        "target": meta.get("target"),
        "output": {"n_pixels": int(finite.size), "finite_fraction": float(finite.mean())},
    }


def simulated_psf(*, truth_path: str, output_path: str) -> None:
    """Write the constant PSF image of a simulated template (``truth.json`` params).

    The simulator renders template stars with :class:`psfmatch.synth.SimulatedPsf` of
    ``template_fwhm``; this is that model's image, for the model-PSF-matching demo.
    """
    from psfmatch import io_psf
    from psfmatch.basis import SIGMA_TO_FWHM
    from psfmatch.synth import SimulatedPsf

    params = io.read_json(truth_path)["params"]
    psf = SimulatedPsf(float(params["template_fwhm"]) / SIGMA_TO_FWHM)
    io_psf.write_psf_image(output_path, psf.image_at(0.0, 0.0), metadata={
        "PSFMODEL": "simulated_template", "PSFFWHM": float(params["template_fwhm"]),
    })


__all__ += ["model_kernel_config", "model_psf_convolve", "model_psf_kernel", "simulated_psf"]


# ====================================================================== QA (issue 6)
# Plots of one pair (ip_diffim's debug displays) and the per-run summary table. The
# plotting itself is psfmatch.qa (arrays in, figures out); these functions read the
# products and write the PNGs / tables.

#: The QA plots of a pair: output key -> what it shows (also the report captions' order).
QA_PLOTS: dict[str, str] = {
    "images": "science, warped template and difference with the same stretch",
    "candidates": "candidates over the science image with the spatial cells",
    "kernel_basis": "the first basis kernels",
    "kernel_mosaic": "the spatial kernel on a 5x5 grid",
    "spatial_model": "each basis coefficient's map and the background model",
    "kernel_sum": "kernel-sum distribution with the clip limits",
    "residual_histogram": "difference/sqrt(variance) against N(0, 1)",
    "worst_stamps": "stamps of the worst candidates",
}

#: Columns of the per-run summary table, in order.
QA_SUMMARY_COLUMNS: tuple[str, ...] = (
    "pair", "status", "failed_step", "error", "kernel_sum", "spatial_condition_number",
    "verdict", "n_candidates", "n_used", "n_good", "n_rejected", "residual_mean",
    "residual_std", "residual_clipped_mean", "residual_clipped_std", "plots",
)


def qa(
    *,
    science_path: str,
    template_path: str,
    difference_path: str,
    kernel_path: str,
    candidates_path: str,
    ksum_paths: list[str] | tuple[str, ...],
    stamps_path: str,
    metrics_path: str,
    outputs: Mapping[str, str],
    psf_match: Mapping[str, Any],
    label: str,
    n_worst: int = 6,
) -> dict[str, Any]:
    """Draw the QA plots of one pair from its products and write them as PNGs.

    ``outputs`` maps every key of :data:`QA_PLOTS` to a path. ``candidates_path`` is
    the last assessment's table (every candidate with its status, stage and reason);
    ``ksum_paths`` the kernel-sum tables of all iterations (their metadata hold the
    clipping passes). Returns the :class:`psfmatch.qa.QaPlot` of every plot (figure and
    the data it shows), keyed as ``outputs``, so that callers can check them.
    """
    from psfmatch import qa as plots
    from psfmatch.candidates import active_set
    from psfmatch.fit import difference_stamp
    from psfmatch.kernel import SpatialKernel
    from psfmatch.stats import residual_stats

    missing = sorted(set(QA_PLOTS) - set(outputs))
    if missing:
        raise PsfMatchError(f"{label}: QA outputs {missing} not given")
    cfg = _config(psf_match)
    science = io.read_exposure(science_path)
    template = io.read_exposure(template_path)
    difference = io.read_exposure(difference_path)
    kernel = SpatialKernel.read(kernel_path)
    table = io.read_table(candidates_path)
    columns = table.columns
    metrics = io.read_json(metrics_path)
    drawn: dict[str, Any] = {}

    def save(key: str, plot) -> None:
        io.write_figure(outputs[key], plot.figure)
        drawn[key] = plot

    save("images", plots.images_plot(science.image, template.image, difference.image,
                                     xy0=science.xy0, title=label))
    good = columns["status"] == "GOOD"
    used = active_set(columns["cell"], columns["rank"], good, cfg.n_star_per_cell)
    region = table.metadata.get("region") or list(science.bbox)
    save("candidates", plots.candidates_plot(
        science.image, x=columns["x"], y=columns["y"], status=columns["status"],
        stage=columns["stage"], reason=columns["reason"], used=used, region=region,
        size_cell_x=cfg.size_cell_x, size_cell_y=cfg.size_cell_y, xy0=science.xy0,
        title=f"{label}: kernel candidates and spatial cells"))
    basis = kernel.metadata.get("basis") or {}
    save("kernel_basis", plots.basis_plot(kernel.basis, description=str(basis.get("type", ""))))
    save("kernel_mosaic", plots.mosaic_plot(kernel))
    save("spatial_model", plots.spatial_model_plot(kernel))
    passes = {}
    for path in ksum_paths:
        meta = io.read_table(path).metadata
        passes[int(meta.get("iteration", len(passes)))] = meta.get("kernel_sum_passes", [])
    save("kernel_sum", plots.kernel_sum_plot(
        columns["kernel_sum"], stage=columns["stage"], passes=passes, final_sum=kernel.kernel_sum))
    usable = (difference.mask & difference.plane_bitmask(STATS_BAD_PLANES)) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        z = difference.image / np.sqrt(difference.variance)
    stats = metrics.get("difference", {})
    save("residual_histogram", plots.residual_histogram_plot(
        z[usable & np.isfinite(z)],
        clipped=(stats["clipped_mean"], stats["clipped_std"]) if "clipped_std" in stats else None))

    # Worst candidates under the final kernel: every candidate with a stamp, ranked by
    # the rms of (S - K*T - bg)/sigma over its unmasked valid pixels.
    t_stamps, s_stamps, ids, meta = _load_stamps(stamps_path)
    row_of = {int(i): r for r, i in enumerate(columns["id"])}
    bad_bits = _bad_bits(meta, cfg.bad_mask_planes)
    scored = []
    for p, cid in enumerate(ids):
        r = row_of[int(cid)]
        x, y = float(columns["x"][r]), float(columns["y"][r])
        k_img, bg = kernel.image_at(x, y), float(kernel.background_at(x, y))
        t = tuple(a[p] for a in t_stamps)
        s = tuple(a[p] for a in s_stamps)
        d, var, mask = difference_stamp(t, s, k_img, bg)
        rms = residual_stats(d, var, mask, bad_bits=bad_bits, core_radius=None).rms
        scored.append((rms if np.isfinite(rms) else -np.inf, p, r, d, var, mask))
    scored.sort(key=lambda item: item[0], reverse=True)
    worst = scored[:n_worst]
    half = kernel.kernel_size // 2
    crop = (slice(half, -half or None), slice(half, -half or None))
    models, sciences, residuals, names = [], [], [], []
    for _, p, r, d, var, _mask in worst:
        s_img = np.asarray(s_stamps[0][p], dtype=np.float64)[crop]
        models.append(s_img - d)
        sciences.append(s_img)
        with np.errstate(invalid="ignore", divide="ignore"):
            residuals.append(d / np.sqrt(var))
        status = str(columns["status"][r])
        names.append(status if status == "GOOD" else f"BAD ({columns['stage'][r]})")
    save("worst_stamps", plots.worst_stamps_plot(
        ids=np.array([int(columns["id"][item[2]]) for item in worst], dtype=np.int64),
        scores=np.array([item[0] for item in worst]), score_name="residual rms (σ)",
        models=models, sciences=sciences, residuals=residuals, labels=names))
    logger.info("%s: wrote %d QA plots", label, len(drawn))
    return drawn


def pair_outcome(
    *,
    pair: str,
    metrics_path: str,
    plot_paths: list[str] | tuple[str, ...],
    logs: Mapping[str, str],
) -> dict[str, Any]:
    """One row of the run summary: the pair's health from whatever products and logs exist.

    * ``metrics.json`` exists → ``status = "ok"``, values from it; ``plots`` = how many
      of ``plot_paths`` exist (a pair that succeeded after an earlier failure gets its
      plots on the next run); if plots are missing and a log records an error (the
      ``qa`` step failed), ``failed_step`` and ``error`` say so;
    * else, if a step log (``logs``: path → step name) records an error, the most
      recently written such log gives ``status = "failed"``, ``failed_step`` and ``error``;
    * else ``status = "incomplete"`` (not run yet, interrupted, or killed without a
      Python error, e.g. by a batch system time limit).
    """
    import os
    from pathlib import Path

    from psfmatch.logs import read_failure

    row: dict[str, Any] = dict.fromkeys(QA_SUMMARY_COLUMNS)
    row["pair"] = pair
    n_plots = sum(Path(p).is_file() for p in plot_paths)
    row["plots"] = f"{n_plots}/{len(plot_paths)}"
    failures = []
    for path, step in logs.items():
        error = read_failure(path)
        if error is not None:
            failures.append((os.stat(path).st_mtime, step, error, path))
    if Path(metrics_path).is_file():
        metrics = io.read_json(metrics_path)
        cands = metrics.get("candidates", {})
        diff = metrics.get("difference", {})
        row.update(
            status="ok", failed_step="", error="",
            kernel_sum=metrics.get("kernel_sum"),
            spatial_condition_number=metrics.get("spatial_condition_number"),
            verdict=metrics.get("verdict"),
            n_candidates=cands.get("total"), n_used=cands.get("used_in_final_fit"),
            n_good=cands.get("good"), n_rejected=cands.get("bad"),
            residual_mean=diff.get("mean"), residual_std=diff.get("std"),
            residual_clipped_mean=diff.get("clipped_mean"),
            residual_clipped_std=diff.get("clipped_std"),
        )
        if failures and n_plots < len(plot_paths):  # the products exist, the QA step failed
            _, step, error, path = max(failures)
            row.update(failed_step=step, error=f"{error} (log: {path})")
        return row
    if failures:
        _, step, error, path = max(failures)
        row.update(status="failed", failed_step=step, error=f"{error} (log: {path})")
    else:
        row.update(status="incomplete", failed_step="",
                   error="no metrics.json and no step log records an error "
                         "(not run yet, interrupted, or killed)")
    return row


def qa_summary(
    *,
    rows: list[Mapping[str, Any]],
    table_path: str,
    html_path: str,
) -> None:
    """Write the per-run summary (one row per pair) as Parquet and as an HTML table."""
    from psfmatch import qa as plots

    def column(name: str) -> np.ndarray:
        values = [row.get(name) for row in rows]
        if name in ("kernel_sum", "spatial_condition_number", "residual_mean", "residual_std",
                    "residual_clipped_mean", "residual_clipped_std"):
            return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        if name.startswith("n_"):
            return np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        return np.array(["" if v is None else str(v) for v in values], dtype=object)

    columns = {name: column(name) for name in QA_SUMMARY_COLUMNS}
    counts = {s: int((columns["status"] == s).sum()) for s in ("ok", "failed", "incomplete")}
    io.write_table(table_path, columns, metadata={"step": "qa_summary", "counts": counts,
                                                  "missing_integer": -1})
    io.write_text(html_path, plots.summary_html(rows, columns=QA_SUMMARY_COLUMNS,
                                                title=f"psfmatch run summary: {counts}"))
    logger.info("run summary %s written to %s", counts, table_path)


__all__ += ["QA_PLOTS", "QA_SUMMARY_COLUMNS", "pair_outcome", "qa", "qa_summary"]
# ================================================================== end QA (issue 6)
