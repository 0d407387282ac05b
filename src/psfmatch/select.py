"""Kernel-candidate selection: stamps, mask checks, S/N cut, cap and spatial cells.

Pure arrays in, dicts of numpy columns out (no file I/O). The rules follow ip_diffim's
``makeCandidateList`` / ``_sourceSelector`` (docs/candidates.md#selection) and afw's
``SpatialCellSet`` (docs/candidates.md#cells):

* stamp: the inclusive parent box ``[round(x) - kernel_size, round(x) + kernel_size]``
  (same in y) with ``round(v) = floor(v + 0.5)``, i.e. ``2 kernel_size + 1`` square;
* region: template bbox ∩ science bbox; cells of ``size_cell_x × size_cell_y`` from the
  region minimum, the last column/row extended to the region maximum, numbered row by
  row (``cell = cell_y * nx + cell_x``);
* a candidate belongs to the cell containing ``(floor(x + 0.5), floor(y + 0.5))``.

Rejected candidates are kept (``status = "REJECTED"`` with a ``reason``), so a QA table
can show why each detection was dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from psfmatch.errors import PsfMatchError
from psfmatch.exposure import Exposure

__all__ = [
    "REJECTION_REASONS",
    "SelectionError",
    "check_overlap",
    "common_region",
    "cell_grid",
    "cut_stamps",
    "data_overlap",
    "select_candidates",
]

log = logging.getLogger("psfmatch.select")

#: The reason of detections beyond ``detection.max_candidates`` (the faintest).
OVER_MAX_CANDIDATES = "over_max_candidates"
#: Reason prefixes in order of the checks.
REJECTION_REASONS = ("outside_template", "outside_science", "bad_mask", "low_snr",
                     OVER_MAX_CANDIDATES)

_REQUIRED = ("id", "x", "y", "flux", "snr")
_CHUNK_PIXELS = 8_000_000  # stamp pixels per chunk of the mask check


class SelectionError(PsfMatchError, ValueError):
    """Candidate columns or selection options are invalid."""


def _round_half_up(v: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)


def _cell_counts(bbox: Sequence[int], size_cell_x: int, size_cell_y: int) -> tuple[int, int]:
    if int(size_cell_x) < 1 or int(size_cell_y) < 1:
        msg = (f"cell sizes must be >= 1, got size_cell_x={size_cell_x!r}, "
               f"size_cell_y={size_cell_y!r}")
        raise SelectionError(msg)
    x0, y0, x1, y1 = (int(v) for v in bbox)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    if width < 1 or height < 1:
        return 0, 0
    return -(-width // int(size_cell_x)), -(-height // int(size_cell_y))


def data_overlap(template: Exposure, science: Exposure) -> tuple[int, int, int, int] | None:
    """Inclusive parent bbox of the pixels where both images have data, or None.

    A pixel has data when its image value is finite and ``NO_DATA`` is not set. The two
    exposures must be on the same pixel grid (after warping); only their common bbox
    is considered.
    """
    x0 = max(template.bbox[0], science.bbox[0])
    y0 = max(template.bbox[1], science.bbox[1])
    x1 = min(template.bbox[2], science.bbox[2])
    y1 = min(template.bbox[3], science.bbox[3])
    if x1 < x0 or y1 < y0:
        return None
    good = np.ones((y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
    for exp in (template, science):
        ex0, ey0 = exp.xy0
        sl = (slice(y0 - ey0, y1 - ey0 + 1), slice(x0 - ex0, x1 - ex0 + 1))
        no_data = exp.plane_bitmask(["NO_DATA"]) if "NO_DATA" in exp.mask_planes else 0
        good &= np.isfinite(exp.image[sl]) & ((exp.mask[sl] & no_data) == 0)
    rows, cols = np.flatnonzero(good.any(axis=1)), np.flatnonzero(good.any(axis=0))
    if rows.size == 0:
        return None
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]), y0 + int(rows[-1])


def check_overlap(
    template: Exposure, science: Exposure, size_cell_x: int, size_cell_y: int
) -> None:
    """Refuse a pair whose common area with data is smaller than one spatial cell.

    Raises
    ------
    SelectionError
        Naming the common area (or its absence) and the cell size.
    """
    box = data_overlap(template, science)
    width, height = (0, 0) if box is None else (box[2] - box[0] + 1, box[3] - box[1] + 1)
    if width < size_cell_x or height < size_cell_y:
        where = ("no pixel" if box is None else
                 f"only {width} x {height} pixels (x {box[0]}..{box[2]}, y {box[1]}..{box[3]})")
        msg = (f"template and science share {where} with data, less than one kernel cell "
               f"(psf_match.sizeCellX={size_cell_x}, sizeCellY={size_cell_y}); "
               f"not enough area to fit a kernel")
        raise SelectionError(msg)


def common_region(template: Exposure, science: Exposure) -> list[int]:
    """The region of the spatial model: template bbox ∩ science bbox (inclusive parent)."""
    t, s = template.bbox, science.bbox
    return [max(t[0], s[0]), max(t[1], s[1]), min(t[2], s[2]), min(t[3], s[3])]


def cell_grid(bbox: Sequence[int], size_cell_x: int, size_cell_y: int) -> np.ndarray:
    """Inclusive boxes of the spatial cells covering ``bbox`` (afw ``SpatialCellSet``).

    Parameters
    ----------
    bbox : (int, int, int, int)
        Inclusive region ``(min_x, min_y, max_x, max_y)``.
    size_cell_x, size_cell_y : int
        Nominal cell size (px); the last column/row extends to the region maximum.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, 4)`` int64 rows ``(x0, y0, x1, y1)``, row ``cy * nx + cx``; empty
        ``(0, 4)`` for an empty region.

    Raises
    ------
    SelectionError
        If a cell size is < 1.
    """
    nx, ny = _cell_counts(bbox, size_cell_x, size_cell_y)
    if nx == 0:
        return np.zeros((0, 4), dtype=np.int64)
    x0, y0, x1, y1 = (int(v) for v in bbox)
    cx0 = x0 + np.arange(nx, dtype=np.int64) * int(size_cell_x)
    cx1 = np.append(cx0[1:] - 1, x1)
    cy0 = y0 + np.arange(ny, dtype=np.int64) * int(size_cell_y)
    cy1 = np.append(cy0[1:] - 1, y1)
    gx0, gy0 = np.meshgrid(cx0, cy0)
    gx1, gy1 = np.meshgrid(cx1, cy1)
    return np.stack([gx0.ravel(), gy0.ravel(), gx1.ravel(), gy1.ravel()], axis=1)


def cut_stamps(
    exposure: Exposure,
    x0: np.ndarray | Sequence[int],
    y0: np.ndarray | Sequence[int],
    x1: np.ndarray | Sequence[int],
    y1: np.ndarray | Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, variance and mask stacks for equal-size inclusive parent boxes.

    Parameters
    ----------
    exposure : Exposure
        Source of the pixels.
    x0, y0, x1, y1 : array_like of int
        Inclusive parent boxes; all must have the same size and lie inside the exposure.

    Returns
    -------
    image, variance, mask : numpy.ndarray
        Stacks of shape ``(n, h, w)`` (copies; float32, float32, int32).

    Raises
    ------
    ValueError
        If the boxes differ in size, are empty, or any lies (partly) outside the
        exposure (the first offending box is named).
    """
    bx0, by0, bx1, by1 = (np.atleast_1d(np.asarray(v)).astype(np.int64) for v in (x0, y0, x1, y1))
    if not bx0.shape == by0.shape == bx1.shape == by1.shape or bx0.ndim != 1:
        shapes = [a.shape for a in (bx0, by0, bx1, by1)]
        msg = f"box arrays must be 1-D of equal length, got {shapes}"
        raise ValueError(msg)
    n = bx0.size
    if n == 0:
        empty = np.zeros((0, 0, 0))
        return (empty.astype(np.float32), empty.astype(np.float32), empty.astype(np.int32))
    widths, heights = bx1 - bx0 + 1, by1 - by0 + 1
    if np.any(widths != widths[0]) or np.any(heights != heights[0]) or widths[0] < 1 \
            or heights[0] < 1:
        msg = (f"stamps must be non-empty and of equal size, got widths "
               f"{sorted(set(widths.tolist()))} and heights {sorted(set(heights.tolist()))}")
        raise ValueError(msg)
    ex0, ey0, ex1, ey1 = exposure.bbox
    outside = (bx0 < ex0) | (by0 < ey0) | (bx1 > ex1) | (by1 > ey1)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        msg = (f"{int(outside.sum())} stamp(s) outside the exposure bbox {exposure.bbox}, "
               f"first: ({bx0[k]}, {by0[k]}, {bx1[k]}, {by1[k]})")
        raise ValueError(msg)
    rows = (by0 - ey0)[:, None, None] + np.arange(heights[0])[None, :, None]
    cols = (bx0 - ex0)[:, None, None] + np.arange(widths[0])[None, None, :]
    return exposure.image[rows, cols], exposure.variance[rows, cols], exposure.mask[rows, cols]


