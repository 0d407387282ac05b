"""Solving for the kernel: ip_diffim's ``_solve`` loop as separate steps.

``fit_single_kernels`` → [``kernel_sum_clip`` → ``spatial_fit`` → ``assess``] ×
``maxSpatialIterations`` → ``spatial_fit`` once more on the survivors (rule
``final_kernel``). Candidate tables carry every candidate with status GOOD/BAD, the
stage that rejected it (``select``, ``single``, ``ksum``, ``pca``, ``spatial``), the
iteration and the reason (docs/fitting.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.basis import (
    AlardLuptonChoice,
    alard_lupton_basis,
    choose_basis,
    delta_function_basis,
)
from psfmatch.bic import choose_degrees_by_bic
from psfmatch.candidates import (
    FitOptions,
    ResidualLimits,
    active_set,
    assess_spatial,
    clip_kernel_sums,
    fill_flagged_template,
    kernel_sum_reasons,
    reject,
)
from psfmatch.candidates import (
    fit_single_kernels as fit_candidates,
)
from psfmatch.config import AL, DF
from psfmatch.errors import InsufficientCandidatesError, PsfMatchError
from psfmatch.exposure import planes_bitmask
from psfmatch.kernel import SpatialKernel
from psfmatch.kernel_accuracy import kernel_accuracy
from psfmatch.pca import pca_refit
from psfmatch.regularization import LambdaRule, regularization_matrix
from psfmatch.select import OVER_MAX_CANDIDATES
from psfmatch.spatial import SpatialFunction
from psfmatch.steps.fields import StepConfig
from psfmatch.steps.spatial_model import fit_spatial_model, is_pooled, pooled_single_fit_setup
from psfmatch.steps.subtraction import fitting_fwhms, read_mode

__all__ = ["assess", "fit_single_kernels", "iteration_number", "kernel_sum_clip", "spatial_fit"]

logger = logging.getLogger("psfmatch.steps")

_XY_UNITS = {"x": "pixel", "y": "pixel"}


def _bad_bits(meta: Mapping[str, Any], planes: tuple[str, ...]) -> int:
    """Bits of ``planes`` in the stamps' template and science mask numberings."""
    return planes_bitmask(meta["mask_planes"].values(), planes)


def _fitting_stamps(stamps_path: str, cfg: StepConfig) -> tuple[Any, Any, np.ndarray, dict, int]:
    """The stamps as the kernel fits see them: template pixels flagged in
    ``kernel_fit.fit_mask_planes`` filled (:func:`fill_flagged_template`); also returns
    those planes' bits (the science pixels the fits leave out)."""
    t_stamps, s_stamps, ids, meta = io.read_stamps(stamps_path)
    bits = _bad_bits(meta, cfg.kernel_fit.fit_mask_planes)
    return fill_flagged_template(t_stamps, bits), s_stamps, ids, meta, bits


