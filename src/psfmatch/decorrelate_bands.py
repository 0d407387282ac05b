"""The decorrelation of :mod:`psfmatch.decorrelation`, applied one band of rows at a time.

:func:`psfmatch.decorrelation.decorrelate` fills the non-finite pixels of the difference
and of both variance planes (float64 copies of each), filters the whole image and
blends per-node results at full size: at 4096² several hundred MB per plane. Here the
same plan (:func:`~psfmatch.decorrelation.whitening_plan`) is applied to bands of rows
read with the filter's halo; per pixel the operations are those of the whole-image
function, with the fill values (means of the finite pixels of each plane over the whole
image) given, so the result equals it up to the float64 rounding of the band's
transforms (~1e-16 relative, below the float32 output's resolution).

No file I/O happens here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from psfmatch.decorrelation import WhiteningPlan, node_weights
from psfmatch.modes import CONVOLVE_SCIENCE
from psfmatch.whitening import DecorrelationFilter, filter_region

__all__ = ["BandWhitener", "finite_mean"]


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite ``values`` in float64, as ``fill_non_finite`` takes it (0 if none).

    ``values``: the finite values of a whole plane in row order (any float dtype); the
    sum is numpy's pairwise sum of the same float64 array, hence the same number.
    """
    data = np.asarray(values, dtype=np.float64)
    return float(data.mean()) if data.size else 0.0


class BandWhitener:
    """Whiten the bands of one difference image (shape, ``xy0``) with ``plan``.

    Parameters
    ----------
    plan : WhiteningPlan
        Filters and nodes (not skipped).
    shape, xy0 : tuple of int
        The whole image's ``(ny, nx)`` and parent origin.
    complete_variance : bool
        ``completeVarPlanePropagation``.
    norm : float or None
        convolveScience: the kernel sum the variance is divided by (squared).
    fills : dict
        ``image``, ``unconvolved``, ``convolved``: the means of the finite pixels of the
        difference image and of the two variance planes (:func:`finite_mean`).
    """

    def __init__(self, plan: WhiteningPlan, shape: tuple[int, int], xy0: tuple[int, int], *,
                 complete_variance: bool, norm: float | None, fills: dict[str, float]):
        self.plan, self.shape, self.xy0 = plan, tuple(shape), tuple(xy0)
        self.complete, self.norm, self.fills = bool(complete_variance), norm, dict(fills)
        ny, nx = self.shape
        self.wx = node_weights(np.arange(nx) + xy0[0], plan.nodes_x)
        self.wy = node_weights(np.arange(ny) + xy0[1], plan.nodes_y)
        sizes = [f.image_filter.shape[0] for f in plan.filters]
        if self.complete:
            sizes += [f.unconvolved_filter.shape[0] for f in plan.filters]
            sizes += [f.convolved_filter.shape[0] for f in plan.filters]
        #: Rows of halo a band needs above and below.
        self.halo = max(sizes) // 2

    def rows_needed(self, start: int, stop: int) -> tuple[int, int]:
        """Input rows ``(lo, hi)`` for the output rows ``start .. stop - 1`` (clipped)."""
        return max(0, start - self.halo), min(self.shape[0], stop + self.halo)

    def _blend(self, start: int, stop: int, lo: int,
               per_node: Callable[[DecorrelationFilter, slice, slice], np.ndarray | float]
               ) -> np.ndarray:
        """The whole-image blend restricted to rows ``start .. stop - 1``.

        ``per_node(filter, rows, cols)``: rows relative to the input band (first row
        ``lo``). Nodes are visited in the whole-image order, so every pixel sums the same
        terms in the same order.
        """
        nx = self.shape[1]
        plan = self.plan
        out = np.zeros((stop - start, nx))
        for j in range(len(plan.nodes_y)):
            idx = np.flatnonzero(self.wy[j] > 0)
            r0, r1 = max(int(idx[0]), start), min(int(idx[-1]) + 1, stop)
            if r0 >= r1:
                continue
            for i in range(len(plan.nodes_x)):
                cidx = np.flatnonzero(self.wx[i] > 0)
                cols = slice(int(cidx[0]), int(cidx[-1]) + 1)
                w = self.wy[j][r0:r1, None] * self.wx[i][None, cols]
                value = per_node(plan.filters[j * len(plan.nodes_x) + i],
                                 slice(r0 - lo, r1 - lo), cols)
                out[r0 - start : r1 - start, cols] += w * value
        return out

    def whiten(self, *, image: np.ndarray, unconvolved: np.ndarray, convolved: np.ndarray,
               difference_variance: np.ndarray, start: int, stop: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Whitened image and variance (float32) of rows ``start .. stop - 1``.

        ``image`` (the difference to filter, non-finite where it is not to be used),
        ``unconvolved`` and ``convolved`` (the variance planes of the unconvolved and
        convolved inputs) hold rows :meth:`rows_needed`; ``difference_variance`` rows
        ``start .. stop - 1``. image :math:`\\phi \\star D` (non-finite input pixels keep
        their values); variance :math:`V_{\\rm unconv}\\sum h_1^2 + V_{\\rm conv}\\sum h_2^2`
        (or the complete propagation), divided by ``norm²`` in convolveScience, and the
        difference's own variance where either is not finite.
        """
        lo, _ = self.rows_needed(start, stop)
        core = slice(start - lo, stop - lo)
        data = np.asarray(image, dtype=np.float64)
        bad = ~np.isfinite(data)
        if bad.any():
            data = np.where(bad, self.fills["image"], data)
        out_image = self._blend(start, stop, lo,
                                lambda f, r, c: filter_region(data, f.image_filter, r, c))
        bad_core = bad[core]
        out_image[bad_core] = np.asarray(image)[core][bad_core]
        v_un = _filled(unconvolved, self.fills["unconvolved"])
        v_co = _filled(convolved, self.fills["convolved"])
        if self.complete:
            variance = self._blend(start, stop, lo, lambda f, r, c: (
                filter_region(v_un, f.unconvolved_filter**2, r, c)
                + filter_region(v_co, f.convolved_filter**2, r, c)))
        else:
            variance = v_un[core] * self._blend(start, stop, lo,
                                                lambda f, r, c: f.unconvolved_gain) \
                + v_co[core] * self._blend(start, stop, lo, lambda f, r, c: f.convolved_gain)
        if self.plan.info["mode"] == CONVOLVE_SCIENCE:
            variance = variance / self.norm**2
        bad_var = ~np.isfinite(difference_variance) | ~np.isfinite(variance)
        variance[bad_var] = difference_variance[bad_var]
        return out_image.astype(np.float32), variance.astype(np.float32)


def _filled(plane: np.ndarray, fill: float) -> np.ndarray:
    """``plane`` as float64 with its non-finite pixels set to ``fill``."""
    data = np.asarray(plane, dtype=np.float64)
    bad = ~np.isfinite(data)
    return np.where(bad, fill, data) if bad.any() else data
