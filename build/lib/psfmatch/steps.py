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

    Image, mask and variance are copied unchanged (apart from dtype: float32/int32);
    non-finite image pixels and bad weights are flagged ``NO_DATA`` by the reader.
    """
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
            **MASK_CONVENTIONS[mask_convention],
        )
        if "psf" in inputs:
            exposure = exposure.with_(psf=io.read_psf_image(inputs["psf"]))
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    usable = np.isfinite(exposure.image) & (exposure.mask == 0)
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


# ---------------------------------------------------------------------- kernel DAG
# The remaining steps form ip_diffim's MakeKernelTask / _solve loop as separate jobs:
# warp -> detect -> select -> fit_single_kernels -> [kernel_sum_clip -> spatial_fit ->
# assess] x maxSpatialIterations -> final spatial_fit -> convolve.
# Candidate tables carry every candidate with status GOOD/BAD, the stage that rejected
# it (select, single, ksum, spatial), the iteration and the reason.

_UNSUPPORTED = {
    "kernel_basis_set": ("delta-function", "kernelBasisSet: delta-function"),
    "use_pca_for_spatial_kernel": (True, "usePcaForSpatialKernel: true"),
    "use_bic_for_kernel_basis": (True, "useBicForKernelBasis: true"),
    "calculate_kernel_uncertainty": (True, "calculateKernelUncertainty: true"),
}


def _config(psf_match: Mapping[str, Any]):
    """PsfMatchConfig from the subset of LSST-named fields a step receives.

    Options this release does not implement yet raise :class:`ConfigError` naming the
    field, rather than being silently ignored.
    """
    from psfmatch.config import PsfMatchConfig
    from psfmatch.errors import ConfigError

    cfg = PsfMatchConfig.from_lsst(psf_match)
    given = _lsst_attrs(psf_match)
    for attr, (bad_value, text) in _UNSUPPORTED.items():
        if attr in given and getattr(cfg, attr) == bad_value:
            msg = f"psf_match.{text} is not supported yet (delta-function/PCA/BIC/uncertainty work is pending)"
            raise ConfigError(msg)
    return cfg


def _lsst_attrs(psf_match: Mapping[str, Any]) -> set[str]:
    from psfmatch.config import PsfMatchConfig

    names = PsfMatchConfig.lsst_names()
    return {names[k] for k in psf_match if k in names}


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
        raise type(err)(f"{label}: {err}") from err
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
    """AL sigmas/degrees/kernel size from the config and the measured FWHMs (§2.2)."""
    from psfmatch.basis import choose_alard_lupton

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
    """Per-candidate AL fits with residual clipping (reference §2, §4, §5.2)."""
    from psfmatch.basis import alard_lupton_basis
    from psfmatch.candidates import fit_single_kernels as fit_all

    cfg = _config(psf_match)
    choice = _basis_choice(cfg, io.read_json(psf_path))
    basis = alard_lupton_basis(
        half_width=choice.kernel_size // 2, sigmas=choice.sigmas, degrees=choice.degrees
    )
    selected = io.read_table(candidates_path)
    table = dict(selected.columns)
    t_stamps, s_stamps, ids, meta = _load_stamps(stamps_path)
    logger.info("%s: fitting %d candidates with %d AL basis kernels of %d px (%s)",
                label, len(ids), basis.shape[0], choice.kernel_size, choice.mode)
    fits = fit_all(
        t_stamps, s_stamps, basis,
        fit_background=cfg.fit_for_background,
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
    n = len(table["id"])
    row = {int(i): r for r, i in enumerate(table["id"])}
    index = np.array([row[int(i)] for i in ids], dtype=np.int64)
    out = dict(table)
    out["status"] = np.full(n, "BAD", dtype=object)
    out["stage"] = np.where(table["status"] == "OK", "", "select").astype(object)
    out["iteration"] = np.full(n, -1, dtype=np.int64)
    out["reason"] = np.asarray(table["reason"], dtype=object).copy()
    for name, values in (("kernel_sum", fits.kernel_sum), ("background", fits.background),
                         ("condition_number", fits.condition_number),
                         ("single_mean", fits.mean), ("single_rms", fits.rms)):
        column = np.full(n, np.nan)
        column[index] = values
        out[name] = column
    out["status"][index] = np.where(fits.good, "GOOD", "BAD")
    out["stage"][index] = np.where(fits.good, "", "single")
    out["reason"][index] = fits.reason
    counts = {**selected.metadata.get("counts", {}),
              "single_good": int(fits.good.sum())}
    logger.info("%s: single-kernel fits %s", label, counts)
    io.write_arrays(
        output_kernels,
        {"BASIS": basis, "KERNELS": fits.kernels, "NORMAL_MATRIX": fits.normal_matrix,
         "NORMAL_VECTOR": fits.normal_vector, "IDS": ids},
        metadata={"basis": {"type": "alard-lupton", "sigmas": choice.sigmas,
                            "degrees": choice.degrees, "kernel_size": choice.kernel_size,
                            "mode": choice.mode},
                  "fit_background": cfg.fit_for_background, "region": meta["region"],
                  "psf_match": dict(psf_match)},
    )
    io.write_table(output_candidates, out, units={"x": "pixel", "y": "pixel"},
                   metadata={"step": "fit_single_kernels", "counts": counts,
                             "region": meta["region"], "psf_match": dict(psf_match)})
    if not fits.good.any():
        from psfmatch.errors import InsufficientCandidatesError

        raise InsufficientCandidatesError(f"{label}: no candidate has a good single-kernel fit", counts)


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
    output_kernel: str,
    psf_match: Mapping[str, Any],
    iteration: int | str,
    label: str,
) -> None:
    """Joint spatial kernel + background fit over the active candidates (reference §5.5)."""
    from psfmatch.candidates import active_set
    from psfmatch.errors import InsufficientCandidatesError
    from psfmatch.kernel import SpatialKernel
    from psfmatch.spatial import SpatialFunction, fit_spatial

    cfg = _config(psf_match)
    data = io.read_table(candidates_path)
    table = data.columns
    arrays, kmeta = io.read_arrays(kernels_path, ("BASIS", "NORMAL_MATRIX", "NORMAL_VECTOR", "IDS"))
    active = active_set(table["cell"], table["rank"], table["status"] == "GOOD", cfg.n_star_per_cell)
    if not active.any():
        raise InsufficientCandidatesError(f"{label}: no active candidate for the spatial fit",
                                          data.metadata.get("counts"))
    position = {int(i): p for p, i in enumerate(arrays["IDS"])}
    rows = np.array([position[int(i)] for i in table["id"][active]], dtype=np.int64)
    bbox = tuple(int(v) for v in kmeta["region"])
    kernel_function = SpatialFunction(cfg.spatial_kernel_order, cfg.spatial_model_type, bbox)
    bg_function = (
        SpatialFunction(cfg.spatial_bg_order, cfg.spatial_model_type, bbox)
        if kmeta["fit_background"] else None
    )
    basis = np.asarray(arrays["BASIS"], dtype=np.float64)
    fit = fit_spatial(
        list(zip(table["x"][active], table["y"][active], strict=True)),
        arrays["NORMAL_MATRIX"][rows], arrays["NORMAL_VECTOR"][rows],
        n_basis=basis.shape[0],
        kernel_function=kernel_function,
        background_function=bg_function,
        constant_first_term=True,
        condition_number_type=cfg.condition_number_type,
    )
    if fit.condition_number > cfg.max_spatial_condition_number:
        logger.warning("%s: spatial condition number %.3g exceeds maxSpatialConditionNumber %.3g",
                       label, fit.condition_number, cfg.max_spatial_condition_number)
    kernel = SpatialKernel(
        basis=basis,
        coefficients=fit.kernel_coefficients,
        kernel_function=kernel_function,
        background_coefficients=fit.background_coefficients if bg_function else np.zeros(0),
        background_function=bg_function,
        metadata={"basis": kmeta["basis"], "iteration": iteration,
                  "n_candidates": int(active.sum()), "n_unknowns": fit.n_unknowns,
                  "condition_number": fit.condition_number,
                  "config": {"fit_single_kernels": kmeta.get("psf_match", {}),
                             "spatial_fit": dict(psf_match)}},
    )
    logger.info("%s: spatial fit (iteration %s) on %d candidates, %d unknowns, condition %.3g, kernel sum %.5f",
                label, iteration, int(active.sum()), fit.n_unknowns, fit.condition_number, kernel.kernel_sum)
    io.write_kernel(output_kernel, kernel)


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
    if n_good < n_kernel_terms:
        verdict = "underconstrained"
    elif n_good <= 2 * n_kernel_terms:
        verdict = "poorly constrained"
    else:
        verdict = "well constrained"
    rejected: dict[str, dict[str, int]] = {}
    for st in ("select", "single", "ksum", "spatial"):
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
    return {
        "kernel_sum": kernel.kernel_sum,
        "kernel_size": kernel.kernel_size,
        "spatial_condition_number": kernel.metadata.get("condition_number"),
        "n_spatial_unknowns": kernel.metadata.get("n_unknowns"),
        "n_kernel_terms": n_kernel_terms,
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
        "basis": kernel.metadata.get("basis"),
    }
