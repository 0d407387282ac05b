"""Footprints and peaks on the filtered S/N image.

For each searched sign :math:`s = \\pm 1` the pixels with :math:`s\\,\\nu \\ge t`
(defined pixels only) are labelled with 8-connectivity; footprints with fewer than
``min_footprint_area`` such pixels are dropped; the remaining ones are grown by
``grow`` pixels (a square) and labelled again, so grown footprints that touch merge
(their pixels above threshold keep counting as the footprint's area). The peaks of a
footprint are the local maxima of :math:`s\\,\\nu` above the threshold that are the
highest point within ``peak_radius`` pixels (greedy, brightest first); each peak is one
detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from psfmatch.dia.filtering import FilteredImage
from psfmatch.dia.flags import FLAG_BITS
from psfmatch.exposure import Exposure

__all__ = ["Detections", "component_shapes", "find_detections", "footprint_flags",
           "reject_peaks"]

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True, eq=False)
class Detections:
    """Peaks and their footprints (array indices, not parent coordinates).

    Attributes
    ----------
    col, row : numpy.ndarray
        int64 array indices of each peak.
    peak_snr : numpy.ndarray
        Signed filtered S/N at the peak.
    sign : numpy.ndarray
        int64, +1 or -1.
    footprint : numpy.ndarray
        int64 footprint id of each peak (1..n; ids of the two signs do not collide).
    labels : numpy.ndarray
        int64 image of grown-footprint ids (0 = none; where a positive and a negative
        grown footprint overlap, the positive id wins in this image but both
        footprints own the pixel for flags, see :func:`footprint_flags`).
    negative_labels : numpy.ndarray
        Same, negative footprints only (their ids, 0 elsewhere).
    above : numpy.ndarray
        bool image of the pixels above threshold in kept footprints (either sign).
    components : numpy.ndarray
        int64 image of the connected components of ``above`` before growing (ids
        unique over both signs, 0 elsewhere).
    area : numpy.ndarray
        int64 pixels above threshold per footprint id (index 0 unused).
    n_footprints : dict
        Footprints kept per sign, ``{"positive": n, "negative": n}``.
    """

    col: np.ndarray
    row: np.ndarray
    peak_snr: np.ndarray
    sign: np.ndarray
    footprint: np.ndarray
    labels: np.ndarray
    negative_labels: np.ndarray
    above: np.ndarray
    components: np.ndarray
    area: np.ndarray
    n_footprints: dict

    def subset(self, keep: np.ndarray) -> Detections:
        """The same footprints with only the peaks where ``keep`` is True."""
        return Detections(col=self.col[keep], row=self.row[keep],
                          peak_snr=self.peak_snr[keep], sign=self.sign[keep],
                          footprint=self.footprint[keep], labels=self.labels,
                          negative_labels=self.negative_labels, above=self.above,
                          components=self.components, area=self.area,
                          n_footprints=self.n_footprints)


def _peaks(value: np.ndarray, above: np.ndarray, radius: int) -> tuple[np.ndarray, ...]:
    """Local maxima of ``value`` on ``above``, non-maximum-suppressed within ``radius``."""
    local = above & (value >= ndimage.maximum_filter(value, size=3, mode="constant",
                                                      cval=-np.inf))
    rows, cols = np.nonzero(local)
    order = np.lexsort((cols, rows, -value[rows, cols]))
    rows, cols = rows[order], cols[order]
    kept: list[int] = []
    r2 = float(radius) ** 2
    for i in range(rows.size):
        if kept:
            k = np.asarray(kept)
            if np.any((rows[k] - rows[i]) ** 2 + (cols[k] - cols[i]) ** 2 <= r2):
                continue
        kept.append(i)
    k = np.asarray(kept, dtype=np.int64)
    return rows[k] if k.size else rows[:0], cols[k] if k.size else cols[:0]


def find_detections(
    filtered: FilteredImage,
    *,
    threshold: float,
    polarity: str = "both",
    min_footprint_area: int = 1,
    grow: int = 2,
    peak_radius: int = 1,
) -> Detections:
    """Threshold the S/N image into footprints and peaks (see the module docstring).

    Parameters
    ----------
    filtered : FilteredImage
        Output of :func:`psfmatch.dia.filtering.matched_filter`.
    threshold : float
        S/N threshold :math:`t` (> 0).
    polarity : {"both", "positive", "negative"}
    min_footprint_area : int
        Minimum pixels above threshold per (ungrown) footprint.
    grow : int
        Growth (px) of each footprint.
    peak_radius : int
        Non-maximum-suppression radius (px, >= 1).

    Returns
    -------
    Detections
        Peaks sorted by decreasing :math:`|\\nu|`.
    """
    snr = filtered.snr
    shape = snr.shape
    labels = np.zeros(shape, dtype=np.int64)
    neg_labels = np.zeros(shape, dtype=np.int64)
    above_all = np.zeros(shape, dtype=bool)
    components = np.zeros(shape, dtype=np.int64)
    n_components = 0
    areas = [0]
    parts = []
    counts = {"positive": 0, "negative": 0}
    signs = {"both": (1, -1), "positive": (1,), "negative": (-1,)}[polarity]
    next_id = 1
    for s in signs:
        value = s * snr
        above = filtered.defined & (value >= threshold)
        lab, n = ndimage.label(above, structure=_EIGHT)
        if n:
            size = np.bincount(lab.ravel(), minlength=n + 1)
            small = size < int(min_footprint_area)
            small[0] = False
            above &= ~small[lab]
            keep = np.flatnonzero(~small)
            relabel = np.zeros(n + 1, dtype=np.int64)
            relabel[keep[1:]] = np.arange(1, keep.size) + n_components
            components = np.where(above, relabel[lab], components)
            n_components += keep.size - 1
        if grow > 0 and above.any():
            grown = ndimage.binary_dilation(above, structure=np.ones((2 * grow + 1,) * 2, bool))
        else:
            grown = above
        glab, gn = ndimage.label(grown, structure=_EIGHT)
        counts["positive" if s > 0 else "negative"] = int(gn)
        if gn == 0:
            continue
        ids = np.where(glab > 0, glab + next_id - 1, 0)
        if s > 0:
            labels = np.where(ids > 0, ids, labels)
        else:
            neg_labels = ids
            labels = np.where((labels == 0) & (ids > 0), ids, labels)
        areas.extend(np.bincount(glab[above], minlength=gn + 1)[1:].tolist())
        rows, cols = _peaks(value, above, max(1, int(peak_radius)))
        parts.append((rows, cols, np.full(rows.size, s), ids[rows, cols]))
        above_all |= above
        next_id += gn
    if parts:
        rows = np.concatenate([p[0] for p in parts]).astype(np.int64)
        cols = np.concatenate([p[1] for p in parts]).astype(np.int64)
        sign = np.concatenate([p[2] for p in parts]).astype(np.int64)
        fp = np.concatenate([p[3] for p in parts]).astype(np.int64)
    else:
        rows = cols = sign = fp = np.zeros(0, dtype=np.int64)
    peak = snr[rows, cols] if rows.size else np.zeros(0)
    order = np.lexsort((cols, rows, -np.abs(peak)))
    return Detections(col=cols[order], row=rows[order], peak_snr=peak[order],
                      sign=sign[order], footprint=fp[order], labels=labels,
                      negative_labels=neg_labels, above=above_all, components=components,
                      area=np.asarray(areas, dtype=np.int64), n_footprints=counts)


def reject_peaks(
    detections: Detections, difference: Exposure, planes: Sequence[str]
) -> tuple[Detections, dict[str, int]]:
    """Drop peaks whose pixel carries any of ``planes``; count the drops per plane.

    Returns the kept detections and ``{plane: n}`` (a peak on two planes counts under
    both) plus ``"total"``.
    """
    mask = difference.mask[detections.row, detections.col]
    drop = np.zeros(mask.shape, dtype=bool)
    counts: dict[str, int] = {}
    for plane in planes:
        bits = difference.plane_bitmask([plane])
        hit = (mask & bits) != 0 if bits else np.zeros(mask.shape, dtype=bool)
        counts[plane] = int(hit.sum())
        drop |= hit
    counts["total"] = int(drop.sum())
    return detections.subset(~drop), counts


def footprint_flags(
    detections: Detections, difference: Exposure, planes: Sequence[str]
) -> np.ndarray:
    """Flag bits (int64) per footprint id from the mask planes under it.

    Bit ``FLAG_BITS[plane]`` of entry ``id`` is set when ``plane`` is set on any pixel
    of grown footprint ``id`` (positive and negative footprints both own pixels where
    they overlap). Planes absent from the difference are never set.
    """
    n = detections.area.size
    out = np.zeros(n, dtype=np.int64)
    if n <= 1:
        return out
    index = np.arange(1, n)
    for plane in planes:
        bits = difference.plane_bitmask([plane])
        if not bits:
            continue
        hit = ((difference.mask & bits) != 0).astype(np.int8)
        for lab in (detections.labels, detections.negative_labels):
            present = np.asarray(ndimage.maximum(hit, labels=lab, index=index)) > 0
            out[1:] |= np.where(present, 1 << FLAG_BITS[plane], 0)
    return out


def component_shapes(detections: Detections, snr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Axis ratio and major-axis σ (px) of each connected above-threshold component.

    Second moments of the component's pixels weighted by :math:`|\\nu|`, plus 1/12 px²
    (the pixel box) on the diagonal; axis ratio :math:`\\sqrt{\\lambda_{max}/\\lambda_{min}}`
    and :math:`\\sqrt{\\lambda_{max}}` of their eigenvalues, indexed by component id
    (index 0 unused). Components are taken before growing, so two sources whose grown
    footprints merged still measure round; a streak is one long component.
    """
    lab = detections.components
    n = int(lab.max()) + 1
    rows, cols = np.nonzero(lab)
    lab = lab[rows, cols]
    w = np.abs(snr[rows, cols])

    def total(v):
        return np.bincount(lab, weights=v, minlength=n)

    s0 = np.maximum(total(w), 1e-300)
    mx, my = total(w * cols) / s0, total(w * rows) / s0
    dx, dy = cols - mx[lab], rows - my[lab]
    ixx = total(w * dx * dx) / s0 + 1.0 / 12.0
    iyy = total(w * dy * dy) / s0 + 1.0 / 12.0
    ixy = total(w * dx * dy) / s0
    half_tr, root = 0.5 * (ixx + iyy), np.sqrt(0.25 * (ixx - iyy) ** 2 + ixy**2)
    lmax, lmin = half_tr + root, np.maximum(half_tr - root, 1e-12)
    return np.sqrt(lmax / lmin), np.sqrt(lmax)
