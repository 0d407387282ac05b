"""Spatially varying delta-function kernel fitted to all candidates at once, regularized.

ip_diffim fits a delta-function (DF) kernel per candidate, reduces the candidates'
kernels to a few principal components and fits the spatial model on that basis. With a
few dozen noisy single kernels the eigen-kernels carry noise, and a common
regularization weight either over-smooths the bright candidates (which decide the
residuals) or under-smooths the faint ones (which then dominate the PCA).

Here the spatial model is fitted directly on the DF basis, as pyDIA and SFFT do: every
kernel pixel ``i`` has a spatial polynomial :math:`a_i(x, y) = \\sum_t c_{it} f_t(x, y)`,
the candidates' normal equations are pooled exactly as for any spatial fit,
:math:`M_s = \\sum_c P_c^T M_c P_c`, :math:`b_s = \\sum_c P_c^T \\beta_c`, and the kernel's
roughness is penalised *averaged over the candidates' positions*:

.. math::

    R(c) = \\frac{1}{N}\\sum_c a(x_c, y_c)^T H\\, a(x_c, y_c) = c^T (H \\otimes G)\\, c,
    \\qquad G = \\frac{1}{N}\\sum_c p_c p_c^T,

``p_c`` the spatial terms at candidate ``c``; the background is not penalised. One λ
for the whole system is chosen by :func:`psfmatch.lambda_choice.choose_common_lambda`
on the pooled system (its risk is the predictive risk of the final model over every
candidate pixel, so bright candidates weigh as much as their data do). The covariance
of the estimate, :math:`(M_s + \\lambda H_s)^{-1} M_s (M_s + \\lambda H_s)^{-1}`, is the
kernel's own statistical error (conditional on λ; the regularization bias is not in it).

:func:`fit_pooled_band_limited` replaces the roughness penalty by a band-limited prior
of the kernel's own measured width: the kernel is written as a sum of Gaussians of that
width, one per pixel (:func:`gaussian_blob_basis`), with a ridge on their amplitudes,
so the frequencies the template's PSF hides from the data are damped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psfmatch.fit import CandidateSystem
from psfmatch.lambda_choice import JointLambdaChoice, choose_common_lambda
from psfmatch.spatial import SpatialFit, SpatialFunction

__all__ = ["BAND_LIMITED_SCAN_EXTENSION", "PooledFit", "constant_sum_basis",
           "fit_pooled_band_limited",
           "fit_pooled_regularized", "gaussian_blob_basis",
           "pooled_normal_equations", "pooled_regularization", "shape_projected"]


def _terms(function: SpatialFunction, centres: np.ndarray) -> np.ndarray:
    return function.terms(centres[:, 0], centres[:, 1]).T  # (n_cand, n_terms)


def pooled_normal_equations(
    centres: Sequence[tuple[float, float]],
    matrices: np.ndarray,
    vectors: np.ndarray,
    *,
    n_basis: int,
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
) -> tuple[np.ndarray, np.ndarray]:
    """:math:`M_s`, :math:`b_s` of the spatial DF model (every basis spatially varying).

    Unknowns are ordered basis-major, ``index = i·n_kt + t`` for kernel pixel ``i`` and
    spatial term ``t``, then the ``n_bt`` background terms (the layout of
    :func:`psfmatch.spatial.fit_spatial` without a constant first term). Built block by
    block, :math:`M_s[(i,t),(j,u)] = \\sum_c M_{c,ij}\\, p_{ct} p_{cu}`, in
    ``O(n_cand · n_basis² · n_kt²)``.

    Parameters
    ----------
    centres : sequence of (x, y)
    matrices, vectors : ndarray, shapes (n_cand, m, m), (n_cand, m)
        Candidates' normal equations, ``m = n_basis (+1 background, last)``.
    """
    xy = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    q = np.asarray(matrices, dtype=np.float64)
    w = np.asarray(vectors, dtype=np.float64)
    pk = _terms(kernel_function, xy)
    nkt = pk.shape[1]
    nk = n_basis * nkt
    pb = (_terms(background_function, xy) if background_function is not None
          else np.zeros((len(xy), 0)))
    nbt = pb.shape[1]
    m_s = np.zeros((nk + nbt, nk + nbt))
    b_s = np.zeros(nk + nbt)
    kk = q[:, :n_basis, :n_basis]
    view = m_s[:nk, :nk].reshape(n_basis, nkt, n_basis, nkt)
    for t in range(nkt):
        for u in range(t, nkt):
            block = np.tensordot(pk[:, t] * pk[:, u], kk, axes=1)
            view[:, t, :, u] = block
            view[:, u, :, t] = block.T if u != t else block
    b_s[:nk] = np.einsum("ci,ct->it", w[:, :n_basis], pk).ravel()
    if nbt:
        kb = q[:, :n_basis, n_basis]  # (c, n_basis)
        cross = np.einsum("ci,ct,cu->itu", kb, pk, pb).reshape(nk, nbt)
        m_s[:nk, nk:] = cross
        m_s[nk:, :nk] = cross.T
        m_s[nk:, nk:] = np.einsum("c,ct,cu->tu", q[:, n_basis, n_basis], pb, pb)
        b_s[nk:] = np.einsum("c,ct->t", w[:, n_basis], pb)
    return 0.5 * (m_s + m_s.T), b_s


def pooled_regularization(
    regularization: np.ndarray,
    centres: Sequence[tuple[float, float]],
    *,
    kernel_function: SpatialFunction,
    n_background_terms: int,
) -> np.ndarray:
    """:math:`H \\otimes G` (kernel block) padded with zeros for the background terms.

    ``regularization`` is the per-candidate ``H`` on the ``n_basis`` kernel pixels (its
    background row/column, if any, is dropped).
    """
    xy = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    pk = _terms(kernel_function, xy)
    gram = pk.T @ pk / len(xy)
    n_basis = regularization.shape[0]
    h = np.asarray(regularization, dtype=np.float64)
    k = np.kron(h, gram)
    out = np.zeros((k.shape[0] + n_background_terms,) * 2)
    out[: k.shape[0], : k.shape[0]] = k
    assert out.shape[0] == n_basis * pk.shape[1] + n_background_terms
    return out


def shape_projected(regularization: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The penalty with the direction of ``shape`` removed: ``min_α (a − αg)ᵀH(a − αg)``.

    :math:`H' = H - (Hg)(Hg)^T / (g^T H g)`: any multiple of the pilot kernel ``g`` costs
    nothing, so the penalty shrinks the kernel toward the pilot's *shape* rather than
    toward zero and does not bias its amplitude (the kernel sum).
    """
    h = np.asarray(regularization, dtype=np.float64)
    g = np.asarray(shape, dtype=np.float64).ravel()
    hg = h @ g
    denominator = float(g @ hg)
    if not denominator > 0:
        return h
    out = h - np.outer(hg, hg) / denominator
    return 0.5 * (out + out.T)


