"""Per-candidate kernel fit: ip_diffim's ``KernelCandidate`` / ``StaticKernelSolution``.

A candidate is a pair of stamps (template ``T``, the image that gets convolved, and
science ``S``) of side ``2·kernel_size + 1`` around a star. With basis kernels ``B_i``
and the correlation operator of :mod:`psfmatch.convolution`, the model of the science
stamp over the valid region (the stamp shrunk by the kernel half-width) is

.. math::  S \\approx \\sum_i a_i (T \\star B_i) + b\\,[\\text{fit\\_background}],

solved by weighted least squares: :math:`M = C^T W C`, :math:`\\beta = C^T W s`,
:math:`(M + \\lambda H) a = \\beta` (docs/fitting.md#candidate-fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from psfmatch.errors import PsfMatchError
from psfmatch.regularization import LambdaRule
from psfmatch.stats import ResidualStats, residual_stats

__all__ = [
    "CandidateFitError",
    "CandidateSolution",
    "CandidateSystem",
    "candidate_system",
    "condition_number",
    "design_matrix",
    "difference_stamp",
    "fit_candidate",
    "noise_scale",
    "solve_normal_equations",
    "usable_fit_pixels",
]


class CandidateFitError(PsfMatchError, ValueError):
    """A candidate cannot be fitted (bad variance, singular system, NaN solution)."""


@dataclass(frozen=True)
class CandidateSystem:
    """Unregularized normal equations of one candidate.

    Attributes
    ----------
    matrix : ndarray, shape (m, m)
        :math:`M = C^T W C` (background last when fitted).
    vector : ndarray, shape (m,)
        :math:`\\beta = C^T W s`.
    data_norm : float
        :math:`s^T W s`.
    n_data : int
        Number of fitted pixels.
    """

    matrix: np.ndarray
    vector: np.ndarray
    data_norm: float
    n_data: int


@dataclass(frozen=True)
class CandidateSolution:
    """Result of one candidate fit.

    Attributes
    ----------
    coefficients : ndarray, shape (n_basis,)
        Basis coefficients ``a_i``.
    background : float
        Fitted constant background (0 if not fitted).
    kernel : ndarray, shape (k, k)
        ``Σ a_i B_i``.
    kernel_sum : float
        Sum of ``kernel`` (= ``a_0`` for renormalised AL/PCA bases).
    condition_number : float
        Of the normal matrix without regularization.
    normal_matrix, normal_vector : ndarray
        ``M`` and ``β`` (background last when fitted), kept for the spatial fit.
    regularization_lambda : float
        λ used (0 without regularization).
    lambda_at_grid_edge : bool
        A risk-minimising λ fell on the first or last point of the scan.
    """

    coefficients: np.ndarray
    background: float
    kernel: np.ndarray
    kernel_sum: float
    condition_number: float
    normal_matrix: np.ndarray
    normal_vector: np.ndarray
    regularization_lambda: float = 0.0
    lambda_at_grid_edge: bool = False


def design_matrix(template: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Columns ``T ⋆ B_i`` over the valid region, flattened row-major.

    Parameters
    ----------
    template : ndarray, shape (H, W)
        Template stamp.
    basis : ndarray, shape (n_basis, k, k)
        Odd-sized basis kernels.

    Returns
    -------
    ndarray, shape ((H − k + 1)·(W − k + 1), n_basis)
    """
    k = basis.shape[-1]
    windows = sliding_window_view(np.asarray(template, dtype=np.float64), (k, k))
    ny, nx = windows.shape[:2]
    flat = basis.reshape(basis.shape[0], k * k)
    if flat.shape[0] == k * k and _is_identity(flat):  # delta functions: the windows themselves
        return windows.reshape(ny * nx, k * k).copy()
    return windows.reshape(ny * nx, k * k) @ flat.T


def _is_identity(matrix: np.ndarray) -> bool:
    return bool(np.all(np.diagonal(matrix) == 1.0) and np.count_nonzero(matrix) == matrix.shape[0])


