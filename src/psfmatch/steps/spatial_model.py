"""The spatial kernel model of ``spatial_fit`` beyond ip_diffim (``kernel_fit`` section).

Glue between the solve steps (:mod:`psfmatch.steps.solve`) and the array code:

* :func:`pooled_single_fit_setup`: the single-candidate delta-function fits of the
  pooled mode (inverse-variance weights, λ per candidate by the unbiased risk on a
  relative scan, :class:`psfmatch.lambda_choice.RelativeRiskRule`);
* :func:`fit_spatial_model`: the spatial fit itself: ip_diffim's
  (:func:`psfmatch.spatial.fit_spatial_reducing_order`), with the kernel's spatial order
  first raised by cross-validation where configured (:mod:`psfmatch.spatial_order`), or
  the pooled regularized delta-function fit (:mod:`psfmatch.pooled_fit`), which lowers
  its orders on the same geometric test.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from psfmatch.candidates import FitOptions
from psfmatch.config import DF
from psfmatch.errors import PsfMatchError
from psfmatch.lambda_choice import RelativeRiskRule
from psfmatch.pooled_fit import fit_pooled_band_limited, fit_pooled_regularized
from psfmatch.regularization import regularization_matrix
from psfmatch.spatial import (
    MAX_GEOMETRIC_CONDITION,
    ReducedOrderFit,
    SpatialFitError,
    SpatialFunction,
    fit_lowering_orders,
    fit_spatial_reducing_order,
    geometric_condition,
)
from psfmatch.spatial_order import cross_validated_order

__all__ = ["SpatialModel", "fit_spatial_model", "is_pooled", "pooled_single_fit_setup",
           "regularization_from_config"]

logger = logging.getLogger("psfmatch.steps")


def is_pooled(pm: Any, kernel_fit: Any) -> bool:
    """Whether the delta-function kernel gets the pooled spatial fit (``kernel_fit``)."""
    return pm.kernel_basis_set == DF and kernel_fit.df_spatial_fit == "pooled"


def regularization_from_config(pm: Any, kernel_size: int, *, fit_background: bool) -> np.ndarray:
    """``H`` of :func:`psfmatch.regularization.regularization_matrix` from ``psf_match``."""
    return regularization_matrix(
        kernel_size,
        regularization_type=pm.regularization_type,
        stencil=pm.central_regularization_stencil,
        orders=pm.forward_regularization_orders,
        border_penalty=pm.regularization_border_penalty,
        fit_background=fit_background,
    )


def pooled_single_fit_setup(
    pm: Any, kernel_fit: Any, options: FitOptions, kernel_size: int
) -> tuple[FitOptions, dict[str, Any]]:
    """Single-fit options of the pooled DF mode and the ``regularization`` description.

    The single kernels serve the clipping only (kernel-sum and residual clipping); the
    kernel written is the pooled fit's. Pixels are weighted by their inverse variance
    (the risk estimate needs calibrated weights; with ip_diffim's constant weights it
    under-regularizes bright candidates), and each candidate's λ minimises its unbiased
    predictive risk on ``kernel_fit.df_lambda_range`` relative to ``tr M / tr H``.
    """
    h = regularization_from_config(pm, kernel_size, fit_background=options.fit_background)
    low, high = kernel_fit.df_lambda_range
    rule = RelativeRiskRule(minimum=float(low), maximum=float(high),
                            step=float(kernel_fit.df_lambda_step))
    options = dataclasses.replace(options, constant_variance_weighting=False,
                                  regularization=h, regularization_lambda=rule)
    description = {
        "type": pm.regularization_type,
        "stencil": pm.central_regularization_stencil,
        "orders": list(pm.forward_regularization_orders),
        "border_penalty": pm.regularization_border_penalty,
        "lambda_type": "relativeUnbiasedRisk",
        "lambda_scan_relative": [float(low), float(high), float(kernel_fit.df_lambda_step)],
        "weights": "inverse variance",
        "spatial_fit": "pooled",
    }
    return options, description


@dataclass(frozen=True)
class SpatialModel:
    """Outcome of :func:`fit_spatial_model`.

    ``solved`` is the fit with the families used and every order tried;
    ``order_search`` the cross-validation record (``None`` when not run);
    ``pooled`` the λ choice of the pooled DF fit (``None`` for other fits).
    """

    solved: ReducedOrderFit
    order_search: dict[str, Any] | None
    pooled: dict[str, Any] | None


def fit_spatial_model(
    centres: Sequence[tuple[float, float]],
    matrices: np.ndarray,
    vectors: np.ndarray,
    *,
    n_basis: int,
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
    constant_first_term: bool,
    pm: Any,
    kernel_fit: Any,
    kernel_size: int,
    label: str,
) -> SpatialModel:
    """The spatial kernel + background fit of ``spatial_fit`` (module docstring).

    The covariance is always computed (the kernel's own error is reported whether or
    not ``calculateKernelUncertainty`` stores it).
    """
    if kernel_fit.spatial_order == "cross_validated" and not constant_first_term:
        logger.info("%s: kernel_fit.spatial_order: cross_validated is not applied to "
                    "delta-function kernels without a PCA basis; spatial order %d as "
                    "configured", label, kernel_function.order)
    if is_pooled(pm, kernel_fit):
        return _pooled(centres, matrices, vectors, n_basis=n_basis,
                       kernel_function=kernel_function, background_function=background_function,
                       pm=pm, kernel_fit=kernel_fit, kernel_size=kernel_size, label=label)
    search = None
    # the search refits the spatial model ~10 times: affordable (and meaningful) for a
    # small basis with a constant first term (AL, PCA), not for k² delta functions
    orders = _orders_to_search(centres, kernel_function, kernel_fit) if constant_first_term else ()
    if len(orders) > 1:
        try:
            choice = cross_validated_order(
                centres, matrices, vectors, n_basis=n_basis, kernel_function=kernel_function,
                background_function=background_function,
                constant_first_term=constant_first_term, orders=orders)
        except PsfMatchError as err:
            logger.warning("%s: spatial order not cross-validated (%s); order %d as configured",
                           label, err, kernel_function.order)
            search = {"mode": "cross_validated", "orders": list(orders), "chosen": None,
                      "scores": None, "note": str(err)}
        else:
            search = {"mode": "cross_validated", "orders": list(orders), "chosen": choice.order,
                      "scores": {str(k): v for k, v in choice.scores.items()},
                      "significance": {str(k): v for k, v in choice.significance.items()}}
            logger.info("%s: spatial kernel order %d by cross-validation over %s (scores %s)",
                        label, choice.order, list(orders), choice.scores)
            if choice.order == orders[-1]:
                logger.warning("%s: cross-validation chose the highest order allowed "
                               "(kernel_fit.max_spatial_order %d): the kernel may vary faster",
                               label, orders[-1])
            kernel_function = SpatialFunction(choice.order, kernel_function.model_type,
                                              kernel_function.bbox)
    solved = fit_spatial_reducing_order(
        centres, matrices, vectors, n_basis=n_basis, kernel_function=kernel_function,
        background_function=background_function, constant_first_term=constant_first_term,
        condition_number_type=pm.condition_number_type, compute_covariance=True)
    return SpatialModel(solved, search, None)


def _orders_to_search(centres, kernel_function: SpatialFunction, kernel_fit: Any) -> tuple:
    """Orders the cross-validation may choose: configured … max, each well posed.

    An order whose terms the candidate positions constrain poorly (the geometric test
    of :func:`psfmatch.spatial.fit_spatial_reducing_order`) ends the range, so the
    search never competes with the order reduction.
    """
    if kernel_fit.spatial_order != "cross_validated":
        return ()
    xs = np.array([c[0] for c in centres], dtype=np.float64)
    ys = np.array([c[1] for c in centres], dtype=np.float64)
    orders = []
    for order in range(kernel_function.order, kernel_fit.max_spatial_order + 1):
        function = SpatialFunction(order, kernel_function.model_type, kernel_function.bbox)
        if not geometric_condition(function, xs, ys) <= MAX_GEOMETRIC_CONDITION:
            break
        orders.append(order)
    return tuple(orders)


def _pooled(centres, matrices, vectors, *, n_basis, kernel_function, background_function,
            pm, kernel_fit, kernel_size, label) -> SpatialModel:
    """Pooled regularized DF fit, lowering both orders while the positions are too few."""
    h = regularization_from_config(pm, kernel_size, fit_background=False)

    fit = (fit_pooled_band_limited if kernel_fit.df_prior == "band_limited"
           else fit_pooled_regularized)

    def solve(kf: SpatialFunction, bf: SpatialFunction | None) -> tuple[Any, dict]:
        result = fit(
            centres, np.asarray(matrices), np.asarray(vectors), h, n_basis=n_basis,
            kernel_function=kf, background_function=bf,
            log_span=tuple(kernel_fit.df_lambda_range), step=kernel_fit.df_lambda_step,
            compute_covariance=True)
        if not np.all(np.isfinite(result.fit.kernel_coefficients)):
            raise SpatialFitError("the pooled solution is not finite")
        choice = result.choice.to_dict() if result.choice is not None else {}
        pilot, width = result.pilot_choice, result.width_choice
        scan = (result.choice.log_relative[[0, -1]].tolist() if result.choice is not None
                else list(kernel_fit.df_lambda_range))
        pooled = {**choice, "value": result.regularization_lambda,
                  "pilot_lambda": result.pilot_lambda,
                  "pilot_relative": None if pilot is None else pilot.relative,
                  "scan_relative": scan,
                  "constant_sum": True, "shape_prior": True,
                  "prior": "band_limited" if result.prior_width else "finite_difference",
                  "prior_width_px": result.prior_width,
                  "width_pass_relative": None if width is None else width.relative}
        if result.prior_note:
            pooled["prior_note"] = result.prior_note
            logger.warning("%s: %s", label, result.prior_note)
        # widen the scan: an end of a first pass (the width pass included), or the
        # lower end of the last (its upper end means "the pilot's shape, scaled")
        pooled["scan_too_narrow"] = bool(
            (pilot is not None and pilot.at_scan_edge)
            or (width is not None and width.at_scan_edge)
            or (result.choice is not None and result.choice.at_scan_edge
                and result.choice.relative < 1.0))
        return result.fit, pooled

    reduced, pooled = fit_lowering_orders(
        centres, kernel_function, background_function, solve,
        failure="pooled delta-function fit failed at every order")
    return SpatialModel(reduced, None, pooled)
