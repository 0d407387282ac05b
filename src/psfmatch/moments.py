r"""Second moments of a PSF or a star: unweighted and adaptive (Gaussian-weighted).

One adaptive estimator serves every path: :func:`adaptive_moments` (vectorised over
stamps), used for stars without a PSF model (:func:`psfmatch.detect.measure_fwhm`, trace
radius) and for PSF model images (:func:`adaptive_fwhm`, determinant radius, as
``ModelPsfMatchTask`` measures widths).
"""

from __future__ import annotations

import math

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import PsfModelError

__all__ = ["adaptive_fwhm", "adaptive_moments", "moments_fwhm"]


def moments_fwhm(image: np.ndarray, *, determinant: bool = False) -> float:
    """Gaussian-equivalent FWHM (px) from the unweighted second moments of ``image``.

    With moments :math:`I_{xx}, I_{yy}, I_{xy}` about the centroid, the trace radius
    :math:`\\sqrt{(I_{xx}+I_{yy})/2}` (default, ip_diffim ``getPsfFwhm``) or the
    determinant radius :math:`(I_{xx} I_{yy} - I_{xy}^2)^{1/4}` (``ModelPsfMatchTask``)
    times :math:`2\\sqrt{2\\ln 2}`.
    """
    w = np.asarray(image, dtype=np.float64)
    w = w / w.sum()
    ny, nx = w.shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    xc, yc = float(np.sum(w * x)), float(np.sum(w * y))
    ixx = float(np.sum(w * (x - xc) ** 2))
    iyy = float(np.sum(w * (y - yc) ** 2))
    ixy = float(np.sum(w * (x - xc) * (y - yc)))
    if determinant:
        radius = max(ixx * iyy - ixy * ixy, 0.0) ** 0.25
    else:
        radius = math.sqrt(max((ixx + iyy) / 2.0, 0.0))
    return float(SIGMA_TO_FWHM * radius)


