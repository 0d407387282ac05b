"""Fit health and residual statistics: what ``metrics.json`` reports.

ip_diffim's ``_diagnostic`` judges a spatial kernel by how many good candidates stand
behind each spatial term (:func:`verdict`); to that we add the statistics of the
normalised difference ``D/√V`` (:func:`normalised_residual`), the rejections by stage
and reason, the spatial orders actually used and the kernel's own uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from psfmatch.candidates import active_set
from psfmatch.exposure import Exposure
from psfmatch.kernel import SpatialKernel
from psfmatch.stats import clipped_mean_std

__all__ = [
    "REJECTION_STAGES",
    "STATS_BAD_PLANES",
    "count_reasons",
    "difference_metrics",
    "model_psf_metrics",
    "normalised_residual",
    "reason_key",
    "residual_statistics",
    "residual_summary",
    "verdict",
]

#: Planes that exclude a difference-image pixel from the residual statistics.
STATS_BAD_PLANES = ("NO_DATA", "EDGE", "SAT", "SAT_TEMPLATE", "BAD", "CR", "SUSPECT", "INTRP")

#: Stages that reject kernel candidates, in the order they run.
REJECTION_STAGES = ("select", "single", "ksum", "pca", "spatial")


def verdict(n_good: int, n_terms: int, *, reduced_order: bool = False,
            ill_conditioned: bool = False) -> str:
    """ip_diffim's judgement of a spatial fit from its good candidates per spatial term.

    ``underconstrained`` with fewer good candidates than spatial terms; ``ill-conditioned``
    when the spatial condition number exceeds ``maxSpatialConditionNumber`` (ip_diffim
    only logs a warning then; the verdict says it so that no summary calls such a fit
    well constrained); ``reduced spatial order`` when the fit had to lower its orders;
    ``poorly constrained`` with at most two per term; else ``well constrained``.
    """
    if n_good < n_terms:
        return "underconstrained"
    if ill_conditioned:
        return "ill-conditioned"
    if reduced_order:
        return "reduced spatial order"
    if n_good <= 2 * n_terms:
        return "poorly constrained"
    return "well constrained"


def reason_key(reason: Any, *, exact: bool = False) -> str:
    """A rejection reason without the candidate's own numbers (unless ``exact``).

    Reasons carry numbers (``std(D/sigma) = 1.9 > 1.5``); the key is the text before
    `` = `` and ``:`` (``std(D/sigma)``), so that reasons of one kind group together.
    """
    return str(reason) if exact else str(reason).split(" = ")[0].split(":")[0]


def count_reasons(reasons: Iterable[Any], *, exact: bool = False) -> dict[str, int]:
    """How many times each rejection reason (:func:`reason_key`) occurs."""
    counts: dict[str, int] = {}
    for reason in reasons:
        key = reason_key(reason, exact=exact)
        counts[key] = counts.get(key, 0) + 1
    return counts


def normalised_residual(
    difference: Exposure, bad_planes: Iterable[str] = STATS_BAD_PLANES
) -> tuple[np.ndarray, np.ndarray]:
    """``D/√V`` of the usable pixels of a difference image, and the usable-pixel mask.

    A pixel is usable when it carries none of ``bad_planes``; of those, the returned
    values are the finite ones (a flat array). Image, mask and variance are not changed.
    """
    usable = (difference.mask & difference.plane_bitmask(tuple(bad_planes))) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        z = difference.image / np.sqrt(difference.variance)
    return z[usable & np.isfinite(z)], usable


def residual_statistics(difference: Exposure) -> dict[str, Any]:
    """Statistics of :math:`D/\\sqrt{V}` (:func:`normalised_residual`) for ``metrics.json``.

    ``n_pixels`` used, plain and 3σ-clipped mean and std, the masked fraction.
    """
    z, usable = normalised_residual(difference)
    return residual_summary(z, n_usable=int(np.count_nonzero(usable)), n_total=usable.size)


def residual_summary(z: np.ndarray, *, n_usable: int, n_total: int) -> dict[str, Any]:
    """:func:`residual_statistics` from its parts: the usable ``D/√V`` values in row-major
    order (as :func:`normalised_residual` gives them, or gathered band by band), the
    number of usable pixels and of all pixels."""
    clip_mean, clip_std = clipped_mean_std(z) if z.size else (float("nan"), float("nan"))
    return {
        "n_pixels": int(z.size),
        "mean": float(z.mean()) if z.size else float("nan"),
        "std": float(z.std()) if z.size else float("nan"),
        "clipped_mean": clip_mean,
        "clipped_std": clip_std,
        "masked_fraction": float(1.0 - np.float64(n_usable) / n_total),
        "statistic": "difference / sqrt(variance) over pixels without "
                     + ",".join(STATS_BAD_PLANES),
    }


def difference_metrics(
    difference: Exposure,
    kernel: SpatialKernel,
    candidates: Mapping[str, np.ndarray],
    *,
    n_star_per_cell: int,
    max_spatial_condition_number: float | None = None,
    statistics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``metrics.json`` of an image difference: fit health and residual statistics.

    ``candidates`` is the final candidate table (status, stage, reason, cell, rank);
    ``n_star_per_cell`` gives the active set the final fit used. With
    ``max_spatial_condition_number`` (``maxSpatialConditionNumber``), a larger spatial
    condition number makes the verdict ``ill-conditioned``, sets
    ``spatial_condition.exceeded`` and adds a line to ``warnings``. ``statistics``: the
    residual statistics when already computed (:func:`residual_summary`; ``difference``
    is then not used and may be None).
    """
    status, stage = candidates["status"], candidates["stage"]
    n_good = int((status == "GOOD").sum())
    n_terms = kernel.kernel_function.n_terms
    attempts = kernel.metadata.get("spatial_order_attempts") or []
    search = kernel.metadata.get("spatial_order_search")
    requested_kernel_order = (search["orders"][0] if search
                              else attempts[0]["kernel_order"] if attempts else None)
    rejected = {
        st: count_reasons(candidates["reason"][stage == st], exact=st == "select")
        for st in REJECTION_STAGES
    }
    active = active_set(candidates["cell"], candidates["rank"], status == "GOOD", n_star_per_cell)
    basis = kernel.metadata.get("basis") or {}
    fitting_basis = basis.get("fitting_basis", basis) or {}
    condition = kernel.metadata.get("condition_number")
    exceeded = bool(max_spatial_condition_number is not None and condition is not None
                    and condition > max_spatial_condition_number)
    warnings = []
    if exceeded:
        warnings.append(f"spatial condition number {condition:.3g} exceeds "
                        f"maxSpatialConditionNumber {max_spatial_condition_number:.3g}")
    return {
        "kernel_sum": kernel.kernel_sum,
        "kernel_size": kernel.kernel_size,
        "spatial_condition_number": kernel.metadata.get("condition_number"),
        "n_spatial_unknowns": kernel.metadata.get("n_unknowns"),
        "n_kernel_terms": n_terms,
        "spatial_orders": {
            "requested": {"kernel": requested_kernel_order,
                          "background": attempts[0]["background_order"]} if attempts else None,
            "used": {"kernel": kernel.kernel_function.order,
                     "background": None if kernel.background_function is None
                     else kernel.background_function.order},
            "attempts": attempts,
            "search": search,
        },
        "candidates": {
            "total": len(status), "good": n_good, "bad": int((status == "BAD").sum()),
            "used_in_final_fit": int(active.sum()),
            "rejected_by_stage": {k: int((stage == k).sum()) for k in rejected},
            "rejected_reasons": rejected,
        },
        "verdict": verdict(n_good, n_terms, reduced_order=len(attempts) > 1,
                           ill_conditioned=exceeded),
        "spatial_condition": {"value": condition, "max": max_spatial_condition_number,
                              "exceeded": exceeded},
        "warnings": warnings,
        "difference": dict(statistics) if statistics is not None
        else residual_statistics(difference),
        "basis": basis,
        "bic": fitting_basis.get("bic"),
        "regularization": fitting_basis.get("regularization"),
        "uncertainty": _uncertainty_summary(kernel),
        "kernel_accuracy": kernel.metadata.get("accuracy"),
    }


