r"""Resampling engine of the warp: kernels, footprint ORs, the band loop.

Given any transform from destination array pixels to template array pixels (the WCS
pair of :mod:`psfmatch.warp`, or a pixel-to-pixel map), :func:`resample_onto` computes
the warped image, variance and mask.

Resampling
----------
With :math:`i_0 = \lfloor x_s \rfloor`, :math:`f_x = x_s - i_0 \in [0, 1)` (same for
:math:`y`), the kernel taps are the source columns :math:`i_0 + k`:

* Lanczos-:math:`n`: :math:`k = -(n-1), \dots, n` (:math:`2n` taps, afw's centre index
  :math:`n-1`), :math:`w_k = L_n(f_x - k)`,
  :math:`L_n(t) = \operatorname{sinc}(t)\operatorname{sinc}(t/n)` for :math:`|t| < n`;
* bilinear: :math:`k = 0, 1`, :math:`w = (1 - f_x, f_x)`.

The 2-D kernel is separable, :math:`w_{kl} = w^x_k w^y_l`, and normalised to unit sum for
each output pixel (afw divides by the kernel sum). Then

.. math::

    I_d = A \sum_{kl} w_{kl} I_s[j_0 + l, i_0 + k], \qquad
    V_d = A^2 \sum_{kl} w_{kl}^2 V_s[j_0 + l, i_0 + k],

where :math:`A = |\det \partial(x_s, y_s) / \partial(x_d, y_d)|` is the *relative area*
(template pixels per destination pixel), which makes the warp conserve flux rather than
surface brightness, as afw does (:math:`A = 1` for equal pixel scales). The variance
formula ignores the covariance the interpolation introduces between neighbouring output
pixels, exactly as afw does: the per-pixel variance is correct, but the noise of the
warped image is correlated (and :math:`V_d < V_s` for a fractional shift).

Mask
----
The output mask is the OR of the template mask bits over the *mask-kernel* footprint (the
taps with non-zero mask-kernel weight; default bilinear, i.e. the up-to-4 nearest
pixels), plus the bits of the ``grow_full_mask`` planes ORed over the full
*image-kernel* footprint (non-zero weights; 36 pixels for Lanczos-3). This is afw's
``(OR over warping kernel) & growFullMask | (OR over mask kernel)``.

Missing data
------------
A destination pixel whose image-kernel footprint is not entirely inside the template, or
whose non-zero-weight taps touch a template pixel flagged ``NO_DATA`` or with a non-finite
image or variance value, gets image NaN, variance :math:`+\infty` and the ``NO_DATA`` bit
(the plane is added to ``mask_planes`` if the template lacks it).

No file I/O happens here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from psfmatch.cpus import available_cpus
from psfmatch.errors import WarpError
from psfmatch.exposure import Exposure
from psfmatch.interpolation import KERNEL_NAMES, InterpolationKernel, resampling_kernel

__all__ = [
    "KERNEL_NAMES",
    "PixelTransform",
    "Resampled",
    "copy_region",
    "coverage",
    "parse_shape",
    "resample_onto",
    "resampling_kernel",
]

log = logging.getLogger("psfmatch.warp")

#: Number of destination pixels processed together (bounds the working memory: about
#: 30 arrays of this length plus the output).
_BAND_PIXELS = 1 << 16

#: Most worker threads used for the row bands (``PSFMATCH_WARP_THREADS`` overrides).
_MAX_THREADS = 4

_NO_DATA = "NO_DATA"
_BAD_FLAG = np.uint32(1 << 31)  # internal: "tap is NaN/inf/NO_DATA" (never a mask bit)


def _threads() -> int:
    env = os.environ.get("PSFMATCH_WARP_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(_MAX_THREADS, available_cpus()))


# --------------------------------------------------------------------------- positions
class PixelTransform:
    """Destination array pixel -> template array pixel: ``__call__(x, y) -> (xs, ys)``.

    Subclasses define ``__call__`` (vectorised over arrays of any shape);
    :meth:`with_area` adds the relative area.
    """

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def with_area(
        self, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions and relative area ``|det J|`` (central differences, step ±0.5 px)."""
        h = 0.5
        # layout: 0 centre, 1 y+h, 2 x+h, 3 x-h, 4 y-h
        xx = np.stack([x, x, x + h, x - h, x])
        yy = np.stack([y, y + h, y, y, y - h])
        xs, ys = self(xx, yy)
        dxs_dx = (xs[2] - xs[3]) / (2 * h)
        dys_dx = (ys[2] - ys[3]) / (2 * h)
        dxs_dy = (xs[1] - xs[4]) / (2 * h)
        dys_dy = (ys[1] - ys[4]) / (2 * h)
        area = np.abs(dxs_dx * dys_dy - dxs_dy * dys_dx)
        return xs[0], ys[0], area



