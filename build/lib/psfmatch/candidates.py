"""The candidate stages of ip_diffim's ``_solve`` loop, on arrays (reference §5).

Candidates are rows of a table (a dict of equal-length numpy columns). Their state is
``status`` (``"GOOD"``/``"BAD"``), and a rejected candidate records ``stage``
(``select``, ``single``, ``ksum``, ``spatial``), ``iteration`` and ``reason``.
The *active set* is afw's visiting rule (§5.1): in each cell, the first
``n_star_per_cell`` non-BAD candidates in rating order (``n ≤ 0``: all).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from psfmatch.fit import CandidateFitError, candidate_residuals, fit_candidate
from psfmatch.stats import clipped_mean_std

__all__ = [
    "SingleFits",
    "active_set",
    "assess_spatial",
    "clip_kernel_sums",
    "fit_single_kernels",
    "reject",
]

logger = logging.getLogger("psfmatch.candidates")

Stamps = tuple[np.ndarray, np.ndarray, np.ndarray]  # image, variance, mask stacks (n, h, w)


@dataclass(frozen=True)
class SingleFits:
    """Per-candidate single-kernel results (arrays over all fitted candidates).

    ``kernels`` (n, k, k), ``coefficients`` (n, n_basis), ``background`` (n,),
    ``kernel_sum`` (n,), ``condition_number`` (n,), ``normal_matrix`` (n, m, m),
    ``normal_vector`` (n, m), residual ``mean``/``rms``/``npix`` (n,), and the outcome
    ``good`` (bool, n) with ``reason`` (str, n; "" when good).
    """

    kernels: np.ndarray
    coefficients: np.ndarray
    background: np.ndarray
    kernel_sum: np.ndarray
    condition_number: np.ndarray
    normal_matrix: np.ndarray
    normal_vector: np.ndarray
    mean: np.ndarray
    rms: np.ndarray
    npix: np.ndarray
    good: np.ndarray
    reason: np.ndarray


def fit_single_kernels(
    template: Stamps,
    science: Stamps,
    basis: np.ndarray,
    *,
    fit_background: bool,
    constant_variance_weighting: bool,
    iterate_single_kernel: bool,
    check_condition_number: bool,
    max_condition_number: float,
    condition_number_type: str,
    single_kernel_clipping: bool,
    residual_mean_max: float,
    residual_std_max: float,
    bad_bits: int,
    core_radius: int | None,
    regularization: np.ndarray | None = None,
    regularization_lambda: float = 0.0,
    progress_every: int = 200,
) -> SingleFits:
    """``BuildSingleKernelVisitor`` over every candidate (reference §4, §5.2).

    Every candidate is fitted (not only the active ones): a candidate's fit depends on
    nothing but its own stamps, so this equals ip_diffim's lazy visiting while keeping
    promotions of the next candidate of a cell free. A candidate is BAD when its fit
    raises, its condition number exceeds the limit (if checked), its residual
    statistics are NaN, or, with clipping, ``|mean(D/σ)|`` or ``std(D/σ)`` exceed the
    limits.
    """
    n = template[0].shape[0]
    k = basis.shape[-1]
    m = basis.shape[0] + (1 if fit_background else 0)
    out = {
        "kernels": np.zeros((n, k, k)),
        "coefficients": np.zeros((n, basis.shape[0])),
        "background": np.zeros(n),
        "kernel_sum": np.full(n, np.nan),
        "condition_number": np.full(n, np.nan),
        "normal_matrix": np.zeros((n, m, m)),
        "normal_vector": np.zeros((n, m)),
        **_residual_columns(n),
    }
    for i in range(n):
        if progress_every and i and i % progress_every == 0:
            logger.info("single-kernel fits: %d/%d (%.0f%%)", i, n, 100.0 * i / n)
        t_stamp = (template[0][i], template[1][i], template[2][i])
        s_stamp = (science[0][i], science[1][i], science[2][i])
        weights = s_stamp[1].astype(np.float64) + t_stamp[1]
        try:
            sol = fit_candidate(
                t_stamp[0], s_stamp[0], weights, basis,
                fit_background=fit_background,
                constant_variance_weighting=constant_variance_weighting,
                regularization=regularization,
                regularization_lambda=regularization_lambda,
                condition_number_type=condition_number_type,
            )
            if check_condition_number and sol.condition_number > max_condition_number:
                out["condition_number"][i] = sol.condition_number
                out["reason"][i] = (
                    f"condition number {sol.condition_number:.3g} > {max_condition_number:.3g}"
                )
                continue
            if iterate_single_kernel and not constant_variance_weighting:
                from psfmatch.fit import difference_stamp

                _, diff_var, _ = difference_stamp(t_stamp, s_stamp, sol.kernel, sol.background)
                half = k // 2
                refit = weights.copy()
                refit[half : refit.shape[0] - half, half : refit.shape[1] - half] = diff_var
                sol = fit_candidate(
                    t_stamp[0], s_stamp[0], refit, basis,
                    fit_background=fit_background, constant_variance_weighting=False,
                    regularization=regularization,
                    regularization_lambda=regularization_lambda,
                    condition_number_type=condition_number_type,
                )
        except CandidateFitError as err:
            out["reason"][i] = f"fit failed: {err}"
            continue
        stats = candidate_residuals(
            t_stamp, s_stamp, sol.kernel, sol.background, bad_bits=bad_bits, core_radius=core_radius
        )
        out["kernels"][i] = sol.kernel
        out["coefficients"][i] = sol.coefficients
        out["background"][i] = sol.background
        out["kernel_sum"][i] = sol.kernel_sum
        out["condition_number"][i] = sol.condition_number
        out["normal_matrix"][i] = sol.normal_matrix
        out["normal_vector"][i] = sol.normal_vector
        out["mean"][i], out["rms"][i], out["npix"][i] = stats.mean, stats.rms, stats.n_pixels
        reason = _residual_reason(
            stats.mean, stats.rms, single_kernel_clipping, residual_mean_max, residual_std_max
        )
        out["reason"][i] = reason
        out["good"][i] = reason == ""
    return SingleFits(**out)


def _residual_columns(n: int) -> dict[str, np.ndarray]:
    """Empty residual-statistics columns for ``n`` candidates (all BAD until fitted)."""
    return {
        "mean": np.full(n, np.nan),
        "rms": np.full(n, np.nan),
        "npix": np.zeros(n, dtype=np.int64),
        "good": np.zeros(n, dtype=bool),
        "reason": np.full(n, "", dtype=object),
    }


def _residual_reason(
    mean: float, rms: float, clipping: bool, mean_max: float, std_max: float
) -> str:
    if math.isnan(mean) or math.isnan(rms):
        return "residual statistics are NaN"
    if clipping and abs(mean) > mean_max:
        return f"|mean(D/sigma)| = {abs(mean):.3f} > {mean_max}"
    if clipping and rms > std_max:
        return f"std(D/sigma) = {rms:.3f} > {std_max}"
    return ""


def active_set(
    cell: np.ndarray, rank_order: np.ndarray, good: np.ndarray, n_star_per_cell: int
) -> np.ndarray:
    """Boolean mask of the active candidates: the first ``n`` GOOD ones of each cell.

    ``rank_order`` sorts candidates within a cell (smaller = better); ``n ≤ 0`` keeps
    every GOOD candidate.
    """
    active = np.zeros(cell.shape, dtype=bool)
    order = np.lexsort((rank_order, cell))
    counts: dict[int, int] = {}
    for i in order:
        if not good[i] or cell[i] < 0:
            continue
        seen = counts.get(int(cell[i]), 0)
        if n_star_per_cell <= 0 or seen < n_star_per_cell:
            active[i] = True
            counts[int(cell[i])] = seen + 1
    return active


def clip_kernel_sums(
    kernel_sum: np.ndarray,
    cell: np.ndarray,
    rank_order: np.ndarray,
    good: np.ndarray,
    *,
    n_star_per_cell: int,
    max_ksum_sigma: float,
    clipping: bool,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """``KernelSumVisitor`` until it rejects nothing (reference §5.3, §5.7).

    Each pass takes the active set, computes afw's clipped mean and std of its kernel
    sums, and rejects active candidates with ``|kSum − mean| > max_ksum_sigma · std``;
    rejected candidates are replaced by the next of their cell on the next pass.

    Returns
    -------
    rejected : ndarray of bool
        Candidates rejected by this stage.
    passes : list of dict
        ``mean``, ``std``, ``limit``, ``n_active``, ``n_rejected`` of every pass.
    """
    good = good.copy()
    rejected = np.zeros(good.shape, dtype=bool)
    passes: list[dict[str, float]] = []
    while True:
        active = active_set(cell, rank_order, good, n_star_per_cell)
        sums = kernel_sum[active]
        if sums.size == 0:
            msg = "all spatial cells are empty: no candidate left for the kernel-sum statistics"
            raise CandidateFitError(msg)
        if sums.size == 1:
            mean, std = float(sums[0]), 0.0
        else:
            mean, std = clipped_mean_std(sums)
        if not (math.isfinite(mean) and math.isfinite(std)):
            msg = f"kernel-sum statistics are not finite (mean {mean}, std {std})"
            raise CandidateFitError(msg)
        limit = max_ksum_sigma * std
        bad = active & (np.abs(kernel_sum - mean) > limit) if clipping else np.zeros_like(active)
        passes.append(
            {"mean": mean, "std": std, "limit": limit, "n_active": int(active.sum()),
             "n_rejected": int(bad.sum())}
        )
        if not bad.any():
            return rejected, passes
        rejected |= bad
        good &= ~bad


def assess_spatial(
    template: Stamps,
    science: Stamps,
    kernels: np.ndarray,
    backgrounds: np.ndarray,
    *,
    clipping: bool,
    residual_mean_max: float,
    residual_std_max: float,
    bad_bits: int,
    core_radius: int | None,
) -> dict[str, np.ndarray]:
    """``AssessSpatialKernelVisitor`` on the given (active) candidates (reference §5.6).

    ``kernels[i]`` and ``backgrounds[i]`` are the spatial model evaluated at candidate
    ``i``'s centre. Returns columns ``mean``, ``rms``, ``npix``, ``good``, ``reason``.
    """
    n = template[0].shape[0]
    out = _residual_columns(n)
    for i in range(n):
        stats = candidate_residuals(
            (template[0][i], template[1][i], template[2][i]),
            (science[0][i], science[1][i], science[2][i]),
            kernels[i], float(backgrounds[i]),
            bad_bits=bad_bits, core_radius=core_radius,
        )
        out["mean"][i], out["rms"][i], out["npix"][i] = stats.mean, stats.rms, stats.n_pixels
        reason = _residual_reason(
            stats.mean, stats.rms, clipping, residual_mean_max, residual_std_max
        )
        out["reason"][i] = reason
        out["good"][i] = reason == ""
    return out


def reject(
    table: Mapping[str, np.ndarray], rows: np.ndarray, *, stage: str, iteration: int,
    reasons: np.ndarray | str,
) -> dict[str, np.ndarray]:
    """Return a copy of ``table`` with ``rows`` (bool mask) marked BAD at ``stage``."""
    out = {k: np.array(v, copy=True) for k, v in table.items()}
    rows = np.asarray(rows, dtype=bool)
    out["status"] = np.where(rows, "BAD", out["status"]).astype(object)
    out["stage"] = np.where(rows, stage, out["stage"]).astype(object)
    out["iteration"] = np.where(rows, iteration, out["iteration"])
    reasons = np.broadcast_to(np.asarray(reasons, dtype=object), rows.shape)
    out["reason"] = np.where(rows, reasons, out["reason"]).astype(object)
    return out