def fit_single_kernels(
    *,
    candidates_path: str,
    stamps_path: str,
    psf_path: str,
    output_candidates: str,
    output_kernels: str,
    config: Mapping[str, Any],
    label: str,
    mode_path: str | None = None,
) -> None:
    """Fit a kernel to every selected candidate, with residual clipping.

    The stamps are in the fitting roles ``select`` cut them in; ``mode_path`` gives the
    same roles for the basis sizing (:func:`psfmatch.steps.subtraction.fitting_fwhms`).

    Basis: Alard–Lupton (degrees chosen by BIC votes of the active candidates when
    ``useBicForKernelBasis``) or delta functions, regularized by ``λH`` when
    ``useRegularization`` (λ per candidate from ``lambdaType``; written to the table's
    ``lambda`` column).
    """
    cfg = StepConfig("fit_single_kernels", config)
    pm = cfg.psf_match
    target, reference = fitting_fwhms(io.read_json(psf_path), read_mode(mode_path))
    choice = choose_basis(pm, target_fwhm=target, reference_fwhm=reference)
    selected = io.read_table(candidates_path)
    table = dict(selected.columns)
    t_stamps, s_stamps, ids, meta, excluded_bits = _fitting_stamps(stamps_path, cfg)
    bad_bits = _bad_bits(meta, pm.bad_mask_planes)
    n = len(table["id"])
    row = {int(i): r for r, i in enumerate(table["id"])}
    index = np.array([row[int(i)] for i in ids], dtype=np.int64)
    if pm.kernel_basis_set == DF:
        basis, basis_meta, options = _delta_function_setup(pm, choice.kernel_size, bad_bits)
        if is_pooled(pm, cfg.kernel_fit):
            options, basis_meta["regularization"] = pooled_single_fit_setup(
                pm, cfg.kernel_fit, options, choice.kernel_size)
    else:
        options = FitOptions.from_config(pm, bad_bits=bad_bits)
        basis, basis_meta = _alard_lupton_setup(pm, choice, table, index, t_stamps, s_stamps,
                                                options, label)
    options = dataclasses.replace(options, excluded_bits=excluded_bits)
    logger.info("%s: fitting %d candidates with %d %s basis kernels of %d px (%s)",
                label, len(ids), basis.shape[0], basis_meta["type"], choice.kernel_size,
                choice.mode)
    fits = fit_candidates(t_stamps, s_stamps, basis, options)
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
    counts = {**selected.metadata.get("counts", {}), "single_good": int(fits.good.sum())}
    if regularization := basis_meta.get("regularization"):
        lam = fits.regularization_lambda[fits.good]
        regularization["lambda_median"] = float(np.median(lam)) if lam.size else None
        regularization["n_lambda_at_scan_edge"] = int(fits.lambda_at_grid_edge[fits.good].sum())
        if regularization["n_lambda_at_scan_edge"]:
            relative = regularization.get("lambda_scan_relative")
            scan = (("kernel_fit.df_lambda_range (relative)", *relative[:2]) if relative
                    else ("lambdaMin..lambdaMax", pm.lambda_min, pm.lambda_max))
            logger.warning("%s: %d good candidates have their risk-minimising lambda at an end "
                           "of the scan %s (%s..%s); widen the scan", label,
                           regularization["n_lambda_at_scan_edge"], *scan)
        logger.info("%s: regularization %s", label, regularization)
    logger.info("%s: single-kernel fits %s", label, counts)
    psf_match = cfg.block("psf_match")
    io.write_arrays(
        output_kernels,
        {"BASIS": basis, "KERNELS": fits.kernels, "NORMAL_MATRIX": fits.normal_matrix,
         "NORMAL_VECTOR": fits.normal_vector, "NOISE_SCALE": fits.noise_scale, "IDS": ids},
        metadata={"basis": basis_meta, "fit_background": options.fit_background,
                  "constant_variance_weighting": options.constant_variance_weighting,
                  "region": meta["region"], "psf_match": psf_match},
    )
    io.write_table(output_candidates, out, units=_XY_UNITS,
                   metadata={"step": "fit_single_kernels", "counts": counts,
                             "region": meta["region"], "psf_match": psf_match})
    if not fits.good.any():
        msg = f"{label}: no candidate has a good single-kernel fit"
        raise InsufficientCandidatesError(msg, counts)


def _delta_function_setup(
    cfg: Any, kernel_size: int, bad_bits: int
) -> tuple[np.ndarray, dict[str, Any], FitOptions]:
    """DF basis, its description, and the fit options with the regularization."""
    basis = delta_function_basis(kernel_size)
    meta: dict[str, Any] = {"type": "delta-function", "kernel_size": kernel_size}
    if not cfg.use_regularization:
        return basis, meta, FitOptions.from_config(cfg, bad_bits=bad_bits)
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
    options = FitOptions.from_config(cfg, bad_bits=bad_bits, regularization=h,
                                     regularization_lambda=rule)
    return basis, meta, options