def _node_axis(n: int, step: int) -> np.ndarray:
    """Exact-evaluation nodes: every ``step`` pixels plus the last pixel."""
    if step <= 1:
        return np.arange(n, dtype=np.float64)
    if n == 1:  # a second node (one pixel beyond) keeps the interpolation well defined
        return np.array([0.0, 1.0])
    nodes = np.arange(0, n, step, dtype=np.float64)
    if nodes[-1] != n - 1:
        nodes = np.append(nodes, float(n - 1))
    return nodes


def _lin_weights(nodes: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval index and fraction for linear interpolation of ``at`` between ``nodes``."""
    if nodes.size == 1:
        return np.zeros(at.size, dtype=np.intp), np.zeros(at.size)
    i = np.clip(np.searchsorted(nodes, at, side="right") - 1, 0, nodes.size - 2)
    f = (at - nodes[i]) / (nodes[i + 1] - nodes[i])
    return i, f


class _PositionField:
    """Template positions and relative area for rows of the destination grid."""

    def __init__(self, transform: PixelTransform, shape: tuple[int, int], interp_length: int):
        self.transform = transform
        self.ny, self.nx = shape
        self.exact = interp_length <= 1
        if not self.exact:
            self.ry = _node_axis(self.ny, interp_length)
            self.rx = _node_axis(self.nx, interp_length)
            gx, gy = np.meshgrid(self.rx, self.ry)
            self.grid = np.stack(transform.with_area(gx, gy))  # (3, nry, nrx)
            self.ix, self.fx = _lin_weights(self.rx, np.arange(self.nx, dtype=np.float64))

    def rows(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(xs, ys, area)``, each of shape ``(r1 - r0, nx)``."""
        rows = np.arange(r0, r1, dtype=np.float64)
        if self.exact:
            gx, gy = np.meshgrid(np.arange(self.nx, dtype=np.float64), rows)
            return self.transform.with_area(gx, gy)
        iy, fy = _lin_weights(self.ry, rows)
        g = self.grid[:, iy] * (1.0 - fy)[None, :, None] + self.grid[:, iy + 1] * fy[None, :, None]
        out = g[:, :, self.ix] * (1.0 - self.fx) + g[:, :, self.ix + 1] * self.fx
        return out[0], out[1], out[2]


# --------------------------------------------------------------------------- mask footprints
class _WindowOr:
    """OR of a uint32 source over the non-zero-weight taps of a kernel footprint.

    ``full[j, i]`` is the OR over rows ``j .. j + T - 1`` and columns ``i .. i + T - 1``
    (footprint anchored at its lower-left tap), so a destination pixel whose taps all have
    non-zero weight needs one gather. Pixels with zero-weight taps (an exactly integer
    fractional offset) are redone tap by tap.
    """

    def __init__(self, src: np.ndarray, kernel: InterpolationKernel) -> None:
        self.src = np.ascontiguousarray(src, dtype=np.uint32)
        self.kernel = kernel
        t = kernel.ntaps
        ny, nx = src.shape
        self.nx = nx
        full = np.zeros_like(self.src)
        if ny >= t and nx >= t:
            rows = self.src[:, : nx - t + 1].copy()
            for b in range(1, t):
                rows |= self.src[:, b : nx - t + 1 + b]
            win = rows[: ny - t + 1].copy()
            for a in range(1, t):
                win |= rows[a : ny - t + 1 + a]
            full[: ny - t + 1, : nx - t + 1] = win
        self.full = full.ravel()
        self.flat = self.src.ravel()

    def gather(
        self, i0: np.ndarray, j0: np.ndarray, wx: np.ndarray, wy: np.ndarray
    ) -> np.ndarray:
        lo = self.kernel.lo
        anchor = (j0 + lo) * self.nx + (i0 + lo)
        out = self.full.take(anchor)
        nzx = wx != 0
        nzy = wy != 0
        partial = np.flatnonzero(~(nzx.all(axis=0) & nzy.all(axis=0)))
        if partial.size:
            a = anchor[partial]
            res = np.zeros(partial.size, dtype=np.uint32)
            t = self.kernel.ntaps
            for ky in range(t):
                for kx in range(t):
                    use = nzy[ky, partial] & nzx[kx, partial]
                    res |= np.where(use, self.flat.take(a + ky * self.nx + kx), np.uint32(0))
            out[partial] = res
        return out


# --------------------------------------------------------------------------- resampling
@dataclass
class _Source:
    image: np.ndarray  # float32 flat, bad taps zeroed
    variance: np.ndarray  # float32 flat, bad taps zeroed
    nx: int
    ny: int
    mask_or: _WindowOr  # all mask bits, mask-kernel footprint
    grow_or: _WindowOr  # grow bits | _BAD_FLAG, image-kernel footprint
    grow_bits: np.uint32


def _resample(
    src: _Source, kern: InterpolationKernel, mkern: InterpolationKernel, xs: np.ndarray,
    ys: np.ndarray, area: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resample at flat positions; returns ``(inside, image, variance, mask, bad)``.

    ``image``, ``variance``, ``mask`` and ``bad`` have one entry per ``inside`` pixel.
    """
    t, lo = kern.ntaps, kern.lo
    big = 1.0e9
    with np.errstate(invalid="ignore"):
        fxs = np.floor(np.clip(np.nan_to_num(xs, nan=-big), -big, big))
        fys = np.floor(np.clip(np.nan_to_num(ys, nan=-big), -big, big))
    i0 = fxs.astype(np.int64)
    j0 = fys.astype(np.int64)
    inside = (
        (i0 + lo >= 0) & (i0 + lo + t <= src.nx) & (j0 + lo >= 0) & (j0 + lo + t <= src.ny)
        & np.isfinite(xs) & np.isfinite(ys)
    )
    sel = np.flatnonzero(inside)
    i0, j0 = i0[sel], j0[sel]
    fx = xs[sel] - fxs[sel]
    fy = ys[sel] - fys[sel]
    wx = kern.weights(fx)
    wy = kern.weights(fy)
    wx2 = np.square(wx)
    wy2 = np.square(wy)

    m = sel.size
    base = (j0 + lo) * src.nx + (i0 + lo)
    acc_i = np.zeros(m, dtype=np.float32)
    acc_v = np.zeros(m, dtype=np.float32)
    row_i = np.empty(m, dtype=np.float32)
    row_v = np.empty(m, dtype=np.float32)
    tmp_i = np.empty(m, dtype=np.float32)
    tmp_v = np.empty(m, dtype=np.float32)
    for ky in range(t):
        row_i.fill(0.0)
        row_v.fill(0.0)
        for kx in range(t):
            off = ky * src.nx + kx
            # a view starting at the tap offset: no per-tap index arithmetic needed
            # (every index is in bounds: mode="wrap" only skips numpy's bounds check)
            src.image[off:].take(base, out=tmp_i, mode="wrap")
            src.variance[off:].take(base, out=tmp_v, mode="wrap")
            np.multiply(tmp_i, wx[kx], out=tmp_i)
            np.add(row_i, tmp_i, out=row_i)
            np.multiply(tmp_v, wx2[kx], out=tmp_v)
            np.add(row_v, tmp_v, out=row_v)
        np.multiply(row_i, wy[ky], out=row_i)
        np.add(acc_i, row_i, out=acc_i)
        np.multiply(row_v, wy2[ky], out=row_v)
        np.add(acc_v, row_v, out=acc_v)
    a = area[sel].astype(np.float32)
    acc_i *= a
    acc_v *= a * a

    grow = src.grow_or.gather(i0, j0, wx, wy)
    bad = (grow & _BAD_FLAG) != 0
    mask = grow & src.grow_bits
    if mkern.lo != lo or mkern.ntaps != t:
        mask |= src.mask_or.gather(i0, j0, mkern.weights(fx), mkern.weights(fy))
    else:
        mask |= src.mask_or.gather(i0, j0, wx, wy)
    return inside, acc_i, acc_v, mask, bad


# --------------------------------------------------------------------------- helpers
def _with_no_data(template: Exposure) -> tuple[dict[str, int], int]:
    planes = dict(template.with_planes([_NO_DATA]).mask_planes)
    return planes, 1 << planes[_NO_DATA]


def parse_shape(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise WarpError(f"shape must be (ny, nx), got {shape!r}") from exc
    if ny <= 0 or nx <= 0:
        raise WarpError(f"shape must be positive, got {(ny, nx)}")
    return ny, nx


def copy_region(
    template: Exposure, shape: tuple[int, int], dx: int, dy: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int], int]:
    """Integer-offset copy: destination ``[y, x]`` = template ``[y + dy, x + dx]``."""
    ny, nx = shape
    tny, tnx = template.shape
    x_lo, x_hi = max(0, -dx), min(nx, tnx - dx)
    y_lo, y_hi = max(0, -dy), min(ny, tny - dy)
    if x_lo == 0 and y_lo == 0 and x_hi == nx and y_hi == ny:
        sl = np.s_[dy : dy + ny, dx : dx + nx]
        return (template.image[sl].copy(), template.variance[sl].copy(),
                template.mask[sl].copy(), dict(template.mask_planes), ny * nx)
    planes, no_data = _with_no_data(template)
    image = np.full(shape, np.nan, dtype=np.float32)
    variance = np.full(shape, np.inf, dtype=np.float32)
    mask = np.full(shape, no_data, dtype=np.int32)
    n = 0
    if x_hi > x_lo and y_hi > y_lo:
        dst = np.s_[y_lo:y_hi, x_lo:x_hi]
        src = np.s_[y_lo + dy : y_hi + dy, x_lo + dx : x_hi + dx]
        image[dst] = template.image[src]
        variance[dst] = template.variance[src]
        mask[dst] = template.mask[src]
        n = (x_hi - x_lo) * (y_hi - y_lo)
    return image, variance, mask, planes, n


def coverage(mask: np.ndarray, planes: dict[str, int]) -> float:
    if _NO_DATA not in planes:
        return 1.0
    return float(1.0 - np.count_nonzero(mask & (1 << planes[_NO_DATA])) / mask.size)


@dataclass(frozen=True)
class Resampled:
    """What :func:`resample_onto` returns.

    ``image``, ``variance``, ``mask`` on the destination grid and the mask ``planes``
    (the template's plus ``NO_DATA``); ``n_inside`` destination pixels got a value,
    ``n_geometric`` have their centre inside the template at all, ``area_min`` /
    ``area_max`` are the extreme relative areas of the pixels with a value.
    """

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    planes: dict[str, int]
    n_inside: int
    n_geometric: int
    area_min: float
    area_max: float


def resample_onto(
    template: Exposure,
    transform: PixelTransform,
    shape: tuple[int, int],
    *,
    kernel: InterpolationKernel,
    mask_kernel: InterpolationKernel,
    grow_planes: Iterable[str],
    interp_length: int,
) -> Resampled:
    """Resample ``template`` onto a ``shape`` grid through ``transform``.

    ``transform`` maps destination array pixels to template array pixels; it is evaluated
    exactly every ``interp_length`` pixels and interpolated bilinearly in between. Image,
    variance and mask follow the module docstring; the rows are processed in bands, on up
    to :func:`_threads` threads. The template is never modified.
    """
    ny, nx = shape
    kern, mkern = kernel, mask_kernel
    grow_planes = list(grow_planes)
    planes, no_data = _with_no_data(template)
    tny, tnx = template.shape
    grow_bits = np.uint32(template.plane_bitmask(grow_planes))
    img = np.asarray(template.image, dtype=np.float32)
    var = np.asarray(template.variance, dtype=np.float32)
    bad_src = ~(np.isfinite(img) & np.isfinite(var))
    if _NO_DATA in template.mask_planes:
        bad_src |= (template.mask & (1 << template.mask_planes[_NO_DATA])) != 0
    mask_u = template.mask.view(np.uint32)
    source = _Source(
        image=np.where(bad_src, np.float32(0), img).ravel(),
        variance=np.where(bad_src, np.float32(0), var).ravel(),
        nx=tnx, ny=tny,
        mask_or=_WindowOr(mask_u, mkern),
        grow_or=_WindowOr((mask_u & grow_bits) | np.where(bad_src, _BAD_FLAG, np.uint32(0)),
                          kern),
        grow_bits=grow_bits,
    )
    del bad_src

    out_img = np.full((ny, nx), np.nan, dtype=np.float32)
    out_var = np.full((ny, nx), np.inf, dtype=np.float32)
    out_mask = np.full((ny, nx), no_data, dtype=np.int32)
    field = _PositionField(transform, (ny, nx), interp_length)
    rows_per_band = max(1, _BAND_PIXELS // nx)
    out_img_flat = out_img.reshape(-1)
    out_var_flat = out_var.reshape(-1)
    out_mask_flat = out_mask.reshape(-1)

    def do_band(r0: int) -> tuple[int, float, float, int]:
        r1 = min(ny, r0 + rows_per_band)
        xs, ys, area = field.rows(r0, r1)
        with np.errstate(invalid="ignore"):  # pixel centres inside the template at all
            geo = int(np.count_nonzero((xs > -0.5) & (xs < tnx - 0.5)
                                       & (ys > -0.5) & (ys < tny - 0.5)))
        inside, vi, vv, vm, vbad = _resample(source, kern, mkern, xs.ravel(), ys.ravel(),
                                             area.ravel())
        flat = np.flatnonzero(inside)
        if flat.size == 0:
            return 0, math.inf, -math.inf, geo
        a = area.ravel()[flat]
        vi[vbad] = np.nan
        vv[vbad] = np.inf
        vm = vm.view(np.int32) | np.where(vbad, np.int32(no_data), np.int32(0))
        flat += r0 * nx  # bands write disjoint rows of the outputs
        out_img_flat[flat] = vi
        out_var_flat[flat] = vv
        out_mask_flat[flat] = vm
        return flat.size, float(a.min()), float(a.max()), geo

    starts = range(0, ny, rows_per_band)
    workers = min(_threads(), len(starts))
    if workers > 1:  # numpy releases the GIL in take and the arithmetic ufuncs
        with ThreadPoolExecutor(max_workers=workers) as pool:
            stats = list(pool.map(do_band, starts))
    else:
        stats = [do_band(r0) for r0 in starts]
    n_inside = sum(s[0] for s in stats)
    return Resampled(out_img, out_var, out_mask, planes, n_inside, sum(s[3] for s in stats),
                     min(s[1] for s in stats), max(s[2] for s in stats))
