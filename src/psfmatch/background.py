"""A smooth sky background from sigma-clipped means on a coarse mesh (numpy only).

:func:`mesh_background` divides the image into ``box``×``box`` cells and estimates one
sky level per cell, then interpolates between cell centres:

1. per cell, the pixels not flagged ``bad`` and finite are sorted once; a cell with more
   than ``max_bad_fraction`` of its nominal ``box²`` pixels unusable (masked, non-finite,
   or off the image edge) gets no estimate;
2. ``sigma``-clipping about the median, at most ``maxiters`` times: each pass keeps, of
   the pixels kept so far, those with ``|x − median| ≤ sigma·std`` (median and population
   std of the pixels kept so far), as astropy's ``sigma_clip`` along an axis does; then
   the mean of what is kept. On the sorted pixels every kept set is a contiguous run, so
   medians are two look-ups and means and variances come from prefix sums;
3. cells without an estimate take that of the nearest cell with one; a 3×3 median filter
   of the mesh (edge cells repeated beyond the mesh) removes cells biased by a bright
   star's wings;
4. bilinear interpolation between cell centres (constant beyond the outermost centres),
   as two small matrix products.

The estimator of photutils' ``Background2D`` with ``MeanBackground`` and a 3σ clip, with
these differences: a cell is dropped for the pixels it lacks *before* clipping (photutils
counts after clipping, so it also drops cells where a bright star made the clip remove
over 10 %: here those keep their clipped mean); cells without an estimate are filled from
the nearest cell; the median filter repeats the edge cells where photutils ignores cells
beyond the mesh; and the interpolation is bilinear, not a bicubic spline. On a 4096²
image it takes 0.6 s instead of 2 s per image (plus 2 s to import photutils and
astropy). Cells are processed one row of cells at a time, so memory beyond the returned
float64 image is a few arrays of ``box`` rows. The prefix sums lose precision when a cell
holds unflagged values ~10⁸ times its noise (a flagged or non-finite pixel is harmless).
"""

from __future__ import annotations

import numpy as np

__all__ = ["clipped_cell_means", "mesh_background"]


def clipped_cell_means(
    image: np.ndarray,
    bad: np.ndarray,
    box: int,
    *,
    sigma: float = 3.0,
    maxiters: int = 3,
    max_bad_fraction: float = 0.1,
) -> np.ndarray:
    """Sigma-clipped mean of each ``box``×``box`` cell (steps 1–2 of the module docstring).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Sky image (read only; any float dtype).
    bad : ndarray of bool, shape (ny, nx)
        Pixels to leave out (non-finite pixels are left out as well).
    box : int
        Cell side (px); cut to the image side if larger.

    Returns
    -------
    ndarray, shape (ceil(ny / box), ceil(nx / box))
        Cell means; NaN where a cell has too few usable pixels.
    """
    ny, nx = image.shape
    by, bx = min(box, ny), min(box, nx)
    my, mx = -(-ny // by), -(-nx // bx)
    mesh = np.full((my, mx), np.nan)
    for j in range(my):
        rows = slice(j * by, min((j + 1) * by, ny))
        h = rows.stop - rows.start
        block = np.full((h, mx * bx), np.nan, dtype=np.float64)
        block[:, :nx] = image[rows]
        block[:, :nx][bad[rows]] = np.nan
        block[np.isinf(block)] = np.nan  # unflagged ±inf: unusable, sorted last like NaN
        cells = np.sort(block.reshape(h, mx, bx).transpose(1, 0, 2).reshape(mx, h * bx), axis=1)
        n = np.count_nonzero(np.isfinite(cells), axis=1)
        ok = (n >= (1.0 - max_bad_fraction) * (by * bx)) & (n > 0)
        if not ok.any():
            continue
        mesh[j, ok] = _clipped_means(cells[ok], n[ok], sigma, maxiters)
    return mesh


def _clipped_means(cells: np.ndarray, n: np.ndarray, sigma: float, maxiters: int) -> np.ndarray:
    """Clipped means of sorted rows whose first ``n`` entries are finite (NaN after)."""
    index = np.arange(cells.shape[0])
    shift = cells[index, (n - 1) // 2]  # centre the sums: no cancellation in the variance
    centred = cells - shift[:, None]  # NaN stays NaN
    finite = np.isfinite(centred)
    zeroed = np.where(finite, centred, 0.0)
    s1 = np.zeros((cells.shape[0], cells.shape[1] + 1))
    s2 = np.zeros_like(s1)
    np.cumsum(zeroed, axis=1, out=s1[:, 1:])
    np.cumsum(zeroed * zeroed, axis=1, out=s2[:, 1:])
    ordered = np.where(finite, centred, np.inf)  # NaN never counts as inside a bound
    lo, hi = np.zeros_like(n), n.copy()
    for _ in range(maxiters):
        k = hi - lo
        median = 0.5 * (centred[index, lo + (k - 1) // 2] + centred[index, lo + k // 2])
        mean = (s1[index, hi] - s1[index, lo]) / k
        std = np.sqrt(np.maximum((s2[index, hi] - s2[index, lo]) / k - mean * mean, 0.0))
        # the kept set only shrinks: a pixel clipped in one pass does not come back
        new_lo = np.maximum(
            np.count_nonzero(ordered < (median - sigma * std)[:, None], axis=1), lo)
        new_hi = np.minimum(
            np.count_nonzero(ordered <= (median + sigma * std)[:, None], axis=1), hi)
        keep = new_hi > new_lo  # never an empty set (a cell of equal values keeps them)
        new_lo, new_hi = np.where(keep, new_lo, lo), np.where(keep, new_hi, hi)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    return (s1[index, hi] - s1[index, lo]) / (hi - lo) + shift


def _interpolation_matrix(n: int, box: int, m: int) -> np.ndarray:
    """``(n, m)`` weights of bilinear interpolation from ``m`` cell centres to ``n`` pixels."""
    position = np.clip((np.arange(n) + 0.5) / box - 0.5, 0.0, m - 1)
    first = np.floor(position).astype(np.int64)
    second = np.minimum(first + 1, m - 1)
    weight = position - first
    matrix = np.zeros((n, m))
    np.add.at(matrix, (np.arange(n), first), 1.0 - weight)
    np.add.at(matrix, (np.arange(n), second), weight)
    return matrix


def mesh_background(
    image: np.ndarray,
    bad: np.ndarray,
    box: int,
    *,
    sigma: float = 3.0,
    maxiters: int = 3,
    max_bad_fraction: float = 0.1,
) -> np.ndarray | float:
    """Background of ``image`` (module docstring); nothing is modified.

    Returns a float64 image of ``image``'s shape, or, when no cell has enough usable
    pixels, the median of the usable pixels (0.0 if there are none).
    """
    from scipy import ndimage

    mesh = clipped_cell_means(image, bad, box, sigma=sigma, maxiters=maxiters,
                              max_bad_fraction=max_bad_fraction)
    known = np.isfinite(mesh)
    if not known.any():
        usable = image[~bad & np.isfinite(image)]
        return float(np.median(usable)) if usable.size else 0.0
    if not known.all():
        nearest = ndimage.distance_transform_edt(~known, return_distances=False,
                                                 return_indices=True)
        mesh = mesh[tuple(nearest)]
    mesh = ndimage.median_filter(mesh, size=3, mode="nearest")
    ny, nx = image.shape
    rows = _interpolation_matrix(ny, min(box, ny), mesh.shape[0])
    cols = _interpolation_matrix(nx, min(box, nx), mesh.shape[1])
    return (rows @ mesh) @ cols.T
