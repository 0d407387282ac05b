"""The DMTN-021 decorrelation filter: build it, apply it, whiten a PSF.

For a difference :math:`D = U - K \\star C` of an unconvolved image ``U`` (per-pixel
noise variance :math:`v`) and a convolved image ``C`` (variance :math:`v_t`), the noise
power spectrum is :math:`v + v_t |\\hat K(k)|^2`. The filter

.. math::

    \\hat\\phi(k) = \\sqrt{\\frac{v + v_t \\kappa^2}{v + v_t |\\hat K(k)|^2}},
    \\qquad \\kappa = \\sum K,

flattens it to :math:`v + v_t \\kappa^2` and keeps point-source fluxes
(:math:`\\hat\\phi(0) = 1`). :math:`\\hat\\phi` is real and even, so :math:`\\phi` is
real and point symmetric: correlation and convolution with it are the same. For a
preconvolution (score) image :math:`P \\star U - K \\star C` the filter is
:math:`(v + v_t \\kappa^2) / (v + v_t |\\hat K|^2 / |\\hat P|^2)` (no square root).

Filters are computed on a local ``N × N`` Fourier grid (``N`` about four kernel widths:
the filter has decayed to ~1e-10 of its peak there) instead of a grid the size of the
image as ip_diffim does; applied by FFT correlation, the result is the same to that
precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft

from psfmatch.convolution import correlate

__all__ = [
    "DecorrelationFilter",
    "apply_filter",
    "decorrelated_psf",
    "decorrelation_filter",
    "fill_non_finite",
    "filter_region",
]

#: ``|P̂|²`` is floored at this (1000 × the smallest normal double), as ip_diffim.
_POWER_FLOOR = 1000.0 * np.finfo(np.float64).tiny


@dataclass(frozen=True, eq=False)
class DecorrelationFilter:
    """The decorrelation filter for one kernel image and one pair of noise levels.

    Attributes
    ----------
    image_filter : ndarray, shape (n, n), n odd
        :math:`\\phi`, centred; applied to the difference (or score) image by correlation
        (it is point symmetric). Its sum is 1 for a difference, the flux response of the
        score for a preconvolution image.
    unconvolved_filter, convolved_filter : ndarray, shape (n, n)
        Overall correlation kernels :math:`h_1, h_2` acting on the unconvolved and
        convolved input images (variance propagation).
    kernel_sum : float
        :math:`\\kappa = \\sum K`: flux ratio of the matched-to image to the convolved
        image.
    unconvolved_variance, convolved_variance : float
        :math:`v, v_t` (counts² of the respective input images) the filter was built for.
    preconvolution : bool
        Whether this is the score-image filter.
    """

    image_filter: np.ndarray
    unconvolved_filter: np.ndarray
    convolved_filter: np.ndarray
    kernel_sum: float
    unconvolved_variance: float
    convolved_variance: float
    preconvolution: bool = False

    @property
    def unconvolved_gain(self) -> float:
        """:math:`\\sum h_1^2` (= mean of :math:`|\\hat h_1|^2` over the grid, Parseval)."""
        return float(np.sum(self.unconvolved_filter**2))

    @property
    def convolved_gain(self) -> float:
        """:math:`\\sum h_2^2`."""
        return float(np.sum(self.convolved_filter**2))

    @property
    def output_variance(self) -> float:
        """Per-pixel variance of the filtered image for flat inputs ``v``, ``v_t``.

        :math:`v \\sum h_1^2 + v_t \\sum h_2^2`; for a difference this is exactly
        :math:`v + v_t \\kappa^2` (the flattened spectrum).
        """
        return (self.unconvolved_variance * self.unconvolved_gain
                + self.convolved_variance * self.convolved_gain)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for ``metrics.json``)."""
        return {"kernel_sum": self.kernel_sum,
                "unconvolved_variance": self.unconvolved_variance,
                "convolved_variance": self.convolved_variance,
                "unconvolved_gain": self.unconvolved_gain,
                "convolved_gain": self.convolved_gain,
                "output_variance": self.output_variance,
                "filter_size": int(self.image_filter.shape[0]),
                "filter_centre": float(self.image_filter[self.image_filter.shape[0] // 2,
                                                         self.image_filter.shape[1] // 2]),
                "preconvolution": self.preconvolution}


def _pad_centred(image: np.ndarray, n: int) -> np.ndarray:
    """Put an odd image on an ``n × n`` grid with its centre pixel at index (0, 0)."""
    out = np.zeros((n, n))
    iy = (np.arange(image.shape[0]) - image.shape[0] // 2) % n
    ix = (np.arange(image.shape[1]) - image.shape[1] // 2) % n
    out[np.ix_(iy, ix)] = image
    return out


def _centred_crop(grid: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pad_centred` for the largest odd size (``n − 1``) of an even grid."""
    n = grid.shape[0]
    shifted = fft.fftshift(grid)  # index 0 -> n // 2
    return shifted[1:, 1:] if n % 2 == 0 else shifted


def _check_odd(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.shape[0] % 2 == 0 or image.shape[1] % 2 == 0:
        msg = f"{name} must be a 2-D image with odd sizes, got shape {image.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(image)):
        msg = f"{name} has {int(np.sum(~np.isfinite(image)))} non-finite pixels"
        raise ValueError(msg)
    return image


def decorrelation_filter(
    kernel_image: np.ndarray,
    *,
    unconvolved_variance: float,
    convolved_variance: float,
    preconvolution_kernel: np.ndarray | None = None,
    grid_size: int | None = None,
) -> DecorrelationFilter:
    """Build the DMTN-021 filter for a kernel image and two mean noise variances.

    Parameters
    ----------
    kernel_image : ndarray, shape (k, k), k odd
        Matching kernel at one position, not normalised (its sum :math:`\\kappa` is the
        flux ratio matched-to / convolved image).
    unconvolved_variance, convolved_variance : float
        Mean per-pixel noise variance :math:`v` of the image that was *not* convolved and
        :math:`v_t` of the image that *was* (before convolution), each in its own counts².
    preconvolution_kernel : ndarray, optional
        Unit-sum PSF the science image was correlated with (score-image mode).
    grid_size : int, optional
        Even Fourier grid size; default ``4 × max(kernel sizes)`` rounded up to a fast
        even length.

    Returns
    -------
    DecorrelationFilter
        The filters are ``(grid_size − 1)²`` odd images.

    Raises
    ------
    ValueError
        If an image is not odd-sized and finite, a variance is not finite and >= 0 (or both
        are 0), or the kernel sum is not positive.
    """
    kernel = _check_odd("kernel_image", kernel_image)
    v, vt = float(unconvolved_variance), float(convolved_variance)
    if not (math.isfinite(v) and math.isfinite(vt) and v >= 0 and vt >= 0 and v + vt > 0):
        msg = (f"variances must be finite, >= 0 and not both 0; got unconvolved {v!r}, "
               f"convolved {vt!r}")
        raise ValueError(msg)
    kappa = float(kernel.sum())
    if not kappa > 0:
        msg = f"kernel sum must be > 0 to decorrelate, got {kappa!r}"
        raise ValueError(msg)
    sizes = [*kernel.shape]
    psf = None
    if preconvolution_kernel is not None:
        psf = _check_odd("preconvolution_kernel", preconvolution_kernel)
        psf = psf / psf.sum()
        sizes += psf.shape
    n = int(grid_size) if grid_size is not None else fft.next_fast_len(4 * max(sizes), True)
    n += n % 2
    if n < max(sizes) + 1:
        msg = f"grid_size {n} is smaller than the kernels ({max(sizes)} px)"
        raise ValueError(msg)
    k_hat = fft.fft2(_pad_centred(kernel, n))
    k_pow = np.abs(k_hat) ** 2
    flat = v + vt * kappa**2
    if psf is None:
        c_hat = np.sqrt(flat / (v + vt * k_pow))
        h1_hat = c_hat
    else:
        p_hat = fft.fft2(_pad_centred(psf, n))
        p_pow = np.maximum(np.abs(p_hat) ** 2, _POWER_FLOOR)
        c_hat = flat / (v + vt * k_pow / p_pow)
        h1_hat = p_hat * c_hat  # correlating with P, then with phi
    h2_hat = k_hat * c_hat
    real = [_centred_crop(np.real(fft.ifft2(h))) for h in (c_hat, h1_hat, h2_hat)]
    return DecorrelationFilter(real[0], real[1], real[2], kappa, v, vt, psf is not None)


def fill_non_finite(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` as float64 with non-finite pixels set to the mean of the finite ones.

    Returns the filled array and the boolean map of the replaced pixels.
    """
    data = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(data)
    if bad.any():
        data = np.where(bad, data[~bad].mean() if not bad.all() else 0.0, data)
    return data, bad


def apply_filter(image: np.ndarray, image_filter: np.ndarray) -> np.ndarray:
    """Correlate ``image`` with a (point-symmetric) filter, keeping non-finite pixels.

    Non-finite pixels are replaced by the mean of the finite ones before filtering (so
    they do not spread) and set back to their original values afterwards. Pixels within
    half a filter of the edge see zeros beyond the image.

    Returns
    -------
    ndarray, float64, same shape as ``image``
    """
    data, bad = fill_non_finite(image)
    out = correlate(data, image_filter)
    out[bad] = np.asarray(image)[bad]
    return out


def filter_region(data: np.ndarray, image_filter: np.ndarray, rows: slice, cols: slice
                  ) -> np.ndarray:
    """``correlate(data, image_filter)[rows, cols]``, computed on a cut-out with a margin.

    The margin is half the filter, so inside the image the result equals the full-image
    correlation exactly.
    """
    half = image_filter.shape[0] // 2
    ny, nx = data.shape
    r0, r1 = max(rows.start - half, 0), min(rows.stop + half, ny)
    c0, c1 = max(cols.start - half, 0), min(cols.stop + half, nx)
    out = correlate(data[r0:r1, c0:c1], image_filter)
    return out[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0]


def decorrelated_psf(psf_image: np.ndarray, image_filter: np.ndarray) -> np.ndarray:
    """PSF of the whitened image: :math:`\\phi * P` on ``psf_image``'s grid.

    The convolution is evaluated on a padded grid and cropped back to the PSF stamp; the
    result is renormalised to the flux of ``psf_image`` (what falls outside the stamp is
    the filter's far wing, below 1e-6 of the flux for stamps of a few FWHM).
    """
    psf = _check_odd("psf_image", psf_image)
    half = image_filter.shape[0] // 2
    padded = np.pad(psf, half)
    out = correlate(padded, image_filter)[half:-half, half:-half] if half else \
        correlate(padded, image_filter)
    return out * (psf.sum() / out.sum())