def _alard_lupton_setup(
    cfg: Any,
    choice: AlardLuptonChoice,
    table: Mapping[str, np.ndarray],
    index: np.ndarray,
    t_stamps: tuple[np.ndarray, ...],
    s_stamps: tuple[np.ndarray, ...],
    options: FitOptions,
    label: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """AL basis (degrees by BIC votes if configured) and its description."""
    degrees = choice.degrees
    meta: dict[str, Any] = {"type": "alard-lupton", "sigmas": choice.sigmas,
                            "kernel_size": choice.kernel_size, "mode": choice.mode}
    if cfg.use_bic_for_kernel_basis:
        # voters: the active set of the selected candidates (top nStarPerCell per cell)
        voters = active_set(table["cell"][index], table["rank"][index],
                            np.ones(index.size, dtype=bool), cfg.n_star_per_cell)
        try:
            bic = choose_degrees_by_bic(
                tuple(a[voters] for a in t_stamps), tuple(a[voters] for a in s_stamps),
                sigmas=choice.sigmas, max_degrees=choice.degrees,
                half_width=choice.kernel_size // 2, options=options,
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
    config: Mapping[str, Any],
    iteration: int,
    label: str,
) -> None:
    """Reject active candidates whose kernel sum is an outlier (one spatial iteration)."""
    cfg = StepConfig("kernel_sum_clip", config)
    pm = cfg.psf_match
    data = io.read_table(candidates_path)
    table = dict(data.columns)
    good = table["status"] == "GOOD"
    try:
        rejected, passes = clip_kernel_sums(
            table["kernel_sum"], table["cell"], table["rank"], good,
            n_star_per_cell=pm.n_star_per_cell,
            max_ksum_sigma=pm.max_ksum_sigma,
            clipping=pm.kernel_sum_clipping,
        )
    except PsfMatchError as err:
        raise InsufficientCandidatesError(f"{label}: {err}", data.metadata.get("counts")) from err
    reasons = kernel_sum_reasons(table["kernel_sum"], passes[-1], pm.max_ksum_sigma)
    table = reject(table, rejected, stage="ksum", iteration=iteration, reasons=reasons)
    logger.info("%s: iteration %d kernel-sum passes %s", label, iteration, passes)
    io.write_table(output_candidates, table, units=_XY_UNITS,
                   metadata={**data.metadata, "step": "kernel_sum_clip", "iteration": iteration,
                             "kernel_sum_passes": passes,
                             "psf_match": cfg.block("psf_match")})


def iteration_number(iteration: int | str) -> int:
    """Iteration recorded with a rejection (the final fit counts as -1)."""
    return int(iteration) if str(iteration).lstrip("-").isdigit() else -1


def spatial_fit(
    *,
    candidates_path: str,
    kernels_path: str,
    stamps_path: str,
    output_kernel: str,
    output_candidates: str,
    config: Mapping[str, Any],
    iteration: int | str,
    label: str,
    mode_path: str | None = None,
) -> None:
    """Joint spatial kernel + background fit over the active candidates.

    With ``usePcaForSpatialKernel`` the active candidates' kernels are first reduced to
    a PCA basis and refitted with it (:func:`psfmatch.pca.pca_refit`); the candidate
    table, with the refit's rejections, is written to ``output_candidates``. With
    ``calculateKernelUncertainty`` the kernel carries the covariance of its coefficients
    (``kernel.fits`` ``COVARIANCE``); its error at the centre and the corners is
    always in the metadata (``accuracy``, :func:`psfmatch.kernel_accuracy.kernel_accuracy`).
    The ``kernel_fit`` section may raise the spatial order by cross-validation and, for
    delta functions, replaces the PCA by one pooled regularized fit
    (:mod:`psfmatch.steps.spatial_model`). ``iteration`` is the spatial iteration, or
    ``"final"`` for the fit on the survivors of the last assessment. With ``mode_path``
    (``mode/mode.json``; rule ``final_kernel``) the kernel's metadata record which image
    it convolves: ``maps`` = ``"template->science"`` or ``"science->template"``
    (docs/subtraction-modes.md#kernel-direction).
    """
    cfg = StepConfig("spatial_fit", config)
    pm = cfg.psf_match
    data = io.read_table(candidates_path)
    table = {k: np.array(v, copy=True) for k, v in data.columns.items()}
    arrays, kmeta = io.read_arrays(
        kernels_path, ("BASIS", "KERNELS", "NORMAL_MATRIX", "NORMAL_VECTOR", "IDS"))
    position = {int(i): p for p, i in enumerate(arrays["IDS"])}
    counts = data.metadata.get("counts")
    basis = np.asarray(arrays["BASIS"], dtype=np.float64)
    basis_meta = kmeta["basis"]
    normal_matrix, normal_vector = arrays["NORMAL_MATRIX"], arrays["NORMAL_VECTOR"]
    noise_corrected = (cfg.kernel_fit.candidate_weights == "noise_corrected"
                       and "NOISE_SCALE" in arrays)
    if noise_corrected:
        scale = np.asarray(arrays["NOISE_SCALE"], dtype=np.float64)  # 1 without constant weights
        normal_matrix = normal_matrix / scale[:, None, None]
        normal_vector = normal_vector / scale[:, None]
    pooled = is_pooled(pm, cfg.kernel_fit)
    if pm.use_pca_for_spatial_kernel and not pooled:
        t_stamps, s_stamps, stamp_ids, smeta, excluded_bits = _fitting_stamps(stamps_path, cfg)
        options = dataclasses.replace(
            FitOptions.from_config(pm, bad_bits=_bad_bits(smeta, pm.bad_mask_planes),
                                   fit_background=kmeta["fit_background"]),
            excluded_bits=excluded_bits)
        try:
            refit = pca_refit(table, arrays["KERNELS"], arrays["IDS"], t_stamps, s_stamps,
                              stamp_ids, pm, options=options,
                              iteration=iteration_number(iteration),
                              fitting_basis=kmeta["basis"])
        except InsufficientCandidatesError as err:
            raise InsufficientCandidatesError(f"{label}: {err.bare_message}", counts) from err
        table, basis, basis_meta = refit.table, refit.basis, refit.description
        normal_matrix, normal_vector = refit.normal_matrix, refit.normal_vector
        position = {i: p for p, i in enumerate(refit.candidate_ids)}
    active = active_set(table["cell"], table["rank"], table["status"] == "GOOD",
                        pm.n_star_per_cell)
    if not active.any():
        msg = f"{label}: no active candidate for the spatial fit"
        raise InsufficientCandidatesError(msg, counts)
    rows = np.array([position[int(i)] for i in table["id"][active]], dtype=np.int64)
    bbox = tuple(int(v) for v in kmeta["region"])
    kernel_function = SpatialFunction(pm.spatial_kernel_order, pm.spatial_model_type, bbox)
    bg_function = (SpatialFunction(pm.spatial_bg_order, pm.spatial_model_type, bbox)
                   if kmeta["fit_background"] else None)
    try:
        model = fit_spatial_model(
            list(zip(table["x"][active], table["y"][active], strict=True)),
            normal_matrix[rows], normal_vector[rows],
            n_basis=basis.shape[0],
            kernel_function=kernel_function,
            background_function=bg_function,
            constant_first_term=(kmeta["basis"]["type"] == AL
                                 or (pm.use_pca_for_spatial_kernel and not pooled)),
            pm=pm, kernel_fit=cfg.kernel_fit, kernel_size=basis.shape[-1], label=label,
        )
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err} ({int(active.sum())} candidates)") from err
    solved = model.solved
    if model.pooled is not None:
        basis_meta = {**basis_meta, "regularization": {
            **basis_meta.get("regularization", {}), "spatial": model.pooled}}
        logger.log(logging.WARNING if model.pooled["scan_too_narrow"] else logging.INFO,
                   "%s: pooled delta-function fit, lambda %.4g (%.3g x tr M / tr H)%s", label,
                   model.pooled["value"], model.pooled.get("relative", float("nan")),
                   "; at an end of kernel_fit.df_lambda_range: widen it"
                   if model.pooled["scan_too_narrow"] else "")
    fit, kernel_function = solved.fit, solved.kernel_function
    bg_function = solved.background_function
    if solved.reduced:
        logger.warning(
            "%s: spatial fit ill-posed at the configured orders (kernel %d, background %s): "
            "%s; using kernel order %d, background order %s",
            label, pm.spatial_kernel_order, solved.attempts[0]["background_order"],
            solved.attempts[0]["refused"], kernel_function.order,
            None if bg_function is None else bg_function.order)
    if fit.condition_number > pm.max_spatial_condition_number:
        logger.warning("%s: spatial condition number %.3g exceeds maxSpatialConditionNumber %.3g",
                       label, fit.condition_number, pm.max_spatial_condition_number)
    kernel = SpatialKernel(
        basis=basis,
        coefficients=fit.kernel_coefficients,
        kernel_function=kernel_function,
        background_coefficients=fit.background_coefficients if bg_function else np.zeros(0),
        background_function=bg_function,
        covariance=fit.covariance,
        metadata={**_direction(mode_path), "basis": basis_meta, "iteration": iteration,
                  "n_candidates": int(active.sum()), "n_unknowns": fit.n_unknowns,
                  "condition_number": fit.condition_number,
                  "spatial_order_attempts": solved.attempts,
                  **({"spatial_order_search": model.order_search}
                     if model.order_search is not None else {}),
                  "config": {"fit_single_kernels": kmeta.get("psf_match", {}),
                             "spatial_fit": cfg.block("psf_match"),
                             **({"kernel_fit": cfg.block("kernel_fit")}
                                if cfg.block("kernel_fit") else {})}},
    )
    kernel.metadata["accuracy"] = kernel_accuracy(
        kernel, inverse_variance_weights=not kmeta.get("constant_variance_weighting", True),
        regularized=model.pooled is not None, pca_basis=basis_meta.get("type") == "pca",
        noise_corrected=noise_corrected,
        unused={"good_not_active": int(((table["status"] == "GOOD") & ~active).sum()),
                "over_max_candidates": int((table["reason"] == OVER_MAX_CANDIDATES).sum())})
    if not pm.calculate_kernel_uncertainty:
        kernel = dataclasses.replace(kernel, covariance=None)
    logger.info("%s: spatial fit (iteration %s) on %d candidates, %d unknowns, condition %.3g, "
                "kernel sum %.5f", label, iteration, int(active.sum()), fit.n_unknowns,
                fit.condition_number, kernel.kernel_sum)
    io.write_kernel(output_kernel, kernel)
    io.write_table(output_candidates, table, units=_XY_UNITS,
                   metadata={**data.metadata, "step": "spatial_fit", "iteration": iteration,
                             "psf_match": cfg.block("psf_match")})


