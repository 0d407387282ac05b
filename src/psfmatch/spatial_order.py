"""Spatial order of the kernel chosen by cross-validation over the candidates.

ip_diffim's production default (``spatialKernelOrder: 1``) assumes the matching kernel
varies linearly across the image. Where it does not (a PSF that changes shape across
the field, a registration residual from a non-linear distortion), every star away
from the candidates' mean position is left with a residual; a field with hundreds of
candidates can afford a higher order, a sparse field cannot. The data say which.

Two folds, by the parity of a checkerboard of ``cell`` × ``cell`` pixel squares
(neighbouring candidates, whose stamps may share pixels, stay in one fold): the
spatial model fitted on one fold predicts the other. The prediction error of a
candidate with local coefficients ``a`` (background last) needs only its normal
equations, :math:`\\|s - C a\\|_W^2 = s^T W s - 2 a^T \\beta + a^T M a`, and the first
term does not depend on the model, so the score of candidate ``c`` under an order is
:math:`e_c = a_c^T M_c a_c - 2 a_c^T \\beta_c` (lower is better), and the score of the
order is their sum over both folds.

A higher order is taken only when it predicts the held-out candidates *significantly*
better than the order chosen so far: the paired differences :math:`d_c = e_c^{\\rm high}
- e_c^{\\rm chosen}` must have a mean below :math:`-z\\,\\mathrm{sd}(d)/\\sqrt{n}`
(``z`` = 2). A gain carried by one or two outlying candidates (a variable star not yet
clipped, a bad stamp) is then not enough, while a kernel that really varies faster
improves most candidates. The weights need not be calibrated: every order is scored
alike, and the test is on the scatter of the differences themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psfmatch.errors import PsfMatchError
from psfmatch.spatial import SpatialFit, SpatialFunction, fit_spatial

__all__ = ["OrderChoice", "cross_validated_order", "local_coefficients"]


def local_coefficients(fit: SpatialFit, kernel_function: SpatialFunction,
                       background_function: SpatialFunction | None,
                       xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Each candidate's basis coefficients (and background, last) from a spatial fit."""
    kernel = fit.kernel_coefficients @ kernel_function.terms(xs, ys)  # (n_basis, n)
    parts = [kernel.T]
    if background_function is not None:
        bg = fit.background_coefficients @ background_function.terms(xs, ys)
        parts.append(np.atleast_1d(bg)[:, None])
    return np.hstack(parts)


@dataclass(frozen=True)
class OrderChoice:
    """Outcome of :func:`cross_validated_order`: the chosen ``order``, the
    cross-validation ``scores`` per order tried (``None`` for an order whose fit failed
    or that had fewer candidates than unknowns in a fold) and ``significance``: for each
    order above the first, the paired improvement over the order chosen before it, in
    standard errors (positive = better; ``None`` when not scored)."""

    order: int
    scores: dict[int, float | None]
    significance: dict[int, float | None] | None = None


def cross_validated_order(
    centres: Sequence[tuple[float, float]],
    matrices: np.ndarray,
    vectors: np.ndarray,
    *,
    n_basis: int,
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
    constant_first_term: bool,
    orders: Sequence[int] = (0, 1, 2, 3, 4),
    cell: int = 128,
    z: float = 2.0,
) -> OrderChoice:
    """The kernel spatial order with the lowest two-fold prediction error (module docstring).

    ``kernel_function`` gives the family and bbox (its order is ignored); the
    background keeps ``background_function`` as given. An order is tried only when
    each fold has more candidates than the kernel has spatial terms.

    Raises
    ------
    PsfMatchError
        No order could be scored.
    """
    xy = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    q = np.asarray(matrices, dtype=np.float64)
    w = np.asarray(vectors, dtype=np.float64)
    fold = ((np.floor(xy[:, 0] / cell) + np.floor(xy[:, 1] / cell)) % 2).astype(int)
    scores: dict[int, float | None] = {}
    per_candidate: dict[int, np.ndarray] = {}
    for order in orders:
        kf = SpatialFunction(int(order), kernel_function.model_type, kernel_function.bbox)
        errors = np.full(len(xy), np.nan)
        for train in (0, 1):
            fit_rows, test_rows = fold == train, fold != train
            if fit_rows.sum() <= kf.n_terms or not test_rows.any():
                break
            try:
                fit = fit_spatial([tuple(c) for c in xy[fit_rows]], q[fit_rows], w[fit_rows],
                                  n_basis=n_basis, kernel_function=kf,
                                  background_function=background_function,
                                  constant_first_term=constant_first_term)
            except PsfMatchError:
                break
            a = local_coefficients(fit, kf, background_function, xy[test_rows, 0], xy[test_rows, 1])
            errors[test_rows] = (np.einsum("ci,cij,cj->c", a, q[test_rows], a)
                                 - 2.0 * np.einsum("ci,ci->c", a, w[test_rows]))
        ok = bool(np.all(np.isfinite(errors)))
        scores[int(order)] = float(errors.sum()) if ok else None
        if ok:
            per_candidate[int(order)] = errors
    if not per_candidate:
        msg = f"no spatial order in {list(orders)} could be cross-validated ({len(xy)} candidates)"
        raise PsfMatchError(msg)
    chosen = min(per_candidate)
    significance: dict[int, float | None] = {}
    for order in sorted(scores):
        if order <= chosen:
            continue
        if order not in per_candidate:
            significance[order] = None
            continue
        d = per_candidate[order] - per_candidate[chosen]
        spread = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
        gain = -float(d.mean()) / (spread / np.sqrt(d.size)) if spread > 0 else 0.0
        significance[order] = gain
        if gain > z:
            chosen = order
    return OrderChoice(chosen, scores, significance)
