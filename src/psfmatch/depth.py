"""Point-source depth: 5σ limiting flux (counts) and limiting magnitude.

For a unit-sum PSF image :math:`p` and white noise of per-pixel variance :math:`\\sigma^2`
(counts²), the PSF-fit flux error is :math:`\\sigma \\sqrt{A_{\\rm NEA}}` with the noise
equivalent area :math:`A_{\\rm NEA} = 1 / \\sum p^2` (px²; :math:`4\\pi\\sigma_{\\rm PSF}^2`
for a Gaussian), so the :math:`n\\sigma` limit is

.. math::

    f_{\\lim} = n\\,\\sigma\\sqrt{A_{\\rm NEA}}, \\qquad m_{\\lim} = z - 2.5 \\log_{10} f_{\\lim},

with :math:`z` the magnitude of one count. This holds for the science and template
images and for a *decorrelated* difference (white noise); for a difference that was not
decorrelated the per-pixel variance misstates the PSF-flux error.

ip_diffim records a simpler number, :math:`z - 2.5\\log_{10}(5\\sqrt{A})` with
:math:`A = \\pi\\sqrt{I_{xx} I_{yy}}` (a quarter of the NEA for a Gaussian) and no noise
term, and combines science and template limits in quadrature of fluxes for the difference;
:func:`ipdiffim_limiting_magnitude` and :func:`combined_limiting_magnitude` reproduce it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.decorrelation import IGNORE_MASK_PLANES, mean_variance
from psfmatch.exposure import Exposure
from psfmatch.modes import psf_axis_fwhm

__all__ = [
    "combined_limiting_magnitude",
    "depth",
    "depth_from_variance",
    "ipdiffim_limiting_magnitude",
    "limiting_flux",
    "limiting_magnitude",
    "moments_area",
    "noise_equivalent_area",
]


def _unit_psf(psf_image: np.ndarray) -> np.ndarray:
    psf = np.asarray(psf_image, dtype=np.float64)
    total = float(psf.sum()) if psf.ndim == 2 else math.nan
    if not (np.all(np.isfinite(psf)) and total > 0):
        msg = f"PSF image must be a finite 2-D array with a positive sum, got shape {psf.shape}"
        raise ValueError(msg)
    return psf / total


def noise_equivalent_area(psf_image: np.ndarray) -> float:
    """:math:`A_{\\rm NEA} = 1/\\sum p^2` (px²) of the PSF normalised to unit sum."""
    return float(1.0 / np.sum(_unit_psf(psf_image) ** 2))


def moments_area(psf_image: np.ndarray) -> float:
    """ip_diffim's PSF area :math:`\\pi\\sqrt{I_{xx} I_{yy}}` from adaptive moments (px²)."""
    fx, fy = psf_axis_fwhm(_unit_psf(psf_image))
    return float(math.pi * (fx / SIGMA_TO_FWHM) * (fy / SIGMA_TO_FWHM))


def limiting_flux(psf_image: np.ndarray, variance: float, *, n_sigma: float = 5.0) -> float:
    """:math:`n\\sigma\\sqrt{A_{\\rm NEA}}` (counts) for per-pixel noise variance ``variance``."""
    if not (math.isfinite(variance) and variance >= 0):
        return math.nan
    return float(n_sigma * math.sqrt(variance * noise_equivalent_area(psf_image)))


def limiting_magnitude(flux: float, zero_point: float | None) -> float:
    """:math:`z - 2.5\\log_{10} f`; NaN without a zero point or for ``f <= 0``."""
    if zero_point is None or not math.isfinite(zero_point) or not (flux > 0):
        return math.nan
    return float(zero_point - 2.5 * math.log10(flux))


def ipdiffim_limiting_magnitude(psf_image: np.ndarray, zero_point: float | None, *,
                                n_sigma: float = 5.0) -> float:
    """ip_diffim's metadata value :math:`z - 2.5\\log_{10}(n\\sqrt{\\pi\\sqrt{I_{xx}I_{yy}}})`."""
    if zero_point is None or not math.isfinite(zero_point):
        return math.nan
    return float(zero_point - 2.5 * math.log10(n_sigma * math.sqrt(moments_area(psf_image))))


def combined_limiting_magnitude(science_mag: float, template_mag: float) -> float:
    """Difference limit from fluxes in quadrature, :math:`f_D = \\sqrt{f_S^2 + f_T^2}`.

    A NaN template limit gives the science limit (as ip_diffim).
    """
    if not math.isfinite(template_mag):
        return float(science_mag)
    f2 = 10.0 ** (-0.8 * science_mag) + 10.0 ** (-0.8 * template_mag)
    return float(-1.25 * math.log10(f2))


def depth(exposure: Exposure, psf_image: np.ndarray, *, zero_point: float | None = None,
          n_sigma: float = 5.0, ignore_mask_planes: Sequence[str] = IGNORE_MASK_PLANES
          ) -> dict[str, Any]:
    """Depth record of one image for ``metrics.json``.

    The per-pixel variance is the clipped mean of the variance plane over pixels without
    ``ignore_mask_planes``. Keys: ``n_sigma``, ``mean_variance`` (counts²),
    ``noise_equivalent_area`` (px²), ``limiting_flux`` (counts), ``limiting_magnitude``
    and ``ipdiffim_limiting_magnitude`` (NaN without ``zero_point``), ``zero_point``.
    """
    variance = mean_variance(exposure, ignore_mask_planes=ignore_mask_planes)
    return depth_from_variance(variance, psf_image, zero_point=zero_point, n_sigma=n_sigma)


def depth_from_variance(variance: float, psf_image: np.ndarray, *,
                        zero_point: float | None = None, n_sigma: float = 5.0
                        ) -> dict[str, Any]:
    """:func:`depth` from the clipped mean variance (counts²) already measured."""
    flux = limiting_flux(psf_image, variance, n_sigma=n_sigma)
    return {"n_sigma": float(n_sigma), "mean_variance": variance,
            "noise_equivalent_area": noise_equivalent_area(psf_image),
            "limiting_flux": flux, "limiting_magnitude": limiting_magnitude(flux, zero_point),
            "ipdiffim_limiting_magnitude": ipdiffim_limiting_magnitude(
                psf_image, zero_point, n_sigma=n_sigma),
            "zero_point": zero_point}