def adaptive_moments(
    stamps: np.ndarray,
    *,
    initial_sigma: float = 1.5,
    max_iter: int = 100,
    tol: float = 1.0e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive (Gaussian-weighted, iterated) second moments of background-free stamps.

    For each stamp the elliptical Gaussian weight is iterated SdssShape-style until it
    matches the object: given weight covariance ``W`` and weighted moments ``M`` the
    object covariance is ``C = (M^-1 - W^-1)^-1`` (exact for a Gaussian, whose weighted
    moments are ``(C^-1 + W^-1)^-1``, i.e. ``C / 2`` at convergence); the next weight is
    ``C`` (or ``2 M`` when ``M^-1 - W^-1`` is not positive definite). A point-sampled
    Gaussian of width ``s`` therefore returns ``s**2``.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, h, w)`` background-subtracted stamps; the object starts at the centre
        pixel ``(h // 2, w // 2)``.
    initial_sigma : float
        Width (px) of the first weight.
    max_iter : int
        Iteration limit.
    tol : float
        Convergence on the relative change of the weight trace and on the centroid (px).

    Returns
    -------
    covariance : numpy.ndarray
        ``(n, 3)``: ``Ixx, Iyy, Ixy`` of the object (px**2).
    centroid : numpy.ndarray
        ``(n, 2)``: ``x, y`` offset (px) from the stamp centre.
    ok : numpy.ndarray
        ``(n,)`` bool: converged with a positive-definite, finite result inside the stamp.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    n, h, w = stamps.shape
    yy = (np.arange(h, dtype=np.float64) - h // 2)[None, :, None]
    xx = (np.arange(w, dtype=np.float64) - w // 2)[None, None, :]
    cx = np.zeros(n)
    cy = np.zeros(n)
    wxx = np.full(n, float(initial_sigma) ** 2)
    wyy = wxx.copy()
    wxy = np.zeros(n)
    converged = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    max_var = (min(h, w) / 4.0) ** 2
    for _ in range(int(max_iter)):
        active = ~(converged | failed)
        if not active.any():
            break
        a = np.flatnonzero(active)
        det_w = wxx[a] * wyy[a] - wxy[a] ** 2
        ixx_inv, iyy_inv, ixy_inv = wyy[a] / det_w, wxx[a] / det_w, -wxy[a] / det_w
        dx = xx - cx[a, None, None]
        dy = yy - cy[a, None, None]
        q = (ixx_inv[:, None, None] * dx * dx + 2 * ixy_inv[:, None, None] * dx * dy
             + iyy_inv[:, None, None] * dy * dy)
        wf = np.exp(-0.5 * q) * stamps[a]
        s0 = wf.sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = (wf * dx).sum(axis=(1, 2)) / s0
            my = (wf * dy).sum(axis=(1, 2)) / s0
            dxc, dyc = dx - mx[:, None, None], dy - my[:, None, None]
            mxx = (wf * dxc * dxc).sum(axis=(1, 2)) / s0
            myy = (wf * dyc * dyc).sum(axis=(1, 2)) / s0
            mxy = (wf * dxc * dyc).sum(axis=(1, 2)) / s0
            det_m = mxx * myy - mxy**2
            # C^-1 = M^-1 - W^-1
            pxx = myy / det_m - ixx_inv
            pyy = mxx / det_m - iyy_inv
            pxy = -mxy / det_m - ixy_inv
            det_p = pxx * pyy - pxy**2
            pd = (pxx > 0) & (det_p > 0)
            nxx = np.where(pd, pyy / det_p, 2 * mxx)
            nyy = np.where(pd, pxx / det_p, 2 * myy)
            nxy = np.where(pd, -pxy / det_p, 2 * mxy)
        bad = ~((s0 > 0) & (det_m > 0) & np.isfinite(nxx + nyy + nxy + mx + my))
        nxx = np.clip(np.where(bad, 1.0, nxx), 1.0e-4, max_var)
        nyy = np.clip(np.where(bad, 1.0, nyy), 1.0e-4, max_var)
        nxy = np.where(bad, 0.0, nxy)
        nxy = np.clip(nxy, -0.999 * np.sqrt(nxx * nyy), 0.999 * np.sqrt(nxx * nyy))
        old_tr = wxx[a] + wyy[a]
        new_cx, new_cy = cx[a] + np.where(bad, 0.0, mx), cy[a] + np.where(bad, 0.0, my)
        shift = np.hypot(new_cx - cx[a], new_cy - cy[a])
        change = np.abs(nxx + nyy - old_tr) / old_tr
        wxx[a], wyy[a], wxy[a], cx[a], cy[a] = nxx, nyy, nxy, new_cx, new_cy
        failed[a] |= bad | (np.hypot(new_cx, new_cy) > min(h, w) / 4.0)
        converged[a] |= ~bad & (change < tol) & (shift < tol)
    ok = converged & ~failed & (wxx < max_var) & (wyy < max_var)
    return np.stack([wxx, wyy, wxy], axis=1), np.stack([cx, cy], axis=1), ok




def adaptive_fwhm(image: np.ndarray) -> float:
    r"""FWHM (px) of a PSF image from its adaptive second moments (determinant radius).

    :func:`adaptive_moments` of the image, embedded in zeros so that the weight can grow
    as wide as the PSF needs, started from the unweighted width and iterated to a relative
    change of 1e-10; the result is :math:`2\sqrt{2\ln 2}\,\det(C)^{1/4}`. Unlike
    unweighted moments it is insensitive to the wings and to the image size.

    Raises
    ------
    PsfModelError
        The iteration does not converge (an image without a single peak).
    """
    img = np.asarray(image, dtype=np.float64)
    ny, nx = img.shape
    pad = max(ny, nx)
    canvas = np.zeros((ny + 2 * pad, nx + 2 * pad))
    canvas[pad : pad + ny, pad : pad + nx] = img
    start = max(moments_fwhm(img) / SIGMA_TO_FWHM, 0.5)
    cov, _, ok = adaptive_moments(canvas[None], initial_sigma=start, max_iter=500, tol=1e-10)
    if not ok[0]:
        msg = f"adaptive moments of a {nx}x{ny} PSF image did not converge"
        raise PsfModelError(msg)
    ixx, iyy, ixy = cov[0]
    return float(SIGMA_TO_FWHM * max(ixx * iyy - ixy * ixy, 0.0) ** 0.25)
