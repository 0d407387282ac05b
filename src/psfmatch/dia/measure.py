"""Per-source measurements: PSF-fit centroid and flux, forced PSF flux, shape.

All fits are weighted least squares on one exposure's pixels with weights
:math:`w = 1/V` from its variance plane (0 on unusable pixels). For a PSF image
:math:`S` placed at position :math:`r` (Fourier-shifted, :func:`psfmatch.dia.psf.shifted_psf`)
the flux is

.. math::

    \\hat F = \\frac{\\sum w S d}{\\sum w S^2}, \\qquad
    \\sigma_F^2 = \\frac{1}{\\sum w S^2} + \\frac{\\sum E S^2}{(\\sum w S^2)^2},

the second term being the correlated-noise excess of :mod:`psfmatch.dia.filtering`.
The centroid fit is Gauss-Newton on :math:`(F, x, y)` for the model :math:`F S(r)`.
No function here modifies its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psfmatch.dia.filtering import FilteredImage, usable_pixels
from psfmatch.dia.psf import shifted_psf
from psfmatch.exposure import Exposure
from psfmatch.moments import adaptive_moments

__all__ = ["PixelData", "fit_psf", "linear_psf_flux", "refine_peak", "shapes"]

_MAX_ITER = 30
_TOL = 1.0e-4


@dataclass(frozen=True, eq=False)
class PixelData:
    """What the fits need of one exposure (array-index frame, float64).

    ``data`` is the image with unusable pixels zeroed, ``weight`` = 1/variance on usable
    pixels (0 elsewhere), ``excess`` the correlated-noise excess weight :math:`E` of
    :mod:`psfmatch.dia.filtering`.
    """

    data: np.ndarray
    weight: np.ndarray
    excess: np.ndarray

    @classmethod
    def from_filtered(cls, exposure: Exposure, filtered: FilteredImage) -> PixelData:
        """Pixel data of the filtered difference (its usable mask and noise model)."""
        u = filtered.usable
        return cls(data=np.where(u, exposure.image, 0.0).astype(np.float64),
                   weight=np.where(u, 1.0 / np.where(u, exposure.variance, 1.0), 0.0),
                   excess=filtered.excess)

    @classmethod
    def from_exposure(cls, exposure: Exposure, *, exclude_planes: Sequence[str],
                      noise_scale: float = 1.0) -> PixelData:
        """Pixel data of an exposure whose whole noise is scaled by ``noise_scale``.

        The science image (white noise): 1. The matched template: :math:`c_T` (its
        noise is the template's, convolved), so :math:`E = (c_T^2 - 1)\\, w`.
        """
        u = usable_pixels(exposure, exclude_planes)
        w = np.where(u, 1.0 / np.where(u, exposure.variance, 1.0), 0.0)
        factor = noise_scale**2 - 1.0 if math.isfinite(noise_scale) else 0.0
        return cls(data=np.where(u, exposure.image, 0.0).astype(np.float64), weight=w,
                   excess=factor * w)

    def stamp(self, name: str, row: int, col: int, shape: tuple[int, int]) -> np.ndarray:
        """``shape`` stamp of array ``name`` centred on ``(row, col)``, zero outside."""
        arr = getattr(self, name)
        hy, hx = shape[0] // 2, shape[1] // 2
        ny, nx = arr.shape
        out = np.zeros(shape)
        r0, c0 = row - hy, col - hx
        ra, rb = max(r0, 0), min(row + hy + 1, ny)
        ca, cb = max(c0, 0), min(col + hx + 1, nx)
        if ra < rb and ca < cb:
            out[ra - r0:rb - r0, ca - c0:cb - c0] = arr[ra:rb, ca:cb]
        return out


def refine_peak(snr: np.ndarray, row: int, col: int) -> tuple[float, float]:
    """Sub-pixel offset ``(dx, dy)`` of a peak from 1-D parabolas through 3 pixels.

    :math:`\\delta = \\tfrac12 (\\nu_{-1} - \\nu_{+1}) / (\\nu_{-1} - 2\\nu_0 + \\nu_{+1})`
    per axis on :math:`|\\nu|`, clipped to ±0.5; 0 at the image border.
    """
    ny, nx = snr.shape
    v = np.abs(snr)
    out = []
    for (a, b, c), inside in (
        ((v[row, col - 1], v[row, col], v[row, col + 1]) if 0 < col < nx - 1 else (0, 0, 0),
         0 < col < nx - 1),
        ((v[row - 1, col], v[row, col], v[row + 1, col]) if 0 < row < ny - 1 else (0, 0, 0),
         0 < row < ny - 1),
    ):
        den = a - 2.0 * b + c
        out.append(float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if inside and den < 0 else 0.0)
    return out[0], out[1]


def linear_psf_flux(pix: PixelData, psf: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """Forced PSF flux and error at array position ``(x, y)`` (module docstring).

    Returns ``(nan, nan)`` when no usable pixel lies under the PSF.
    """
    col, row = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    s, _, _ = shifted_psf(psf, x - col, y - row, derivatives=False)
    w = pix.stamp("weight", row, col, psf.shape)
    d = pix.stamp("data", row, col, psf.shape)
    a = float(np.sum(w * s * s))
    if not a > 0:
        return math.nan, math.nan
    e = float(np.sum(pix.stamp("excess", row, col, psf.shape) * s * s))
    var = 1.0 / a + e / (a * a)
    return float(np.sum(w * s * d) / a), math.sqrt(max(var, 1e-3 / a))


def fit_psf(
    pix: PixelData,
    psf: np.ndarray,
    x0: float,
    y0: float,
    *,
    sign: int,
    max_shift: float,
) -> tuple[float, float, bool]:
    """PSF-fit centroid (array coordinates) of a source of ``sign`` starting at ``(x0, y0)``.

    Gauss-Newton on :math:`(F, x, y)` for the model :math:`F S(x, y)` fitted to
    ``sign * data`` (so the flux of a fading source is positive during the fit), steps
    limited to 0.5 px, the stamp re-centred when the position leaves its pixel.
    Converged when both position steps are below 1e-4 px.

    Returns
    -------
    x, y : float
        Fitted position, or ``(x0, y0)`` when the fit fails.
    ok : bool
        False when the flux became non-positive, the system was singular, it did not
        converge in 30 iterations, or the position moved more than ``max_shift`` px.
    """
    col, row = int(math.floor(x0 + 0.5)), int(math.floor(y0 + 0.5))
    dx, dy = x0 - col, y0 - row
    d = sign * pix.stamp("data", row, col, psf.shape)
    w = pix.stamp("weight", row, col, psf.shape)
    flux = None
    for _ in range(_MAX_ITER):
        if abs(dx) > 0.5 or abs(dy) > 0.5:
            sx, sy = int(round(dx)), int(round(dy))
            col, row, dx, dy = col + sx, row + sy, dx - sx, dy - sy
            d = sign * pix.stamp("data", row, col, psf.shape)
            w = pix.stamp("weight", row, col, psf.shape)
        s, s_x, s_y = shifted_psf(psf, dx, dy)
        a = float(np.sum(w * s * s))
        if not a > 0:
            return x0, y0, False
        if flux is None:
            flux = float(np.sum(w * s * d) / a)
        if not flux > 0:
            return x0, y0, False
        jac = np.stack([s.ravel(), flux * s_x.ravel(), flux * s_y.ravel()], axis=1)
        resid = (d - flux * s).ravel()
        wj = jac * w.ravel()[:, None]
        try:
            step = np.linalg.solve(jac.T @ wj, wj.T @ resid)
        except np.linalg.LinAlgError:
            return x0, y0, False
        if not np.all(np.isfinite(step)):
            return x0, y0, False
        flux += float(step[0])
        dx += float(np.clip(step[1], -0.5, 0.5))
        dy += float(np.clip(step[2], -0.5, 0.5))
        if math.hypot(col + dx - x0, row + dy - y0) > max_shift:
            return x0, y0, False
        if abs(step[1]) < _TOL and abs(step[2]) < _TOL:
            return col + dx, row + dy, flux > 0
    return x0, y0, False


def shapes(
    pix: PixelData, x: np.ndarray, y: np.ndarray, sign: np.ndarray, fwhm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive second moments ``(n, 3)`` = ``Ixx, Iyy, Ixy`` (px²) and an ok mask.

    Stamps of side ``2 ceil(2 FWHM) + 1`` around each rounded position of
    ``sign * data`` (unusable pixels count as 0) are measured with
    :func:`psfmatch.detect.adaptive_moments` (Gaussian-weighted, iterated; for a
    Gaussian source of covariance :math:`C` it returns :math:`C`).
    """
    n = np.size(x)
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=bool)
    side = 2 * math.ceil(2.0 * fwhm) + 1
    stamps = np.stack([sign[i] * pix.stamp("data", int(math.floor(y[i] + 0.5)),
                                           int(math.floor(x[i] + 0.5)), (side, side))
                       for i in range(n)])
    with np.errstate(over="ignore"):  # noise stamps may overflow a moment; ok is False then
        cov, _, ok = adaptive_moments(stamps, initial_sigma=max(fwhm / 2.3548, 0.5))
    return cov, ok