def _stamp_mask_or(exposure: Exposure, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
                   y1: np.ndarray) -> np.ndarray:
    """Bitwise OR of the mask over each stamp (boxes inside the exposure), chunked."""
    out = np.zeros(x0.size, dtype=np.int64)
    if x0.size == 0:
        return out
    side = int((x1[0] - x0[0] + 1) * (y1[0] - y0[0] + 1))
    step = max(1, _CHUNK_PIXELS // side)
    for s in range(0, x0.size, step):
        sl = slice(s, s + step)
        ex0, ey0 = exposure.bbox[:2]
        h, w = int(y1[0] - y0[0] + 1), int(x1[0] - x0[0] + 1)
        rows = (y0[sl] - ey0)[:, None, None] + np.arange(h)[None, :, None]
        cols = (x0[sl] - ex0)[:, None, None] + np.arange(w)[None, None, :]
        out[sl] = np.bitwise_or.reduce(exposure.mask[rows, cols], axis=(1, 2))
    return out


def _inside(bbox: Sequence[int], x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
            y1: np.ndarray) -> np.ndarray:
    bx0, by0, bx1, by1 = bbox
    return (x0 >= bx0) & (y0 >= by0) & (x1 <= bx1) & (y1 <= by1)


def select_candidates(
    candidates: Mapping[str, np.ndarray],
    template: Exposure,
    science: Exposure,
    *,
    kernel_size: int,
    bad_mask_planes: Sequence[str] = ("NO_DATA", "EDGE", "SAT"),
    min_snr: float = 10.0,
    max_candidates: int = 1000,
    size_cell_x: int = 128,
    size_cell_y: int = 128,
) -> dict[str, np.ndarray]:
    """Attach stamps, acceptance status, spatial cell and in-cell rank to candidates.

    Checks, in order (the first failing one names the reason): stamp inside the
    template bbox (``"outside_template"``), inside the science bbox
    (``"outside_science"``), no ``bad_mask_planes`` bit in either image's stamp
    (``"bad_mask:template:SAT,science:NO_DATA"``, listing every plane found, template
    first), ``snr >= min_snr`` (``"low_snr"``; NaN fails), and finally, if more than
    ``max_candidates`` pass, only the highest-``snr`` ones (ties by ``id``) are kept
    (``"over_max_candidates"``).

    Parameters
    ----------
    candidates : mapping of str to array_like
        Equal-length columns including ``id``, ``x``, ``y`` (parent), ``flux`` and
        ``snr`` (e.g. :func:`psfmatch.detect.detect_candidates` output). Every column is
        passed through.
    template, science : Exposure
        The two images (their bboxes define the region).
    kernel_size : int
        Stamp half width (px): stamps are ``2 kernel_size + 1`` square.
    bad_mask_planes : sequence of str
        Planes that reject a stamp (planes an exposure does not define are ignored).
    min_snr : float
        Minimum ``snr``.
    max_candidates : int
        Cap on accepted candidates (> 0), or -1 for no cap.
    size_cell_x, size_cell_y : int
        Spatial cell size (px).

    Returns
    -------
    dict of str to numpy.ndarray
        Every input row and column plus ``stamp_x0``, ``stamp_y0``, ``stamp_x1``,
        ``stamp_y1`` (int64, inclusive), ``status`` (``"OK"``/``"REJECTED"``),
        ``reason`` (``""`` when OK), ``cell``, ``cell_x``, ``cell_y`` (int64, -1 outside
        the region) and ``rank`` (int64; 0 = highest ``flux`` among the OK candidates of
        its cell, ties by ``id``; -1 when rejected).

    Raises
    ------
    SelectionError
        If a required column is missing, columns differ in length, or an option is out
        of range.
    """
    missing = [c for c in _REQUIRED if c not in candidates]
    if missing:
        msg = f"candidates lack column(s) {missing}; got {sorted(candidates)}"
        raise SelectionError(msg)
    cols = {k: np.asarray(v) for k, v in candidates.items()}
    lengths = {k: v.shape[0] if v.ndim else -1 for k, v in cols.items()}
    n = lengths["x"]
    if any(length != n for length in lengths.values()):
        raise SelectionError(f"candidate columns differ in length: {lengths}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int | np.integer) \
            or kernel_size < 0:
        raise SelectionError(f"kernel_size must be a non-negative integer, got {kernel_size!r}")
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, int | np.integer) \
            or not (max_candidates > 0 or max_candidates == -1):
        raise SelectionError(f"max_candidates must be > 0 or -1, got {max_candidates!r}")
    if not np.isfinite(min_snr):
        raise SelectionError(f"min_snr must be finite, got {min_snr!r}")

    x = cols["x"].astype(np.float64)
    y = cols["y"].astype(np.float64)
    ids = cols["id"]
    flux = cols["flux"].astype(np.float64)
    snr = cols["snr"].astype(np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    xr = _round_half_up(np.where(finite, x, 0.0))
    yr = _round_half_up(np.where(finite, y, 0.0))
    k = int(kernel_size)
    sx0, sx1, sy0, sy1 = xr - k, xr + k, yr - k, yr + k

    reason = np.full(n, "", dtype=object)
    in_t = finite & _inside(template.bbox, sx0, sy0, sx1, sy1)
    reason[~in_t] = "outside_template"
    in_s = _inside(science.bbox, sx0, sy0, sx1, sy1)
    reason[in_t & ~in_s] = "outside_science"
    todo = np.flatnonzero(in_t & in_s)
    if todo.size:
        found = []
        for role, exp in (("template", template), ("science", science)):
            ored = _stamp_mask_or(exp, sx0[todo], sy0[todo], sx1[todo], sy1[todo])
            planes = [p for p in bad_mask_planes if p in exp.mask_planes]
            found.extend((f"{role}:{p}", (ored & (1 << exp.mask_planes[p])) != 0)
                         for p in planes)
        for j, i in enumerate(todo):
            names = [name for name, hit in found if hit[j]]
            if names:
                reason[i] = "bad_mask:" + ",".join(names)
    ok = reason == ""
    low = ok & ~(snr >= float(min_snr))
    reason[low] = "low_snr"
    ok &= ~low
    if max_candidates > 0 and ok.sum() > max_candidates:
        idx = np.flatnonzero(ok)
        order = idx[np.lexsort((ids[idx], -snr[idx]))]
        reason[order[max_candidates:]] = OVER_MAX_CANDIDATES
        ok[order[max_candidates:]] = False

    # spatial cells on the template ∩ science region
    tb, sb = template.bbox, science.bbox
    region = (max(tb[0], sb[0]), max(tb[1], sb[1]), min(tb[2], sb[2]), min(tb[3], sb[3]))
    ncx, ncy = _cell_counts(region, size_cell_x, size_cell_y)
    in_region = finite & (xr >= region[0]) & (xr <= region[2]) & (yr >= region[1]) \
        & (yr <= region[3])
    cell_x = np.where(in_region, np.minimum((xr - region[0]) // int(size_cell_x), ncx - 1), -1)
    cell_y = np.where(in_region, np.minimum((yr - region[1]) // int(size_cell_y), ncy - 1), -1)
    cell = np.where(in_region, cell_y * ncx + cell_x, -1).astype(np.int64)

    rank = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(ok)
    if idx.size:
        order = idx[np.lexsort((ids[idx], -flux[idx], cell[idx]))]
        c = cell[order]
        first = np.r_[0, np.flatnonzero(np.diff(c)) + 1]
        starts = np.repeat(first, np.diff(np.r_[first, c.size]))
        rank[order] = np.arange(c.size) - starts

    out = dict(cols)
    out.update({
        "stamp_x0": sx0, "stamp_y0": sy0, "stamp_x1": sx1, "stamp_y1": sy1,
        "status": np.where(ok, "OK", "REJECTED").astype(str),
        "reason": np.array(reason.tolist(), dtype=str) if n else np.zeros(0, dtype="<U1"),
        "cell": cell, "cell_x": cell_x.astype(np.int64), "cell_y": cell_y.astype(np.int64),
        "rank": rank,
    })
    if n == 0:
        out["status"] = np.zeros(0, dtype="<U8")
    counts = {r: int(sum(1 for s in reason if s.split(":")[0] == r)) for r in REJECTION_REASONS}
    log.info("selected %d of %d candidates (kernel_size %d, %d cells of %dx%d px); "
             "rejected: %s", int(ok.sum()), n, k, ncx * ncy, size_cell_x, size_cell_y,
             ", ".join(f"{r} {c}" for r, c in counts.items()))
    return out
