"""Quality gate: is this difference image a bad subtraction?

Two measures, each with a configured limit (``None`` disables it):

* **Footprint power ratio** (ip_diffim's bad-subtraction check): over the footprints of
  the science image's own sources (its filtered S/N at or above 10, usable pixels,
  at least 5 pixels), the residual power left in the difference,

  .. math::

      r_i = \\left| \\frac{\\langle |D| - \\sqrt{2 V_D / \\pi} \\rangle_i}
      {\\langle |S - s_S| \\rangle_i} \\right|,

  with :math:`\\langle\\cdot\\rangle_i` the mean over footprint :math:`i`,
  :math:`\\sqrt{2 V_D/\\pi}` the mean of :math:`|D|` that noise of the difference's
  variance :math:`V_D` alone gives (ip_diffim subtracts the image median of
  :math:`|D|` instead, which leaves the sources' photon noise in the ratio) and
  :math:`s_S` the median of :math:`S` over usable pixels. A good subtraction leaves
  noise (:math:`r_i \\approx 0`); a failed
  kernel leaves a fraction of every star (:math:`r_i \\sim 0.2 - 1`). The gate trips when
  the mean exceeds ``max_footprint_ratio`` or the standard deviation exceeds
  ``max_footprint_ratio_std`` (needs 3 footprints).
* **Detected fraction**: the fraction of usable pixels whose filtered S/N is beyond the
  detection threshold :math:`t` (searched signs); pure Gaussian noise gives
  :math:`k\\,\\Phi(-t)` (5.7e-7 at 5σ for both signs). A catastrophic failure (wrong
  scale, offset) pushes it up by orders of magnitude.

A tripped gate raises :class:`~psfmatch.errors.BadSubtractionError` carrying the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from psfmatch.dia.filtering import FilteredImage, matched_filter, usable_pixels
from psfmatch.errors import BadSubtractionError
from psfmatch.exposure import Exposure

__all__ = ["BadSubtractionError", "check_subtraction", "footprint_power_ratios",
           "subtraction_quality"]

#: S/N at which science sources define the footprints of the power ratio.
SCIENCE_FOOTPRINT_SNR = 10.0
#: Fewest pixels of a science footprint used in the power ratio.
SCIENCE_FOOTPRINT_MIN_AREA = 5
#: Fewest footprints for the power-ratio checks to apply.
MIN_RATIO_FOOTPRINTS = 3


def footprint_power_ratios(
    difference: Exposure,
    science: Exposure,
    psf: np.ndarray,
    *,
    exclude_planes: Sequence[str] = (),
    usable: np.ndarray | None = None,
    sources: tuple[Any, Any] | None = None,
) -> np.ndarray:
    """Residual power ratio :math:`r_i` of each science-source footprint (module docstring).

    Science footprints: connected pixels with filtered science S/N at or above
    :data:`SCIENCE_FOOTPRINT_SNR` (noise rescaled, :func:`matched_filter`), restricted to
    pixels usable in both images, with at least :data:`SCIENCE_FOOTPRINT_MIN_AREA`
    pixels; ``usable`` (optional) restricts the pixels further. With ``sources`` (parent
    ``(x, y)`` of science sources, e.g. the kernel candidates, as ip_diffim uses its
    input source catalogue) only footprints holding one of them count, so transients
    in the science image do not enter the ratio. Both exposures are only read.

    Returns
    -------
    numpy.ndarray
        One ratio per footprint (possibly empty).
    """
    sci = matched_filter(science, psf, exclude_planes=exclude_planes)
    good = sci.usable & usable_pixels(difference, exclude_planes)
    if usable is not None:
        good &= usable
    if not good.any():
        return np.zeros(0)
    lab, n = ndimage.label(good & (sci.snr >= SCIENCE_FOOTPRINT_SNR),
                           structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(0)
    idx = np.arange(1, n + 1)
    area = ndimage.sum(np.ones(science.shape), labels=lab, index=idx)
    var_d = np.where(good & np.isfinite(difference.variance), difference.variance, 0.0)
    excess_d = np.where(good, np.abs(difference.image.astype(np.float64))
                        - np.sqrt(2.0 / np.pi * np.clip(var_d, 0.0, None)), 0.0)
    abs_s = np.abs(science.image.astype(np.float64) - float(np.median(science.image[good])))
    abs_s = np.where(good, abs_s, 0.0)
    mean_d = ndimage.sum(excess_d, labels=lab, index=idx) / area
    mean_s = ndimage.sum(abs_s, labels=lab, index=idx) / area
    keep = (area >= SCIENCE_FOOTPRINT_MIN_AREA) & (mean_s > 0)
    if sources is not None:
        col = np.floor(np.asarray(sources[0], dtype=np.float64) + 0.5).astype(np.int64)
        row = np.floor(np.asarray(sources[1], dtype=np.float64) + 0.5).astype(np.int64)
        col, row = col - science.xy0[0], row - science.xy0[1]
        ny, nx = science.shape
        inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
        held = np.zeros(n + 1, dtype=bool)
        held[lab[row[inside], col[inside]]] = True
        keep &= held[1:]
    return np.abs(mean_d[keep] / mean_s[keep])


def subtraction_quality(
    filtered: FilteredImage,
    *,
    threshold: float,
    polarity: str = "both",
    ratios: np.ndarray | None = None,
) -> dict[str, Any]:
    """The numbers the gate looks at.

    Returns
    -------
    dict
        ``n_usable`` (defined and usable pixels), ``n_detected`` (of those, beyond the
        threshold in a searched sign), ``detected_fraction`` (NaN without usable pixels),
        ``expected_fraction`` (:math:`k\\,\\Phi(-t)`), ``noise_scale``,
        ``n_science_footprints``, ``footprint_ratio_mean`` and ``footprint_ratio_std``
        (NaN without ``ratios``).
    """
    good = filtered.defined & filtered.usable
    snr = filtered.snr[good]
    signs = {"both": (1, -1), "positive": (1,), "negative": (-1,)}[polarity]
    n_det = sum(int(np.count_nonzero(s * snr >= threshold)) for s in signs)
    n = int(snr.size)
    r = np.zeros(0) if ratios is None else np.asarray(ratios, dtype=np.float64)
    return {"n_usable": n, "n_detected": n_det,
            "detected_fraction": n_det / n if n else math.nan,
            "expected_fraction": len(signs) * float(ndtr(-threshold)),
            "noise_scale": filtered.noise_scale,
            "n_science_footprints": int(r.size),
            "footprint_ratio_mean": float(np.mean(r)) if r.size else math.nan,
            "footprint_ratio_std": float(np.std(r)) if r.size else math.nan}


def check_subtraction(
    quality: dict[str, Any],
    *,
    label: str,
    max_footprint_ratio: float | None = None,
    max_footprint_ratio_std: float | None = None,
    max_detected_fraction: float | None = None,
) -> None:
    """Raise :class:`BadSubtractionError` when a measure exceeds its limit.

    ``None`` disables a limit; the ratio limits need :data:`MIN_RATIO_FOOTPRINTS`
    footprints, and a difference without usable pixels passes (nothing to detect).
    """
    enough = quality.get("n_science_footprints", 0) >= MIN_RATIO_FOOTPRINTS
    checks = (("footprint_ratio_mean", max_footprint_ratio, enough),
              ("footprint_ratio_std", max_footprint_ratio_std, enough),
              ("detected_fraction", max_detected_fraction, True))
    for name, limit, applies in checks:
        value = quality.get(name, math.nan)
        if limit is not None and applies and math.isfinite(value) and value > limit:
            raise BadSubtractionError(label, name, value, limit, quality)