def gaussian_blob_basis(kernel_size: int, width: float) -> np.ndarray:
    """``G`` (``N × N``, ``N = kernel_size²``): column ``j`` is a Gaussian of σ ``width`` px
    centred on kernel pixel ``j``, cut at the kernel's edge and scaled to unit sum.

    A kernel written as :math:`a = G u` with the ridge prior :math:`u \\sim N(0, I/\\lambda)`
    has the prior covariance :math:`G G^T / \\lambda`, whose power spectrum falls as
    :math:`\\exp(-\\sigma^2 k^2)` away from the edges: the prior of a kernel that is a
    Gaussian of σ ``width`` (or a sum of such), band-limited exactly as a PSF-matching
    kernel between two Gaussian-like PSFs is. Frequencies the template's PSF suppresses
    (where a delta-function fit has only noise) are then not free, however small λ is,
    unlike under a finite-difference penalty (whose :math:`k^4` growth is slower than the
    data's Gaussian loss of constraint). Unit column sums keep the kernel sum
    :math:`\\sum_i a_i = \\sum_j u_j`, so :func:`constant_sum_basis` applies unchanged.
    """
    w = int(kernel_size)
    if not width > 0:
        return np.eye(w * w)
    offsets = np.arange(w, dtype=np.float64)
    one_d = np.exp(-0.5 * ((offsets[:, None] - offsets[None, :]) / float(width)) ** 2)
    g = np.kron(one_d, one_d)  # separable: row (y, x), column (y', x')
    return g / g.sum(axis=0, keepdims=True)