def condition_number(
    matrix: np.ndarray, kind: str = "EIGENVALUE", *, eigenvalues: np.ndarray | None = None
) -> float:
    """``λmax/λmin`` of the symmetric eigenvalues, or ``σmax/σmin`` (``"SVD"``).

    ``inf`` when the smallest value is 0; for ``EIGENVALUE`` the ratio uses absolute
    values of the extreme eigenvalues as Eigen does (``eigenvalues``, if already known,
    are used instead of a new decomposition).
    """
    if kind == "EIGENVALUE":
        values = np.abs(np.linalg.eigvalsh(matrix) if eigenvalues is None else eigenvalues)
    elif kind == "SVD":
        values = np.linalg.svd(matrix, compute_uv=False)
    else:
        msg = f"conditionNumberType must be 'EIGENVALUE' or 'SVD', got {kind!r}"
        raise ValueError(msg)
    smallest = float(values.min())
    return math.inf if smallest == 0 else float(values.max()) / smallest


def solve_normal_equations(
    matrix: np.ndarray, vector: np.ndarray, *, eigenvalues: np.ndarray | None = None
) -> np.ndarray:
    """Solve the symmetric system as ip_diffim does (docs/fitting.md#solving).

    A full-rank system (every eigenvalue above ``ε·n·|λ|max``, the rank test of the
    full-pivot LU ip_diffim uses) is solved directly; otherwise the eigen-decomposition
    ``M = R Λ Rᵀ`` is used with every non-zero eigenvalue inverted (zeros stay zero).
    ``eigenvalues`` of ``matrix``, when already known, save one decomposition.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    vector = np.asarray(vector, dtype=np.float64)
    values = np.linalg.eigvalsh(matrix) if eigenvalues is None else eigenvalues
    largest = float(np.abs(values).max()) if values.size else 0.0
    tolerance = np.finfo(np.float64).eps * matrix.shape[0] * largest
    if largest > 0 and np.all(np.abs(values) > tolerance):
        return np.linalg.solve(matrix, vector)
    values, vectors = np.linalg.eigh(matrix)
    inverse = np.zeros_like(values)
    nonzero = values != 0
    inverse[nonzero] = 1.0 / values[nonzero]
    return vectors @ (inverse * (vectors.T @ vector))


def _fit_region(shape: tuple[int, ...], kernel_size: int) -> tuple[slice, slice]:
    """The valid region of a stamp: less the kernel half-width on every side."""
    half = int(kernel_size) // 2
    return slice(half, shape[0] - half), slice(half, shape[1] - half)


def usable_fit_pixels(science_mask: np.ndarray, bits: int, kernel_size: int) -> np.ndarray:
    """Fit-region pixels of a science stamp free of the mask ``bits`` (bool, raveled).

    Shape: the fit region of :func:`candidate_system` (the stamp less the kernel
    half-width on each side). Flagged *template* pixels are not handled here: they
    would spoil every model pixel whose kernel window holds them, so they are filled
    before the fit instead (:func:`psfmatch.candidates.fill_flagged_template`).
    """
    bad = (np.asarray(science_mask).astype(np.int64) & bits) != 0
    return ~bad[_fit_region(bad.shape, kernel_size)].ravel()


def noise_scale(template: np.ndarray, variance: np.ndarray, kernel: np.ndarray) -> float:
    """How much noisier a constant-weight fit's data are than its weights say.

    With ``constantVarianceWeighting`` every pixel of a stamp is weighted by the stamp's
    median variance, so the candidate's normal equations claim the precision of a star
    seen on sky noise. Its model pixels, where the fit's information is, have the
    variance of the star's core instead. The factor, the variance averaged with the
    model's squared weight over the fit region relative to the median used,

    .. math::  s = \\frac{\\sum_p m_p^2 V_p}{\\sum_p m_p^2} \\Big/ \\mathrm{median}(V),
               \\qquad m = T \\star K,

    is 1 for a sky-limited star and grows with its brightness (2–200 on a simulated
    2048² pair). It comes from the variance plane and the fitted kernel, not from the
    residuals, so it carries no noise of its own. 1.0 when the model is empty.
    """
    model = design_matrix(template, np.asarray(kernel, dtype=np.float64)[None])[:, 0]
    v = np.asarray(variance, dtype=np.float64)
    v_fit = v[_fit_region(v.shape, kernel.shape[-1])].ravel()
    weight = model**2
    median = float(np.median(v))
    if not (weight.sum() > 0 and median > 0):
        return 1.0
    return float(np.sum(weight * v_fit) / weight.sum()) / median


def candidate_system(
    template: np.ndarray,
    science: np.ndarray,
    variance: np.ndarray,
    basis: np.ndarray,
    *,
    fit_background: bool,
    constant_variance_weighting: bool = True,
    usable: np.ndarray | None = None,
) -> CandidateSystem:
    """Unregularized normal equations of one candidate (docs/fitting.md#candidate-fit).

    Parameters
    ----------
    template, science, variance : ndarray, shape (H, W)
        Stamps (image planes and ``var_S + var_T``); masks only through ``usable``.
    basis : ndarray, shape (n_basis, k, k)
    fit_background : bool
        Append a constant-background column.
    constant_variance_weighting : bool
        Weight every pixel by ``1 / median(variance)`` (1 if that median is ≤ 0) instead
        of ``1 / variance``.
    usable : ndarray of bool, optional
        Fit-region pixels to use (:func:`usable_fit_pixels`); the others are left out of
        the normal equations (the median of constant weighting is still the stamp's).

    Raises
    ------
    CandidateFitError
        Negative or zero variance in the fit region (inverse-variance weights),
        non-finite stamp pixels, or fewer usable pixels than unknowns.
    """
    columns = design_matrix(template, basis)
    fit_region = _fit_region(science.shape, basis.shape[-1])
    s = np.asarray(science, dtype=np.float64)[fit_region].ravel()
    v = np.asarray(variance, dtype=np.float64)
    if constant_variance_weighting:
        median = float(np.median(v))
        v_fit = np.full(s.shape, median if median > 0 else 1.0)
    else:
        v_fit = v[fit_region].ravel()
    if usable is not None:
        n_unknowns = columns.shape[1] + (1 if fit_background else 0)
        keep = np.asarray(usable, dtype=bool)
        if int(keep.sum()) < n_unknowns:
            msg = (f"{int(keep.sum())} usable pixels in the fit region (masked planes "
                   f"excluded) for {n_unknowns} unknowns")
            raise CandidateFitError(msg)
        columns, s, v_fit = columns[keep], s[keep], v_fit[keep]
    if not constant_variance_weighting:
        if np.nanmin(v_fit) < 0:
            msg = "variance less than 0 in the candidate's fit region"
            raise CandidateFitError(msg)
        if np.nanmin(v_fit) == 0:
            msg = "variance equals 0 in the candidate's fit region; cannot inverse-variance weight"
            raise CandidateFitError(msg)
    if not (np.all(np.isfinite(columns)) and np.all(np.isfinite(s)) and np.all(np.isfinite(v_fit))):
        msg = "non-finite pixels in the candidate stamps"
        raise CandidateFitError(msg)
    if fit_background:
        columns = np.hstack([columns, np.ones((columns.shape[0], 1))])
    weights = 1.0 / v_fit
    matrix = columns.T @ (columns * weights[:, None])
    vector = columns.T @ (s * weights)
    return CandidateSystem(matrix, vector, float(np.sum(s * s * weights)), int(s.size))


def fit_candidate(
    template: np.ndarray,
    science: np.ndarray,
    variance: np.ndarray,
    basis: np.ndarray,
    *,
    fit_background: bool,
    constant_variance_weighting: bool = True,
    regularization: np.ndarray | None = None,
    regularization_lambda: float | LambdaRule = 0.0,
    condition_number_type: str = "EIGENVALUE",
    usable: np.ndarray | None = None,
) -> CandidateSolution:
    """Weighted least-squares kernel for one candidate (docs/fitting.md#candidate-fit).

    Parameters
    ----------
    template, science : ndarray, shape (H, W)
        Image planes of the two stamps (masks only through ``usable``).
    variance : ndarray, shape (H, W)
        ``var_S + var_T`` (or the variance of a previous difference, for
        ``iterateSingleKernel``). With ``constant_variance_weighting`` it is replaced by
        its median (1.0 if that median is ≤ 0).
    basis : ndarray, shape (n_basis, k, k)
    fit_background : bool
        Add a constant-background column.
    regularization : ndarray, optional
        ``H`` (``n_basis(+1)`` square); ``(M + λH) a = β`` is solved with
        ``λ = regularization_lambda``, a number or a
        :class:`~psfmatch.regularization.LambdaRule` evaluated on this candidate's
        system (docs/basis.md#choosing-lambda). ``M`` and ``β`` are returned without ``λH``.
    usable : ndarray of bool, optional
        Fit-region pixels to use (:func:`usable_fit_pixels`), passed to
        :func:`candidate_system`.

    Raises
    ------
    CandidateFitError
        Negative or zero variance in the fit region, non-finite stamp pixels, too few
        usable pixels, or a NaN solution.
    """
    system = candidate_system(template, science, variance, basis,
                              fit_background=fit_background,
                              constant_variance_weighting=constant_variance_weighting,
                              usable=usable)
    matrix, vector = system.matrix, system.vector
    eigenvalues = np.linalg.eigvalsh(matrix)
    cond = condition_number(matrix, condition_number_type, eigenvalues=eigenvalues)
    lam, at_edge = 0.0, False
    if regularization is not None:
        if isinstance(regularization_lambda, LambdaRule):
            choice = regularization_lambda.choose(
                matrix, vector, regularization,
                data_norm=system.data_norm, n_data=system.n_data,
            )
            lam, at_edge = choice.value, choice.at_grid_edge
        else:
            lam = float(regularization_lambda)
    if regularization is None:
        solution = solve_normal_equations(matrix, vector, eigenvalues=eigenvalues)
    else:
        solution = solve_normal_equations(matrix + lam * regularization, vector)
    if not np.all(np.isfinite(solution)):
        msg = f"unable to determine kernel solution (nan); condition number {cond:.3g}"
        raise CandidateFitError(msg)
    n_basis = basis.shape[0]
    coefficients = solution[:n_basis]
    kernel = np.tensordot(coefficients, basis, axes=1)
    return CandidateSolution(
        coefficients=coefficients,
        background=float(solution[n_basis]) if fit_background else 0.0,
        kernel=kernel,
        kernel_sum=float(kernel.sum()),
        condition_number=cond,
        normal_matrix=matrix,
        normal_vector=vector,
        regularization_lambda=lam,
        lambda_at_grid_edge=at_edge,
    )


def difference_stamp(
    template: tuple[np.ndarray, np.ndarray, np.ndarray],
    science: tuple[np.ndarray, np.ndarray, np.ndarray],
    kernel: np.ndarray,
    background: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``D = S − (K ⋆ T + bg)`` on the valid region (docs/fitting.md#difference-stamp).

    ``template`` and ``science`` are ``(image, variance, mask)`` stamps of one shape.
    Returns ``(D, var_S + K² ⋆ var_T, mask_S | OR of mask_T over the kernel footprint)``
    cropped to the valid region (the stamp shrunk by the kernel half-width), which is
    where ip_diffim's statistics end up being computed (its border is ``NO_DATA``).
    """
    t_img, t_var, t_mask = template
    s_img, s_var, s_mask = science
    k = kernel.shape[0]
    region = _fit_region(s_img.shape, k)
    windows = sliding_window_view(np.asarray(t_img, dtype=np.float64), (k, k))
    model = np.einsum("yxij,ij->yx", windows, kernel) + background
    var_windows = sliding_window_view(np.asarray(t_var, dtype=np.float64), (k, k))
    variance = np.asarray(s_var, dtype=np.float64)[region] + np.einsum(
        "yxij,ij->yx", var_windows, kernel * kernel
    )
    support = kernel != 0
    mask_windows = sliding_window_view(np.asarray(t_mask), (k, k))
    grown = np.bitwise_or.reduce(np.where(support, mask_windows, 0), axis=(2, 3))
    mask = np.asarray(s_mask)[region] | grown
    return np.asarray(s_img, dtype=np.float64)[region] - model, variance, mask


def candidate_residuals(
    template: tuple[np.ndarray, np.ndarray, np.ndarray],
    science: tuple[np.ndarray, np.ndarray, np.ndarray],
    kernel: np.ndarray,
    background: float,
    *,
    bad_bits: int,
    core_radius: int | None,
) -> ResidualStats:
    """Residual statistics of ``D/σ`` for a candidate and a fixed kernel.

    See docs/fitting.md#residual-statistics.
    """
    diff, var, mask = difference_stamp(template, science, kernel, background)
    return residual_stats(diff, var, mask, bad_bits=bad_bits, core_radius=core_radius)
