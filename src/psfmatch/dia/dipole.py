"""Dipoles: pairing positive and negative peaks, and the two-lobe PSF fit.

A dipole is what a source that moved, or a misregistration, leaves in a difference:
a positive and a negative PSF close together. The model on a stamp around the pair is

.. math::

    M = F_+\\, S(r_+) - F_-\\, S(r_-), \\qquad F_\\pm \\ge 0,

fitted to the difference by Levenberg-Marquardt weighted least squares (weights
:math:`1/V`), parameters :math:`(F_+, x_+, y_+, F_-, x_-, y_-)`, starting from the two
peaks and their single-PSF fluxes. For a small lobe separation :math:`\\delta \\ll`
FWHM the lobe fluxes and :math:`\\delta` are degenerate (only :math:`F\\delta` is
constrained) but the orientation is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from psfmatch.dia.measure import PixelData
from psfmatch.dia.psf import shifted_psf
from psfmatch.psf import embed_centred

__all__ = ["DipoleFit", "fit_dipole", "pair_peaks"]

_MAX_ITER = 100


@dataclass(frozen=True)
class DipoleFit:
    """Result of :func:`fit_dipole` (array coordinates; fluxes as positive numbers)."""

    pos_flux: float
    pos_flux_err: float
    pos_x: float
    pos_y: float
    neg_flux: float
    neg_flux_err: float
    neg_x: float
    neg_y: float
    ok: bool

    @property
    def separation(self) -> float:
        """Distance (px) between the lobes."""
        return math.hypot(self.pos_x - self.neg_x, self.pos_y - self.neg_y)

    @property
    def angle(self) -> float:
        """Direction (deg, counter-clockwise from +x) from the negative to the positive lobe."""
        return math.degrees(math.atan2(self.pos_y - self.neg_y, self.pos_x - self.neg_x))

    @property
    def flux_ratio(self) -> float:
        """Fainter over brighter lobe flux (0 when a lobe vanished)."""
        hi = max(self.pos_flux, self.neg_flux)
        return min(self.pos_flux, self.neg_flux) / hi if hi > 0 else 0.0


def pair_peaks(
    x: np.ndarray, y: np.ndarray, sign: np.ndarray, max_separation: float
) -> list[tuple[int, int]]:
    """Mutually nearest (positive, negative) peak pairs closer than ``max_separation``.

    Greedy by increasing distance; each peak is in at most one pair. Returns index
    pairs ``(i_positive, i_negative)``.
    """
    pos = np.flatnonzero(sign > 0)
    neg = np.flatnonzero(sign < 0)
    if max_separation <= 0 or pos.size == 0 or neg.size == 0:
        return []
    d = np.hypot(x[pos, None] - x[None, neg], y[pos, None] - y[None, neg])
    cand = np.argwhere(d < max_separation)
    order = np.argsort(d[cand[:, 0], cand[:, 1]], kind="stable")
    used_p: set[int] = set()
    used_n: set[int] = set()
    pairs = []
    for i, j in cand[order]:
        if i in used_p or j in used_n:
            continue
        used_p.add(int(i))
        used_n.add(int(j))
        pairs.append((int(pos[i]), int(neg[j])))
    return pairs


def _model(psf_big: np.ndarray, theta: np.ndarray, centre: tuple[int, int]):
    """Model stamp and its Jacobian ``(n_pix, 6)``."""
    cols, rows = centre
    fp, xp, yp, fn, xn, yn = theta
    sp, sp_x, sp_y = shifted_psf(psf_big, xp - cols, yp - rows)
    sn, sn_x, sn_y = shifted_psf(psf_big, xn - cols, yn - rows)
    model = fp * sp - fn * sn
    jac = np.stack([sp.ravel(), fp * sp_x.ravel(), fp * sp_y.ravel(),
                    -sn.ravel(), -fn * sn_x.ravel(), -fn * sn_y.ravel()], axis=1)
    return model, jac


def fit_dipole(
    pix: PixelData,
    psf: np.ndarray,
    pos: tuple[float, float, float],
    neg: tuple[float, float, float],
    *,
    max_separation: float,
) -> DipoleFit:
    """Fit :math:`F_+ S(r_+) - F_- S(r_-)` to the difference around a +/- pair.

    Parameters
    ----------
    pix : PixelData
        The difference's pixels (only read).
    psf : numpy.ndarray
        Unit-sum PSF image.
    pos, neg : (x, y, flux)
        Starting array position and (positive) flux of each lobe.
    max_separation : float
        The stamp covers both lobes plus the PSF; lobes moving farther apart than this
        (px) fail the fit.

    Returns
    -------
    DipoleFit
        ``ok`` False (and the starting values) when the fit fails or a lobe flux is not
        positive. Flux errors from the inverse normal matrix plus the correlated-noise
        excess.
    """
    mx, my = 0.5 * (pos[0] + neg[0]), 0.5 * (pos[1] + neg[1])
    col, row = int(math.floor(mx + 0.5)), int(math.floor(my + 0.5))
    half = max(psf.shape) // 2 + int(math.ceil(0.5 * max_separation)) + 2
    side = 2 * half + 1
    big = embed_centred(psf, side)
    d = pix.stamp("data", row, col, (side, side)).ravel()
    w = pix.stamp("weight", row, col, (side, side)).ravel()
    theta = np.array([max(pos[2], 1e-6), pos[0], pos[1], max(neg[2], 1e-6), neg[0], neg[1]])
    start = DipoleFit(pos[2], math.nan, pos[0], pos[1], neg[2], math.nan, neg[0], neg[1], False)
    if not np.any(w > 0):
        return start

    def chi2(t):
        m, j = _model(big, t, (col, row))
        r = d - m.ravel()
        return float(np.sum(w * r * r)), r, j

    lam = 1.0e-3
    c2, r, jac = chi2(theta)
    converged = False
    for _ in range(_MAX_ITER):
        wj = jac * w[:, None]
        a = jac.T @ wj
        b = wj.T @ r
        diag = np.diag(np.diag(a)) + 1e-12 * np.eye(6)
        try:
            step = np.linalg.solve(a + lam * diag, b)
        except np.linalg.LinAlgError:
            return start
        step[[1, 2, 4, 5]] = np.clip(step[[1, 2, 4, 5]], -1.0, 1.0)
        trial = theta + step
        trial[[0, 3]] = np.maximum(trial[[0, 3]], 1e-6)
        c2_new, r_new, jac_new = chi2(trial)
        if c2_new <= c2:
            # along the F·δ valley of a close pair the model hardly changes: stop on chi²
            small = (np.all(np.abs(step[[1, 2, 4, 5]]) < 1e-3)
                     or c2 - c2_new < 1e-6 * max(c2, 1.0))
            theta, c2, r, jac = trial, c2_new, r_new, jac_new
            lam = max(lam / 10.0, 1e-9)
            if small:
                converged = True
                break
        else:
            lam *= 10.0
            if lam > 1e8:
                converged = True
                break
    fp, xp, yp, fn, xn, yn = theta
    if math.hypot(xp - xn, yp - yn) > max_separation or \
            max(abs(xp - col), abs(yp - row), abs(xn - col), abs(yn - row)) > half - 2:
        return start
    try:
        cov = np.linalg.inv(jac.T @ (jac * w[:, None]))
    except np.linalg.LinAlgError:
        return start
    # sandwich: Cov = A^-1 (J^T W (I + E/w) W J) A^-1 adds the correlated-noise excess
    e = pix.stamp("excess", row, col, (side, side)).ravel()
    cov = cov + cov @ (jac.T @ (jac * e[:, None])) @ cov
    err_p = math.sqrt(max(cov[0, 0], 0.0))
    err_n = math.sqrt(max(cov[3, 3], 0.0))
    ok = converged and fp > 1e-6 and fn > 1e-6 and all(np.isfinite(theta))
    return DipoleFit(float(fp), err_p, float(xp), float(yp), float(fn), err_n, float(xn),
                     float(yn), bool(ok))
