"""Saturation level from the data, for images that come without a mask or a keyword.

A saturated star is clipped at (nearly) one level in every pixel of its core, so the
brightest *local maxima* of an image pile up at that level, while unsaturated stars'
peaks follow a smooth, steeply falling distribution. :func:`estimate_saturation_level`
looks for that pile-up; :func:`saturation_mask` flags the pixels at or above a
fraction of the level and grows them (the wings next to a clipped core are not
trustworthy either: charge bleeds, non-linearity sets in below the hard limit).

Unflagged saturated stars are the brightest candidates, so a flux-ranked candidate
list picks them first; they do not obey ``S = K ⋆ T`` (the clip is not linear), and
on a simulated crowded field they biased the fitted kernel sum by +0.8 % and tripled
the 5σ residual detections away from the saturated stars themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from psfmatch import io
from psfmatch.exposure import Exposure
from psfmatch.provenance import NOTE_CARDS

logger = logging.getLogger("psfmatch.saturation")

__all__ = ["SaturationEstimate", "estimate_saturation_level", "mark_estimated_saturation",
           "saturation_mask"]

@dataclass(frozen=True)
class SaturationEstimate:
    """Outcome of :func:`estimate_saturation_level`.

    Attributes
    ----------
    level : float or None
        The estimated clip level (image units), ``None`` when no pile-up was found.
    n_piled : int
        Local maxima within ``tolerance`` of the brightest one.
    n_peaks : int
        Local maxima examined.
    """

    level: float | None
    n_piled: int
    n_peaks: int


def estimate_saturation_level(
    image: np.ndarray,
    *,
    bad: np.ndarray | None = None,
    tolerance: float = 0.02,
    min_piled: int = 3,
    n_peaks: int = 2000,
    footprint: int = 5,
) -> SaturationEstimate:
    """The level at which the brightest local maxima pile up, if they do.

    The ``n_peaks`` brightest local maxima (``footprint`` × ``footprint`` maximum
    filter, ``bad`` pixels and non-finite values ignored) are sorted; when at least
    ``min_piled`` of them lie within ``tolerance`` (relative) of the brightest, the
    image is taken to be clipped and the level is the smallest of those maxima.
    Unclipped stars with a smooth peak distribution essentially never put three peaks
    within 2 % of the maximum (that needs a flat top, which only clipping makes).

    Parameters
    ----------
    image : ndarray
        Image plane (background need not be subtracted).
    bad : ndarray of bool, optional
        Pixels to ignore.
    tolerance : float
        Relative width of the pile-up (a flat-fielded clip level varies by the flat's
        pixel-to-pixel spread, about 1 %).

    Returns
    -------
    SaturationEstimate
    """
    # scipy is imported where it is used: ingest imports this module, and most images
    # have a SAT plane or a keyword, so most ingest jobs never need it (0.3 s, 60 MB).
    from scipy import ndimage

    data = np.asarray(image, dtype=np.float64)
    ignore = ~np.isfinite(data)
    if bad is not None:
        ignore |= np.asarray(bad, dtype=bool)
    if ignore.all():
        return SaturationEstimate(None, 0, 0)
    filled = np.where(ignore, -np.inf, data)
    peaks = (filled == ndimage.maximum_filter(filled, size=footprint)) & ~ignore
    values = np.sort(filled[peaks])[::-1][:n_peaks]
    if values.size == 0 or not values[0] > 0:
        return SaturationEstimate(None, 0, int(values.size))
    piled = values >= values[0] * (1.0 - tolerance)
    n_piled = int(piled.sum())
    # a plateau of one clipped star gives one local maximum per flat region; several
    # stars are needed to call it saturation
    level = float(values[piled].min()) if n_piled >= min_piled else None
    return SaturationEstimate(level, n_piled, int(values.size))


def saturation_mask(image: np.ndarray, level: float, *, fraction: float = 0.95,
                    grow: int = 2) -> np.ndarray:
    """Pixels at or above ``fraction · level``, grown by ``grow`` pixels (bool image).

    Sets nothing on the image; the caller ORs the result into the ``SAT`` plane
    (image and variance are left as they are).
    """
    from scipy import ndimage  # see estimate_saturation_level

    hit = np.asarray(image, dtype=np.float64) >= fraction * level
    if grow > 0 and hit.any():
        hit = ndimage.binary_dilation(hit, iterations=int(grow))
    return hit


def mark_estimated_saturation(exposure: Exposure, *, label: str = "") -> Exposure:
    """Flag saturation estimated from the image when nothing else says where it is.

    Runs only when no pixel carries ``SAT`` and no level is known (no ``SATURATE`` /
    ``SATURATN`` card, no level recorded by the reader from the pairs sheet or a card);
    then :func:`estimate_saturation_level` over the pixels without a mask bit, and, if
    the brightest peaks pile up, ``SAT`` is OR-ed into the mask where
    :func:`saturation_mask` says (at or above 95 % of the level, grown by 2 px) and the
    level is recorded in the metadata (``PSFMATCH SATURATION``, whence ``metrics.json``'s
    ``inputs``). Image and variance are unchanged. Returns ``exposure`` itself when
    nothing is flagged.
    """
    meta = exposure.metadata
    # a level from these cards, or from the pairs sheet, is applied by ingest's reader
    known = NOTE_CARDS["saturation"] in meta or any(card in meta for card in io.SATURATION_CARDS)
    if known or ("SAT" in exposure.mask_planes and exposure.plane("SAT").any()):
        return exposure
    estimate = estimate_saturation_level(exposure.image, bad=exposure.mask != 0)
    if estimate.level is None:
        logger.info("%s: no saturation level known and no pile-up of the brightest peaks "
                    "(%d peaks within 2 %% of the brightest of %d): nothing flagged SAT",
                    label, estimate.n_piled, estimate.n_peaks)
        return exposure
    hit = saturation_mask(exposure.image, estimate.level)
    flagged = exposure.with_planes(["SAT"])
    mask = flagged.mask.copy()
    mask[hit] |= np.int32(flagged.plane_bitmask(["SAT"]))
    note = (f"{int(hit.sum())} pixels >= 0.95 x {estimate.level:.6g} grown by 2 px "
            f"(estimated: {estimate.n_piled} of the {estimate.n_peaks} brightest peaks "
            "pile up there)")
    logger.warning("%s: saturation level estimated from the image: %s", label, note)
    return flagged.with_(mask=mask, metadata={**meta, NOTE_CARDS["saturation"]: note})