def _transformed(m_s: np.ndarray, b_s: np.ndarray, transform: np.ndarray, nkt: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``T_sᵀ M_s T_s``, ``T_sᵀ b_s`` for ``T_s = (G ⊗ I_nkt) ⊕ I_background``."""
    n_basis = transform.shape[0]
    nk = n_basis * nkt
    out_m, out_b = m_s.copy(), b_s.copy()
    kk = m_s[:nk, :nk].reshape(n_basis, nkt, n_basis, nkt)
    kk = np.tensordot(transform, kk, axes=([0], [0]))  # (a, t, j, u)
    kk = np.tensordot(kk, transform, axes=([2], [0]))  # (a, t, u, b)
    out_m[:nk, :nk] = kk.transpose(0, 1, 3, 2).reshape(nk, nk)
    cross = np.tensordot(transform, m_s[:nk, nk:].reshape(n_basis, nkt, -1), axes=([0], [0]))
    out_m[:nk, nk:] = cross.reshape(nk, -1)
    out_m[nk:, :nk] = out_m[:nk, nk:].T
    out_b[:nk] = (transform.T @ b_s[:nk].reshape(n_basis, nkt)).ravel()
    return 0.5 * (out_m + out_m.T), out_b


def _untransformed(solution: np.ndarray, covariance: np.ndarray | None, transform: np.ndarray,
                   nkt: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Back to kernel pixels: ``c = T_s u`` and ``T_s C T_sᵀ``."""
    n_basis = transform.shape[0]
    nk = n_basis * nkt
    out = solution.copy()
    out[:nk] = (transform @ solution[:nk].reshape(n_basis, nkt)).ravel()
    if covariance is None:
        return out, None
    t_s = np.eye(solution.size)
    t_s[:nk, :nk] = np.kron(transform, np.eye(nkt))
    return out, t_s @ covariance @ t_s.T


def constant_sum_basis(n_basis: int, n_kernel_terms: int, n_background_terms: int) -> np.ndarray:
    """Orthonormal ``Z`` with ``c = Z y`` ⇔ the kernel sum is the same everywhere.

    The sum at ``(x, y)`` is :math:`\\sum_t f_t(x, y) \\sum_i c_{it}`; it is constant
    when :math:`\\sum_i c_{it} = 0` for every non-constant term ``t ≥ 1`` (term 0 of
    both families is the constant 1). ``Z`` spans the null space of those
    ``n_kernel_terms − 1`` constraints.
    """
    import scipy.linalg

    n = n_basis * n_kernel_terms + n_background_terms
    if n_kernel_terms == 1:
        return np.eye(n)
    constraints = np.zeros((n_kernel_terms - 1, n))
    for t in range(1, n_kernel_terms):
        constraints[t - 1, t : n_basis * n_kernel_terms : n_kernel_terms] = 1.0
    return scipy.linalg.null_space(constraints)


#: Dex added below the λ scan for the band-limited passes (:func:`fit_pooled_band_limited`).
BAND_LIMITED_SCAN_EXTENSION = 6.0


@dataclass(frozen=True)
class PooledFit:
    """Outcome of :func:`fit_pooled_regularized`.

    ``choice`` is the λ scan of the final pass (``None`` when λ was given);
    ``pilot_lambda`` the λ of the first pass when the penalty was shape-projected, and
    ``pilot_choice`` its scan. In the shape-projected pass the upper end of the scan is
    a legitimate optimum (the pilot's shape, scaled, is all the data support); an end
    of the first pass's scan, or the lower end of the second, means the scan is too
    narrow. From :func:`fit_pooled_band_limited`: ``prior_width`` (px; ``None`` when
    the roughness prior was kept), ``prior_note`` (why it was kept) and
    ``width_choice`` (the λ scan of the width-measuring pass).
    """

    fit: SpatialFit
    choice: JointLambdaChoice | None
    regularization_lambda: float
    pilot_lambda: float | None = None
    pilot_choice: JointLambdaChoice | None = None
    prior_width: float | None = None
    prior_note: str = ""
    width_choice: JointLambdaChoice | None = None


def fit_pooled_band_limited(
    centres: Sequence[tuple[float, float]],
    matrices: np.ndarray,
    vectors: np.ndarray,
    regularization: np.ndarray,
    *,
    n_basis: int,
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
    log_span: tuple[float, float] = (-8.0, 3.0),
    step: float = 0.05,
    compute_covariance: bool = False,
) -> PooledFit:
    """The pooled fit with a band-limited prior whose width is the kernel's own.

    1. A first pass with the finite-difference penalty ``regularization`` (λ by the
       pooled UPRE, no shape projection; its scan is ``width_choice``) gives a pilot
       kernel, evaluated at the centre of the spatial functions' box; its adaptive
       (Gaussian-weighted) second moments give its width σ.
    2. The kernel is refitted as :math:`a = G u` with :func:`gaussian_blob_basis` of
       that σ and a ridge on ``u`` projected off the pilot's shape in ``u``
       (:func:`fit_pooled_regularized` with ``shape_prior``): the prior's spectrum
       :math:`\\exp(-\\sigma^2 k^2)` is that of a Gaussian kernel of the measured width,
       so the frequencies the data cannot constrain are damped as a real kernel's are.

    The Gaussian passes scan λ from ``BAND_LIMITED_SCAN_EXTENSION`` dex below
    ``log_span[0]``: a ridge on the Gaussians' amplitudes needs far less weight, relative
    to :math:`\\mathrm{tr}\\,M / \\mathrm{tr}\\,H`, than a roughness penalty (the
    basis itself already damps what the data cannot see): the unprojected ridge pass's
    optima are 1e-10 … 1e-6 relative (jump pair 8e-10), the projected pass's 1e-4 … 10.
    Below ~1e-12 the scan means nothing (the eigen-decomposition adds a ridge of 1e-12
    of the data's scale), hence 6 dex, not more.

    When the pilot's width cannot be measured (adaptive moments fail, e.g. a kernel
    that is not a single peak), the result is the finite-difference fit of
    :func:`fit_pooled_regularized` with its shape prior, and ``prior_note`` says why.
    """
    from psfmatch.basis import SIGMA_TO_FWHM
    from psfmatch.errors import PsfModelError
    from psfmatch.moments import adaptive_fwhm

    common = {"n_basis": n_basis, "kernel_function": kernel_function,
              "background_function": background_function, "log_span": log_span,
              "step": step}
    side = int(round(math.sqrt(n_basis)))
    pilot = fit_pooled_regularized(centres, matrices, vectors, regularization,
                                   shape_prior=False, **common)
    x0, y0, x1, y1 = kernel_function.bbox
    centre = (pilot.fit.kernel_coefficients
              @ kernel_function.terms(0.5 * (x0 + x1), 0.5 * (y0 + y1))).reshape(side, side)
    try:
        width = adaptive_fwhm(centre) / SIGMA_TO_FWHM
    except PsfModelError as err:
        note = f"band-limited prior not used: the pilot kernel's width is not measurable ({err})"
    else:
        note = "" if math.isfinite(width) and width > 0 else (
            f"band-limited prior not used: pilot kernel width {width}")
    if note:
        fallback = fit_pooled_regularized(centres, matrices, vectors, regularization,
                                          compute_covariance=compute_covariance,
                                          first_pass=pilot, **common)
        return dataclasses.replace(fallback, prior_note=note, width_choice=pilot.choice)
    common["log_span"] = (float(log_span[0]) - BAND_LIMITED_SCAN_EXTENSION, float(log_span[1]))
    result = fit_pooled_regularized(centres, matrices, vectors, np.eye(n_basis),
                                    compute_covariance=compute_covariance,
                                    blob_basis=gaussian_blob_basis(side, width), **common)
    return dataclasses.replace(result, prior_width=float(width), width_choice=pilot.choice)


def fit_pooled_regularized(
    centres: Sequence[tuple[float, float]],
    matrices: np.ndarray,
    vectors: np.ndarray,
    regularization: np.ndarray,
    *,
    n_basis: int,
    kernel_function: SpatialFunction,
    background_function: SpatialFunction | None,
    regularization_lambda: float | None = None,
    estimator: str = "upre",
    log_span: tuple[float, float] = (-8.0, 3.0),
    step: float = 0.05,
    data_norm: float = 0.0,
    n_data: int = 0,
    constant_sum: bool = True,
    shape_prior: bool = True,
    template_noise: np.ndarray | None = None,
    compute_covariance: bool = False,
    blob_basis: np.ndarray | None = None,
    first_pass: PooledFit | None = None,
) -> PooledFit:
    """Regularized spatial DF kernel from pooled candidates (module docstring).

    ``regularization_lambda`` fixes λ; ``None`` chooses it by ``estimator`` over the
    relative scan ``log_span`` (dex about ``tr M_s / tr H_s``). ``data_norm`` and
    ``n_data`` (``Σ sᵀWs``, ``Σ n``) are needed for ``"gcv"`` only: the UPRE and
    evidence minimisers do not depend on them.

    ``constant_sum``: the kernel sum is the same everywhere (as with an AL or PCA basis,
    whose first term is constant); the fit is solved in the null space of the
    constraints (:func:`constant_sum_basis`). ``shape_prior``: a first pass with ``H``
    gives a pilot kernel ``g`` (the kernel at the centre of the spatial functions); the
    second pass penalises :func:`shape_projected` ``H`` instead, so the amplitude is
    left to the data.

    ``template_noise``: each candidate's template-noise matrix ``N_c``
    (:func:`psfmatch.noise_bias.template_noise_matrix`); λ is still chosen on the
    observed system, and the solution uses :math:`M_s - N_s + \\lambda H_s`, which
    removes the errors-in-variables shrinkage of the kernel to first order.

    ``blob_basis``: ``G`` of :func:`gaussian_blob_basis`; the kernel is fitted as
    :math:`a = G u` (every spatial term alike) and ``regularization`` then applies to
    ``u`` (the identity: a band-limited prior); the result is mapped back to kernel
    pixels.

    ``first_pass``: this function's result on the same system with ``shape_prior=False``
    and no ``blob_basis``; with ``shape_prior`` its kernel is the pilot, so the first
    pass is not solved again.

    Returns
    -------
    PooledFit
        ``fit`` in the layout of :func:`psfmatch.spatial.fit_spatial` with
        ``constant_first_term=False``; its covariance (when asked) is the sandwich
        :math:`(M_s + \\lambda H_s)^{-1} M_s (M_s + \\lambda H_s)^{-1}` mapped back
        through ``Z``.
    """
    from psfmatch.fit import condition_number

    nbt = background_function.n_terms if background_function is not None else 0
    nkt = kernel_function.n_terms
    m_s, b_s = pooled_normal_equations(centres, matrices, vectors, n_basis=n_basis,
                                       kernel_function=kernel_function,
                                       background_function=background_function)
    if blob_basis is not None:
        m_s, b_s = _transformed(m_s, b_s, blob_basis, nkt)
    z = constant_sum_basis(n_basis, nkt, nbt) if constant_sum else np.eye(m_s.shape[0])
    m_y, b_y = z.T @ m_s @ z, z.T @ b_s
    m_y = 0.5 * (m_y + m_y.T)
    n_y = np.zeros_like(m_y)
    if template_noise is not None:
        n_s, _ = pooled_normal_equations(centres, template_noise,
                                         np.zeros(np.shape(template_noise)[:2]),
                                         n_basis=n_basis, kernel_function=kernel_function,
                                         background_function=background_function)
        if blob_basis is not None:
            n_s, _ = _transformed(n_s, np.zeros(n_s.shape[0]), blob_basis, nkt)
        n_y = z.T @ n_s @ z
    h_kernel = np.asarray(regularization, dtype=np.float64)[:n_basis, :n_basis]

    def solve(h_pixels: np.ndarray):
        h_s = pooled_regularization(h_pixels, centres, kernel_function=kernel_function,
                                    n_background_terms=nbt)
        h_y = z.T @ h_s @ z
        h_y = 0.5 * (h_y + h_y.T)
        choice = None
        if regularization_lambda is None:
            pooled = CandidateSystem(m_y, b_y, float(data_norm), int(n_data))
            choice = choose_common_lambda([pooled], h_y, estimator=estimator,
                                          log_span=log_span, step=step)
            lam = choice.value
        else:
            lam = float(regularization_lambda)
        a = m_y - n_y + lam * h_y
        return np.linalg.solve(a, b_y), a, choice, lam

    pilot_lambda = pilot_choice = None
    if shape_prior and first_pass is not None:  # the first pass is already done
        pilot = first_pass.fit.kernel_coefficients[:, 0]
        pilot_lambda, pilot_choice = first_pass.regularization_lambda, first_pass.choice
    else:
        y, a, choice, lam = solve(h_kernel)
    if shape_prior:
        if first_pass is None:
            pilot = (z @ y)[: n_basis * nkt].reshape(n_basis, nkt)[:, 0]
            pilot_lambda, pilot_choice = lam, choice
        y, a, choice, lam = solve(shape_projected(h_kernel, pilot))
    solution = z @ y
    covariance = None
    if compute_covariance:
        inverse = np.linalg.inv(a)
        cov_y = inverse @ (m_y - n_y) @ inverse
        covariance = z @ (0.5 * (cov_y + cov_y.T)) @ z.T
    if blob_basis is not None:
        solution, covariance = _untransformed(solution, covariance, blob_basis, nkt)
    fit = SpatialFit(
        kernel_coefficients=solution[: n_basis * nkt].reshape(n_basis, nkt),
        background_coefficients=solution[n_basis * nkt :].copy(),
        condition_number=condition_number(a, "EIGENVALUE"),
        n_unknowns=int(y.size),
        covariance=covariance,
    )
    return PooledFit(fit=fit, choice=choice, regularization_lambda=lam,
                     pilot_lambda=pilot_lambda, pilot_choice=pilot_choice)