def _direction(mode_path: str | None) -> dict[str, Any]:
    """Kernel metadata saying which image the kernel maps onto which (empty without mode)."""
    if mode_path is None:
        return {}
    roles = io.read_json(mode_path)
    convolved, matched_to = roles["roles"]["template"], roles["roles"]["science"]
    if roles.get("preconvolution"):
        matched_to = "preconvolved science"
    return {"maps": f"{convolved}->{matched_to}", "convolved": convolved}


def assess(
    *,
    candidates_path: str,
    stamps_path: str,
    kernel_path: str,
    output_candidates: str,
    config: Mapping[str, Any],
    iteration: int,
    label: str,
) -> None:
    """Residuals of the spatial model at each active candidate; reject the bad ones."""
    cfg = StepConfig("assess", config)
    pm = cfg.psf_match
    data = io.read_table(candidates_path)
    table = {k: np.array(v, copy=True) for k, v in data.columns.items()}
    kernel = io.read_kernel(kernel_path)
    t_stamps, s_stamps, ids, meta, _ = _fitting_stamps(stamps_path, cfg)
    active = active_set(table["cell"], table["rank"], table["status"] == "GOOD",
                        pm.n_star_per_cell)
    position = {int(i): p for p, i in enumerate(ids)}
    act_rows = np.flatnonzero(active)
    rows = np.array([position[int(table["id"][r])] for r in act_rows], dtype=np.int64)
    xs, ys = table["x"][act_rows], table["y"][act_rows]
    kernels = np.array([kernel.image_at(x, y) for x, y in zip(xs, ys, strict=True)])
    backgrounds = np.array([float(kernel.background_at(x, y))
                            for x, y in zip(xs, ys, strict=True)])
    limits = ResidualLimits.from_config(pm, clipping=pm.spatial_kernel_clipping,
                                        bad_bits=_bad_bits(meta, pm.bad_mask_planes))
    result = assess_spatial(tuple(a[rows] for a in t_stamps), tuple(a[rows] for a in s_stamps),
                            kernels, backgrounds, limits)
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
        msg = f"{label}: no candidate to assess the spatial kernel"
        raise InsufficientCandidatesError(msg, data.metadata.get("counts"))
    io.write_table(output_candidates, table, units=_XY_UNITS,
                   metadata={**data.metadata, "step": "assess", "assessment": summary,
                             "psf_match": cfg.block("psf_match")})
