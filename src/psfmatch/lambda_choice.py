"""One regularization weight λ for all delta-function candidates, chosen from the data.

A delta-function (DF) kernel of side ``w`` has ``N = w²`` free pixels; each candidate
``c`` contributes the normal equations of its stamps, :math:`M_c = C_c^T W_c C_c`,
:math:`\\beta_c = C_c^T W_c s_c`, and the regularized solution is
:math:`a_c(\\lambda) = (M_c + \\lambda H)^{-1}\\beta_c` (``H`` from
:func:`psfmatch.regularization.regularization_matrix`).

Every candidate sees the *same* kernel (up to its slow spatial variation), so a prior on
the kernel's roughness is the same for all of them, and so is the λ that expresses it: in
the Bayesian reading :math:`a \\sim N(0, (\\lambda H)^{-1})`, λ is the inverse prior
variance of the kernel's curvature, a property of the kernel, not of a star's flux. One
common λ also keeps the PCA of the single kernels fair: with one λ per candidate the
least-regularized (noisiest) kernels dominate the eigen-kernels.

λ is chosen by minimising a criterion summed over candidates (each candidate's data are
independent, so the joint criterion is the sum of the per-candidate ones):

* ``"upre"``: unbiased predictive risk,
  :math:`U(\\lambda) = \\sum_c \\big[\\|s_c - C_c a_c\\|^2_{W_c} + 2\\,\\mathrm{tr}A_c - n_c\\big]`,
  :math:`A_c = (M_c + \\lambda H)^{-1} M_c`;
* ``"gcv"``: generalised cross-validation over the pooled data,
  :math:`G(\\lambda) = n\\,\\mathrm{RSS}/(n - \\sum_c \\mathrm{tr}A_c)^2`, :math:`n = \\sum n_c`;
* ``"evidence"``: minus the log marginal likelihood of the data under the Gaussian
  prior (type-II maximum likelihood),
  :math:`E(\\lambda) = \\sum_c \\big[\\|s_c\\|^2_{W_c} - \\beta_c^T (M_c + \\lambda H)^{-1}\\beta_c
  + \\log\\det(M_c + \\lambda H) - \\log\\det(\\lambda H)\\big] / 2`.

Units: λ carries the units of ``M`` (template flux² / variance), so an absolute λ, or an
absolute scan range, suits one data set only. The scan here is *relative*:
:math:`\\lambda = 10^{l}\\,\\lambda_{\\rm ref}` with
:math:`\\lambda_{\\rm ref} = \\mathrm{median}_c\\,\\mathrm{tr}(M_c)/\\mathrm{tr}(H)`, so
multiplying both images by any factor leaves ``l`` and the chosen kernels unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psfmatch.errors import ConfigError
from psfmatch.fit import CandidateFitError, CandidateSystem, candidate_system
from psfmatch.regularization import LambdaChoice, LambdaRule, risk_curve

__all__ = [
    "JointLambdaChoice",
    "RelativeRiskRule",
    "candidate_systems",
    "choose_common_lambda",
    "joint_criterion",
    "reference_lambda",
]

ESTIMATORS = ("upre", "gcv", "evidence")


def reference_lambda(systems: Sequence[CandidateSystem], regularization: np.ndarray) -> float:
    """:math:`\\lambda_{\\rm ref} = \\mathrm{median}_c\\,\\mathrm{tr}(M_c) / \\mathrm{tr}(H)`.

    The scale of the data term: ``λ = λ_ref`` weighs the penalty like the data of a
    median candidate. Scales as (flux units)² / variance units, i.e. not at all when both
    images are multiplied by one factor and the variance by its square.
    """
    trace_h = float(np.trace(regularization))
    if not trace_h > 0:
        msg = "the regularization matrix has a zero trace; no reference lambda"
        raise ConfigError(msg)
    traces = [float(np.trace(s.matrix)) for s in systems]
    if not traces:
        msg = "no candidate system to scale lambda by"
        raise ConfigError(msg)
    return float(np.median(traces)) / trace_h


@dataclass(frozen=True)
class _Spectrum:
    """Generalised eigen-decomposition of one candidate: ``UᵀMU = I``, ``UᵀHU = Λ``."""

    eigenvalues: np.ndarray  # Λ_j ≥ 0
    z2: np.ndarray  # (Uᵀβ)_j²
    data_norm: float
    n_data: int
    logdet_m: float  # log det(M + ridge) (for the evidence; NaN otherwise)
    logdet_h: float  # log det of H on its range (for the evidence; NaN otherwise)
    rank_h: int


def _range_logdet(regularization: np.ndarray) -> tuple[float, int]:
    """``log det`` of ``H`` on its range and the rank of ``H``."""
    h_values = np.linalg.eigvalsh(np.asarray(regularization, dtype=np.float64))
    positive = h_values > 1e-12 * max(float(h_values.max()), 1e-300)
    return float(np.sum(np.log(h_values[positive]))), int(positive.sum())


def _spectrum(system: CandidateSystem, regularization: np.ndarray,
              h_logdet: tuple[float, int] | None) -> _Spectrum:
    """The decomposition; the log-determinants only for the evidence (``h_logdet`` given)."""
    import scipy.linalg

    m = np.asarray(system.matrix, dtype=np.float64)
    h = np.asarray(regularization, dtype=np.float64)
    n = m.shape[0]
    ridge = 1e-12 * float(np.trace(m)) / n
    m_r = m + ridge * np.eye(n)
    eigenvalues, u = scipy.linalg.eigh(h, m_r)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    z2 = (u.T @ np.asarray(system.vector, dtype=np.float64)) ** 2
    if h_logdet is None:  # upre and gcv need neither log-determinant
        return _Spectrum(eigenvalues, z2, float(system.data_norm), int(system.n_data),
                         math.nan, math.nan, 0)
    sign, logdet_m = np.linalg.slogdet(m_r)
    return _Spectrum(eigenvalues, z2, float(system.data_norm), int(system.n_data),
                     float(logdet_m) if sign > 0 else -math.inf, *h_logdet)


def joint_criterion(
    spectra: Sequence[_Spectrum], lambdas: np.ndarray, *, estimator: str
) -> tuple[np.ndarray, np.ndarray]:
    """The joint criterion and the total effective number of parameters for every λ.

    Per candidate, with ``s_j = 1/(1 + λΛ_j)``: ``RSS = sᵀWs − Σ z_j²(2 s_j − s_j²)``,
    ``tr A = Σ s_j``; for the evidence ``βᵀ(M + λH)⁻¹β = Σ z_j² s_j`` and
    ``log det(M + λH) = log det M + Σ log(1 + λΛ_j)``.

    Returns
    -------
    criterion : ndarray
        ``U``, ``G`` or ``E`` (see the module docstring) for every λ.
    trace : ndarray
        :math:`\\sum_c \\mathrm{tr}A_c(\\lambda)`.
    """
    if estimator not in ESTIMATORS:
        msg = f"joint lambda estimator must be one of {ESTIMATORS}, got {estimator!r}"
        raise ConfigError(msg)
    lambdas = np.asarray(lambdas, dtype=np.float64)
    rss = np.zeros(lambdas.size)
    trace = np.zeros(lambdas.size)
    evidence = np.zeros(lambdas.size)
    n_total = 0
    for sp in spectra:
        lam_eig = lambdas[:, None] * sp.eigenvalues[None, :]
        shrink = 1.0 / (1.0 + lam_eig)
        a_beta = shrink @ sp.z2
        rss += sp.data_norm - 2.0 * a_beta + (shrink**2) @ sp.z2
        trace += shrink.sum(axis=1)
        n_total += sp.n_data
        if estimator == "evidence":
            # log det(λH) over H's range: rank·log λ + log det H (the background, in
            # H's null space, has a flat prior and drops out of the comparison).
            evidence += 0.5 * (sp.data_norm - a_beta + sp.logdet_m
                               + np.log1p(lam_eig).sum(axis=1)
                               - sp.rank_h * np.log(lambdas) - sp.logdet_h)
    if estimator == "upre":
        return rss + 2.0 * trace - n_total, trace
    if estimator == "gcv":
        return n_total * rss / (n_total - trace) ** 2, trace
    return evidence, trace


@dataclass(frozen=True)
class JointLambdaChoice:
    """Outcome of :func:`choose_common_lambda`.

    Attributes
    ----------
    value : float
        The common λ (units of ``M``).
    relative : float
        ``value / reference`` (unit-free).
    reference : float
        :math:`\\lambda_{\\rm ref}` (:func:`reference_lambda`).
    estimator : str
    effective_parameters : float
        Mean over candidates of ``tr A_c`` at the chosen λ.
    at_scan_edge : bool
        The minimum lies at an end of the scan (widen ``log_span``).
    log_relative : ndarray
        The scanned ``log10(λ/λ_ref)``.
    criterion : ndarray
        The criterion on the scan.
    n_candidates : int
    """

    value: float
    relative: float
    reference: float
    estimator: str
    effective_parameters: float
    at_scan_edge: bool
    log_relative: np.ndarray
    criterion: np.ndarray
    n_candidates: int

    def to_dict(self) -> dict:
        """JSON-able summary (without the scan)."""
        return {"value": self.value, "relative": self.relative, "reference": self.reference,
                "estimator": self.estimator, "effective_parameters": self.effective_parameters,
                "at_scan_edge": self.at_scan_edge, "n_candidates": self.n_candidates}


def choose_common_lambda(
    systems: Sequence[CandidateSystem],
    regularization: np.ndarray,
    *,
    estimator: str = "upre",
    log_span: tuple[float, float] = (-8.0, 3.0),
    step: float = 0.05,
) -> JointLambdaChoice:
    """One λ for every candidate, minimising the joint criterion (module docstring).

    The scan is :math:`\\lambda = \\lambda_{\\rm ref}\\,10^{l}`, ``l`` from
    ``log_span[0]`` to ``log_span[1]`` in ``step`` dex, then refined by a parabola
    through the minimum and its two neighbours (in ``l``). Cost: one generalised
    eigen-decomposition per candidate (``m³``), then ``O(m)`` per candidate and λ.

    Parameters
    ----------
    systems : sequence of CandidateSystem
        The candidates sharing λ (e.g. every selected candidate).
    regularization : ndarray, shape (m, m)
        ``H``.
    estimator : {"upre", "gcv", "evidence"}
    log_span : (float, float)
        Scan limits in dex relative to :math:`\\lambda_{\\rm ref}`.
    step : float
        Scan step in dex.

    Raises
    ------
    ConfigError
        No candidate, a bad estimator, or an empty scan.
    """
    if not systems:
        msg = "choose_common_lambda needs at least one candidate system"
        raise ConfigError(msg)
    lo, hi = (float(v) for v in log_span)
    if not (step > 0 and hi > lo):
        msg = f"lambda scan needs step > 0 and log_span[1] > log_span[0], got {log_span}, {step}"
        raise ConfigError(msg)
    reference = reference_lambda(systems, regularization)
    h_logdet = _range_logdet(regularization) if estimator == "evidence" else None
    spectra = [_spectrum(s, regularization, h_logdet) for s in systems]
    grid = lo + step * np.arange(int(math.floor((hi - lo) / step + 1e-9)) + 1)
    values, trace = joint_criterion(spectra, reference * 10.0**grid, estimator=estimator)
    best = int(np.argmin(values))
    at_edge = best in (0, grid.size - 1)
    l_best = float(grid[best])
    if not at_edge:
        y0, y1, y2 = values[best - 1 : best + 2]
        denominator = y0 - 2.0 * y1 + y2
        if denominator > 0:
            l_best += 0.5 * step * (y0 - y2) / denominator
    value = reference * 10.0**l_best
    _, t_best = joint_criterion(spectra, np.array([value]), estimator=estimator)
    return JointLambdaChoice(
        value=float(value), relative=float(10.0**l_best), reference=reference,
        estimator=estimator, effective_parameters=float(t_best[0]) / len(systems),
        at_scan_edge=at_edge, log_relative=grid, criterion=values, n_candidates=len(systems),
    )


def candidate_systems(
    template: tuple[np.ndarray, np.ndarray, np.ndarray],
    science: tuple[np.ndarray, np.ndarray, np.ndarray],
    basis: np.ndarray,
    *,
    fit_background: bool,
    constant_variance_weighting: bool = True,
    rows: np.ndarray | None = None,
) -> tuple[list[CandidateSystem], np.ndarray]:
    """:func:`candidate_system` for every stamp pair of two ``(image, variance, mask)`` stacks.

    The variance of a candidate is ``var_S + var_T`` (as for the single-kernel fits).
    ``rows`` (bool or index) restricts the candidates. Candidates whose system cannot
    be built (non-finite pixels, bad variance) are skipped.

    Returns
    -------
    systems : list of CandidateSystem
    used : ndarray of int
        Stack index of each returned system.
    """
    n = template[0].shape[0]
    index = np.arange(n) if rows is None else np.arange(n)[rows]
    systems, used = [], []
    for i in index:
        variance = science[1][i].astype(np.float64) + template[1][i]
        try:
            systems.append(candidate_system(
                template[0][i], science[0][i], variance, basis, fit_background=fit_background,
                constant_variance_weighting=constant_variance_weighting))
        except CandidateFitError:
            continue
        used.append(int(i))
    return systems, np.asarray(used, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class RelativeRiskRule(LambdaRule):
    """λ per candidate by the unbiased predictive risk on a scan relative to its own scale.

    The scan is :math:`\\lambda = 10^{l}\\,\\mathrm{tr}(M_c)/\\mathrm{tr}(H)`, ``l`` from
    ``minimum`` to ``maximum`` in ``step`` dex (``lambda_type`` is
    ``minimizeUnbiasedRisk``, ``step_type`` ``log``), so multiplying both images by one
    factor (and the variances by its square) leaves the chosen kernel unchanged, unlike
    ip_diffim's absolute ``lambdaMin``/``lambdaMax``. Used for the single-candidate fits
    of the pooled delta-function fit (``kernel_fit.df_spatial_fit: pooled``), whose only
    role is the clipping; with inverse-variance weights the estimate is calibrated.
    """

    lambda_type: str = "minimizeUnbiasedRisk"
    minimum: float = -8.0
    maximum: float = 3.0
    step: float = 0.05

    def choose(
        self, matrix: np.ndarray, vector: np.ndarray, regularization: np.ndarray, *,
        data_norm: float, n_data: int,
    ) -> LambdaChoice:
        """The grid point minimising the UPRE of :func:`psfmatch.regularization.risk_curve`."""
        trace_h = float(np.trace(regularization))
        if not trace_h > 0:
            msg = "the regularization matrix has a zero trace; no relative lambda scan"
            raise ConfigError(msg)
        grid = self.grid() * float(np.trace(matrix)) / trace_h
        risks, _ = risk_curve(matrix, vector, regularization, grid, data_norm=data_norm,
                              n_data=n_data, estimator="upre")
        best = int(np.argmin(risks))
        return LambdaChoice(float(grid[best]), "relativeUnbiasedRisk",
                            at_grid_edge=len(grid) > 1 and best in (0, len(grid) - 1))
