"""The candidate stages of ip_diffim's ``_solve`` loop, on arrays (docs/fitting.md).

Candidates are rows of a table (a dict of equal-length numpy columns). Their state is
``status`` (``"GOOD"``/``"BAD"``), and a rejected candidate records ``stage``
(``select``, ``single``, ``ksum``, ``spatial``), ``iteration`` and ``reason``.
The *active set* is afw's visiting rule (docs/fitting.md#active-set): in each cell, the first
``n_star_per_cell`` non-BAD candidates in rating order (``n ≤ 0``: all).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from psfmatch.fit import (
    CandidateFitError,
    candidate_residuals,
    difference_stamp,
    fit_candidate,
    noise_scale,
    usable_fit_pixels,
)
from psfmatch.kernel import SpatialKernel
from psfmatch.regularization import LambdaRule
from psfmatch.stats import clipped_mean_std, median_filled, residual_stats

__all__ = [
    "FitOptions",
    "ResidualLimits",
    "ScoredStamp",
    "SingleFits",
    "active_set",
    "assess_spatial",
    "clip_kernel_sums",
    "fill_flagged_template",
    "fit_single_kernels",
    "kernel_sum_reasons",
    "reject",
    "worst_candidates",
]

logger = logging.getLogger("psfmatch.candidates")

Stamps = tuple[np.ndarray, np.ndarray, np.ndarray]  # image, variance, mask stacks (n, h, w)


@dataclass(frozen=True)
class SingleFits:
    """Per-candidate single-kernel results (arrays over all fitted candidates).

    ``kernels`` (n, k, k), ``coefficients`` (n, n_basis), ``background`` (n,),
    ``kernel_sum`` (n,), ``condition_number`` (n,), ``normal_matrix`` (n, m, m),
    ``normal_vector`` (n, m), ``noise_scale`` (n,; :func:`psfmatch.fit.noise_scale` with
    constant weights, else 1), ``regularization_lambda`` (n,; 0 without regularization,
    NaN when not fitted), ``lambda_at_grid_edge`` (n,; a risk-minimising λ on the first or
    last point of its scan), residual ``mean``/``rms``/``npix`` (n,), and the outcome
    ``good`` (bool, n) with ``reason`` (str, n; "" when good).
    """

    kernels: np.ndarray
    coefficients: np.ndarray
    background: np.ndarray
    kernel_sum: np.ndarray
    condition_number: np.ndarray
    normal_matrix: np.ndarray
    normal_vector: np.ndarray
    noise_scale: np.ndarray
    regularization_lambda: np.ndarray
    lambda_at_grid_edge: np.ndarray
    mean: np.ndarray
    rms: np.ndarray
    npix: np.ndarray
    good: np.ndarray
    reason: np.ndarray


@dataclass(frozen=True, kw_only=True)
class ResidualLimits:
    """How a candidate's residual statistics are computed and judged.

    ``clipping`` rejects candidates with ``|mean(D/σ)| > mean_max`` or
    ``std(D/σ) > std_max``; ``bad_bits`` are mask bits left out of the statistics;
    ``core_radius`` restricts them to a central box of that half-width (None: the whole
    stamp inside the kernel border).
    """

    clipping: bool
    mean_max: float
    std_max: float
    bad_bits: int
    core_radius: int | None

    @classmethod
    def from_config(cls, cfg: Any, *, clipping: bool, bad_bits: int) -> ResidualLimits:
        """From a :class:`~psfmatch.config.PsfMatchConfig` (``candidateResidual*``, core stats)."""
        return cls(
            clipping=clipping,
            mean_max=cfg.candidate_residual_mean_max,
            std_max=cfg.candidate_residual_std_max,
            bad_bits=bad_bits,
            core_radius=cfg.candidate_core_radius if cfg.use_core_stats else None,
        )


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """Options of the per-candidate fits (ip_diffim's ``BuildSingleKernelVisitor``).

    ``regularization`` (the matrix ``H``) and ``regularization_lambda`` (a value or a
    :class:`~psfmatch.regularization.LambdaRule`) apply to delta-function fits only.
    ``excluded_bits``: mask bits of science pixels left out of the fit
    (:func:`psfmatch.fit.usable_fit_pixels`; the template's are filled beforehand by
    :func:`fill_flagged_template`); 0 uses every pixel, as ip_diffim does.
    """

    fit_background: bool
    constant_variance_weighting: bool
    iterate_single_kernel: bool
    check_condition_number: bool
    max_condition_number: float
    condition_number_type: str
    residuals: ResidualLimits
    regularization: np.ndarray | None = None
    regularization_lambda: float | LambdaRule = 0.0
    excluded_bits: int = 0

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        *,
        bad_bits: int,
        fit_background: bool | None = None,
        regularization: np.ndarray | None = None,
        regularization_lambda: float | LambdaRule = 0.0,
    ) -> FitOptions:
        """The single-kernel fit options of a :class:`~psfmatch.config.PsfMatchConfig`.

        ``fit_background`` overrides ``fitForBackground`` (a refit uses the choice of the
        fits it repeats); ``bad_bits`` are the ``badMaskPlanes`` bits of the stamps.
        """
        return cls(
            fit_background=(cfg.fit_for_background if fit_background is None
                            else fit_background),
            constant_variance_weighting=cfg.constant_variance_weighting,
            iterate_single_kernel=cfg.iterate_single_kernel,
            check_condition_number=cfg.check_condition_number,
            max_condition_number=cfg.max_condition_number,
            condition_number_type=cfg.condition_number_type,
            residuals=ResidualLimits.from_config(
                cfg, clipping=cfg.single_kernel_clipping, bad_bits=bad_bits),
            regularization=regularization,
            regularization_lambda=regularization_lambda,
        )


def fit_single_kernels(
    template: Stamps,
    science: Stamps,
    basis: np.ndarray,
    options: FitOptions,
    *,
    progress_every: int = 200,
) -> SingleFits:
    """``BuildSingleKernelVisitor`` over every candidate (docs/fitting.md#single-kernel-clipping).

    Every candidate is fitted (not only the active ones): a candidate's fit depends on
    nothing but its own stamps, so this equals ip_diffim's lazy visiting while keeping
    promotions of the next candidate of a cell free. A candidate is BAD when its fit
    raises, its condition number exceeds the limit (if checked), its residual
    statistics are NaN, or, with clipping, ``|mean(D/σ)|`` or ``std(D/σ)`` exceed the
    limits (``options.residuals``).
    """
    o = options
    n = template[0].shape[0]
    k = basis.shape[-1]
    m = basis.shape[0] + (1 if o.fit_background else 0)
    out = {
        "kernels": np.zeros((n, k, k)),
        "coefficients": np.zeros((n, basis.shape[0])),
        "background": np.zeros(n),
        "kernel_sum": np.full(n, np.nan),
        "condition_number": np.full(n, np.nan),
        "normal_matrix": np.zeros((n, m, m)),
        "normal_vector": np.zeros((n, m)),
        "noise_scale": np.ones(n),
        "regularization_lambda": np.full(n, np.nan),
        "lambda_at_grid_edge": np.zeros(n, dtype=bool),
        **_residual_columns(n),
    }
    for i in range(n):
        if progress_every and i and i % progress_every == 0:
            logger.info("single-kernel fits: %d/%d (%.0f%%)", i, n, 100.0 * i / n)
        t_stamp = (template[0][i], template[1][i], template[2][i])
        s_stamp = (science[0][i], science[1][i], science[2][i])
        weights = s_stamp[1].astype(np.float64) + t_stamp[1]
        usable = usable_fit_pixels(s_stamp[2], o.excluded_bits, k) if o.excluded_bits else None
        try:
            sol = fit_candidate(
                t_stamp[0], s_stamp[0], weights, basis,
                fit_background=o.fit_background,
                constant_variance_weighting=o.constant_variance_weighting,
                regularization=o.regularization,
                regularization_lambda=o.regularization_lambda,
                condition_number_type=o.condition_number_type,
                usable=usable,
            )
            if o.check_condition_number and sol.condition_number > o.max_condition_number:
                out["condition_number"][i] = sol.condition_number
                out["reason"][i] = (
                    f"condition number {sol.condition_number:.3g} > {o.max_condition_number:.3g}"
                )
                continue
            if o.iterate_single_kernel and not o.constant_variance_weighting:
                _, diff_var, _ = difference_stamp(t_stamp, s_stamp, sol.kernel, sol.background)
                half = k // 2
                refit = weights.copy()
                refit[half : refit.shape[0] - half, half : refit.shape[1] - half] = diff_var
                sol = fit_candidate(
                    t_stamp[0], s_stamp[0], refit, basis,
                    fit_background=o.fit_background, constant_variance_weighting=False,
                    regularization=o.regularization,
                    regularization_lambda=o.regularization_lambda,
                    condition_number_type=o.condition_number_type,
                    usable=usable,
                )
        except CandidateFitError as err:
            out["reason"][i] = f"fit failed: {err}"
            continue
        stats = candidate_residuals(t_stamp, s_stamp, sol.kernel, sol.background,
                                    bad_bits=o.residuals.bad_bits,
                                    core_radius=o.residuals.core_radius)
        out["kernels"][i] = sol.kernel
        out["coefficients"][i] = sol.coefficients
        out["background"][i] = sol.background
        out["kernel_sum"][i] = sol.kernel_sum
        out["condition_number"][i] = sol.condition_number
        out["normal_matrix"][i] = sol.normal_matrix
        out["normal_vector"][i] = sol.normal_vector
        if o.constant_variance_weighting:
            out["noise_scale"][i] = noise_scale(t_stamp[0], weights, sol.kernel)
        out["regularization_lambda"][i] = sol.regularization_lambda
        out["lambda_at_grid_edge"][i] = sol.lambda_at_grid_edge
        out["mean"][i], out["rms"][i], out["npix"][i] = stats.mean, stats.rms, stats.n_pixels
        reason = _residual_reason(stats.mean, stats.rms, o.residuals)
        out["reason"][i] = reason
        out["good"][i] = reason == ""
    return SingleFits(**out)


def fill_flagged_template(template: Stamps, bits: int) -> Stamps:
    """The template stamps with pixels flagged by ``bits`` replaced by their stamp's median.

    A flagged template pixel (an uninterpolated cosmic ray, a bad column) would be
    convolved into every model pixel whose kernel window holds it, and leaving all those
    out removes most of a bright star's stamp for a 21² kernel; its true value is
    unknown, and the median of the stamp's unflagged pixels (its sky) is the value that
    disturbs the model least. Image: flagged pixels filled; variance and mask: unchanged
    (the mask still says which pixels were filled). ``bits == 0``: the stamps as given.
    """
    if not bits:
        return template
    image, variance, mask = template
    flagged = (np.asarray(mask).astype(np.int64) & bits) != 0
    if not flagged.any():
        return template
    filled = np.array(image, copy=True)
    for i in np.flatnonzero(flagged.any(axis=(1, 2))):
        filled[i] = median_filled(filled[i].astype(np.float64), flagged[i])
    return filled, variance, mask


def _residual_columns(n: int) -> dict[str, np.ndarray]:
    """Empty residual-statistics columns for ``n`` candidates (all BAD until fitted)."""
    return {
        "mean": np.full(n, np.nan),
        "rms": np.full(n, np.nan),
        "npix": np.zeros(n, dtype=np.int64),
        "good": np.zeros(n, dtype=bool),
        "reason": np.full(n, "", dtype=object),
    }


def _residual_reason(mean: float, rms: float, limits: ResidualLimits) -> str:
    if math.isnan(mean) or math.isnan(rms):
        return "residual statistics are NaN"
    if limits.clipping and abs(mean) > limits.mean_max:
        return f"|mean(D/sigma)| = {abs(mean):.3f} > {limits.mean_max}"
    if limits.clipping and rms > limits.std_max:
        return f"std(D/sigma) = {rms:.3f} > {limits.std_max}"
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
    """``KernelSumVisitor`` until it rejects nothing (docs/fitting.md#kernel-sum-clipping).

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
    limits: ResidualLimits,
) -> dict[str, np.ndarray]:
    """``AssessSpatialKernelVisitor`` on the given (active) candidates (docs/fitting.md#assessment).

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
            bad_bits=limits.bad_bits, core_radius=limits.core_radius,
        )
        out["mean"][i], out["rms"][i], out["npix"][i] = stats.mean, stats.rms, stats.n_pixels
        reason = _residual_reason(stats.mean, stats.rms, limits)
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


def kernel_sum_reasons(
    kernel_sum: np.ndarray, last_pass: Mapping[str, float], max_ksum_sigma: float
) -> np.ndarray:
    """Why each kernel sum is an outlier of the last clipping pass (one string per candidate).

    The reason names the candidate's distance from the clipped mean and the limit
    ``max_ksum_sigma × std`` it exceeds, with its value
    (``|ksum - 1.1| = 0.4 > 3.0 x 0.058 = 0.174``).
    """
    mean, std = last_pass["mean"], last_pass["std"]
    return np.array(
        [f"|ksum - {mean:.5g}| = {abs(k - mean):.3g} > {max_ksum_sigma} x {std:.3g} "
         f"= {max_ksum_sigma * std:.3g}"
         for k in np.asarray(kernel_sum, dtype=np.float64)],
        dtype=object,
    )


@dataclass(frozen=True)
class ScoredStamp:
    """A candidate's residual under a fixed kernel: ``D = S − K ⋆ T − bg`` and its σ².

    ``index`` is the candidate's row in the stamp stacks; ``score`` the rms of ``D/σ``
    over its unmasked valid pixels (``-inf`` when undefined); ``difference``,
    ``variance`` and ``mask`` are cropped to the valid region (the stamp less the kernel
    half-width on each side).
    """

    index: int
    score: float
    difference: np.ndarray
    variance: np.ndarray
    mask: np.ndarray


def worst_candidates(
    template: Stamps,
    science: Stamps,
    kernel: SpatialKernel,
    x: np.ndarray,
    y: np.ndarray,
    *,
    bad_bits: int,
    n: int,
) -> list[ScoredStamp]:
    """The ``n`` candidates a spatial kernel fits worst, worst first.

    Every stamp is differenced with the kernel and background evaluated at its centre
    ``(x[i], y[i])`` (parent pixels) and ranked by the rms of ``D/σ`` over pixels without
    ``bad_bits``; ties keep the stamps' order.
    """
    scored = []
    for i in range(template[0].shape[0]):
        xi, yi = float(x[i]), float(y[i])
        d, var, mask = difference_stamp(
            (template[0][i], template[1][i], template[2][i]),
            (science[0][i], science[1][i], science[2][i]),
            kernel.image_at(xi, yi), float(kernel.background_at(xi, yi)),
        )
        rms = residual_stats(d, var, mask, bad_bits=bad_bits, core_radius=None).rms
        scored.append(ScoredStamp(i, rms if np.isfinite(rms) else -np.inf, d, var, mask))
    scored.sort(key=lambda item: item.score, reverse=True)
    return scored[:n]