def _uncertainty_summary(kernel: SpatialKernel) -> dict[str, float] | None:
    """1σ of the kernel sum and background at the bbox centre, if the kernel has a covariance."""
    if kernel.covariance is None:
        return None
    x, y = kernel.centre
    return {
        "kernel_sum_sigma": float(np.sqrt(kernel.sum_variance_at(x, y))),
        "background_sigma_at_centre": float(np.sqrt(kernel.background_variance_at(x, y))),
        "kernel_pixel_sigma_max_at_centre": float(np.sqrt(kernel.image_variance_at(x, y).max())),
    }


def model_psf_metrics(
    kernel: SpatialKernel, cells: Mapping[str, np.ndarray], matched: Exposure
) -> dict[str, Any]:
    """``metrics.json`` of a model-PSF match: fit health and matched-PSF residuals per cell."""
    meta = kernel.metadata
    status = np.asarray(cells["status"]).astype(str)
    good = status == "GOOD"
    n_good = int(good.sum())
    n_terms = kernel.kernel_function.n_terms
    reasons = count_reasons(np.asarray(cells["reason"]).astype(str)[~good])

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
        "n_kernel_terms": n_terms,
        "cells": {"total": int(status.size), "used": n_good, "rejected": int((~good).sum()),
                  "rejected_reasons": reasons,
                  "grid": [meta.get("n_cells_x"), meta.get("n_cells_y")],
                  "region": meta.get("region")},
        "verdict": verdict(n_good, n_terms),
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
