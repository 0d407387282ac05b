"""The bias a noisy template puts into the normal equations, and its removal.

The template ``T = T₀ + n_T`` enters the design matrix (column ``i`` is ``T ⋆ B_i``), so
its noise is in both factors of :math:`M = C^T W C`:

.. math::

    E[M] = M_0 + N, \\qquad
    N_{ij} = \\sum_q B_i(q) B_j(q)\\, V(q), \\qquad
    V(q) = \\sum_p w_p \\operatorname{var}_T(p + q),

``p`` over the fitted pixels and ``q`` over the kernel footprint, for uncorrelated
template noise. The vector :math:`\\beta = C^T W s` carries no such term (the science
noise is independent of the template's). The least-squares kernel therefore solves
:math:`(M_0 + N) a = M_0 a_{true}` on average: it is shrunk like a ridge regression
("regression dilution", errors in variables), by about ``N/M₀`` along each direction,
the ratio of template-noise power to template-signal power in that direction. For a
delta-function basis ``N`` is diagonal, :math:`N_{ii} = V(q_i)`; with 441 unknowns and
faint stars it is percent-level on the kernel sum, for Alard–Lupton's 20-odd smooth
bases it is ~10× smaller. Subtracting ``N`` (:math:`M_0 \\approx M - N`) removes the bias
to first order; the corrected matrix may lose positive definiteness for stars fainter
than the template noise, so it is meant for pooled (spatial) systems or regularized
fits, and the single-kernel fits keep ``M``.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import correlate

__all__ = ["template_noise_matrix"]


def template_noise_matrix(
    template_variance: np.ndarray,
    weights: np.ndarray,
    basis: np.ndarray,
    *,
    fit_background: bool,
) -> np.ndarray:
    """``N`` of the module docstring for one candidate.

    Parameters
    ----------
    template_variance : ndarray, shape (H, W)
        Variance plane of the template stamp.
    weights : ndarray, shape (H − k + 1, W − k + 1)
        The fit's weights on the fitted (valid) pixels.
    basis : ndarray, shape (n_basis, k, k)
    fit_background : bool
        Append a zero row and column for the background (a constant column has no
        template noise).

    Returns
    -------
    ndarray, shape (m, m)
        ``m = n_basis (+1)``; symmetric positive semi-definite.
    """
    v = correlate(np.asarray(template_variance, dtype=np.float64),
                  np.asarray(weights, dtype=np.float64), mode="valid")
    flat = basis.reshape(basis.shape[0], -1)
    n = flat @ (flat * v.ravel()[None, :]).T
    if fit_background:
        out = np.zeros((n.shape[0] + 1,) * 2)
        out[:-1, :-1] = n
        return out
    return n
