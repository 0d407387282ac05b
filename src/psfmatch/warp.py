r"""Resample a template exposure onto the science pixel grid (afw ``warpExposure``).

Geometry
--------
Every WCS here maps 0-based *array* pixel indices ``(x, y)`` (array element ``[y, x]``)
to the sky, as a FITS header does; ``xy0`` is only carried along. For destination pixel
:math:`(x_d, y_d)` the template position is

.. math::

    (x_s, y_s) = W_T^{-1}\bigl(W_S(x_d, y_d)\bigr),

with :math:`W_S` the science WCS and :math:`W_T` the template WCS. As in afw, the
composite transform is evaluated exactly only every ``interp_length`` destination pixels
(and on the last row and column) and interpolated bilinearly in between; the interpolation
error is of order :math:`\tfrac18 L^2 \max|\partial^2 x_s|`, i.e. far below 10⁻³ pixel for
any astronomical WCS and ``L = 10``.

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

Pass-through
------------
When the composite transform is an integer translation within ``same_grid_tolerance``
pixels (checked on a grid of 17 × 17 destination points including the corners), the
template pixels are copied without resampling (bit-identical values; the template may be
larger and is cropped, and any destination pixel it does not cover is ``NO_DATA``).

No file I/O happens here.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from psfmatch.cpus import available_cpus
from psfmatch.errors import PsfMatchError
from psfmatch.exposure import Exposure

__all__ = [
    "KERNEL_NAMES",
    "WarpError",
    "warp_exposure",
]

log = logging.getLogger("psfmatch.warp")

#: Warping kernels afw's ``WarperConfig`` allows (``warpingKernelName``).
KERNEL_NAMES: tuple[str, ...] = ("bilinear", "lanczos3", "lanczos4", "lanczos5")

#: Number of destination pixels processed together (bounds the working memory: about
#: 30 arrays of this length plus the output).
_BAND_PIXELS = 1 << 16

#: Most worker threads used for the row bands (``PSFMATCH_WARP_THREADS`` overrides).
_MAX_THREADS = 4

#: Side of the pass-through check grid (points per axis, corners included).
_CHECK_POINTS = 17

_NO_DATA = "NO_DATA"
_BAD_FLAG = np.uint32(1 << 31)  # internal: "tap is NaN/inf/NO_DATA" (never a mask bit)


class WarpError(PsfMatchError, ValueError):
    """The template cannot be warped onto the science grid (WCS, overlap, kernel, args)."""


def _threads() -> int:
    env = os.environ.get("PSFMATCH_WARP_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(_MAX_THREADS, available_cpus()))


# --------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class _Kernel:
    """A separable interpolation kernel: ``ntaps`` taps at ``i0 + lo ... i0 + lo + ntaps - 1``."""

    name: str
    order: int  # Lanczos order n; 0 for bilinear

    @property
    def ntaps(self) -> int:
        return 2 if self.order == 0 else 2 * self.order

    @property
    def lo(self) -> int:
        return 0 if self.order == 0 else 1 - self.order

    def weights(self, frac: np.ndarray) -> np.ndarray:
        """Unit-sum 1-D weights, shape ``(ntaps, len(frac))``, float32, for ``frac`` in [0, 1).

        A tap has weight exactly 0 only where ``frac == 0`` (then the kernel is a copy of
        tap ``k = 0``); float32 is ample for interpolation weights (relative error 1e-7).
        """
        frac = np.asarray(frac, dtype=np.float64)
        if self.order == 0:
            w = np.empty((2, frac.size), dtype=np.float32)
            np.subtract(1.0, frac, out=w[0], casting="same_kind")
            w[1] = frac
            return w
        n = self.order
        k = np.arange(self.lo, self.lo + self.ntaps, dtype=np.float64)[:, None]
        # L_n(f - k) = n sin(pi (f - k)) sin(pi (f - k) / n) / (pi (f - k))^2 with
        # sin(pi (f - k)) = (-1)^k sin(pi f) and
        # sin(pi (f - k) / n) = sin(pi f / n) cos(pi k / n) - cos(pi f / n) sin(pi k / n).
        # The factor n sin(pi f) / pi^2 is common to all taps and cancels in the
        # normalisation, so it is dropped (f = 0, where it vanishes, is handled below).
        sign = np.where(k % 2 == 0, 1.0, -1.0)
        a = (sign * np.cos(np.pi * k / n)).astype(np.float32)
        b = (sign * np.sin(np.pi * k / n)).astype(np.float32)
        zero = frac == 0.0
        # keep (f - k)^2 non-zero in float32: tiny non-zero f (weights ~f^2 there), and f
        # just below 1 (which would round to 1.0); the clipping changes weights by < 1e-7
        f32 = np.clip(frac, 1e-12, 1.0 - 2.0**-24).astype(np.float32)
        s2 = np.sin(np.float32(np.pi / n) * f32)
        c2 = np.cos(np.float32(np.pi / n) * f32)
        x = f32 - k.astype(np.float32)
        np.multiply(x, x, out=x)
        w = s2 * a
        w -= c2 * b
        w /= x
        if np.any(zero):  # L_n(0) = 1, L_n(integer != 0) = 0: a pure copy of tap k = 0
            w[:, zero] = 0.0
            w[-self.lo, zero] = 1.0
        w /= w.sum(axis=0)
        return w


def _kernel(name: str, what: str) -> _Kernel:
    key = str(name).strip().lower()
    if key not in KERNEL_NAMES:
        msg = f"unknown {what} {name!r}; allowed: {', '.join(KERNEL_NAMES)}"
        raise WarpError(msg)
    return _Kernel(key, 0 if key == "bilinear" else int(key[len("lanczos"):]))


# --------------------------------------------------------------------------- geometry
def _check_wcs(wcs: Any, who: str) -> None:
    ok = (
        hasattr(wcs, "wcs")
        and getattr(wcs, "naxis", 0) == 2
        and getattr(wcs, "has_celestial", False)
        and wcs.wcs.lng >= 0
        and wcs.wcs.lat >= 0
    )
    if not ok:
        ctype = list(getattr(getattr(wcs, "wcs", None), "ctype", [])) or None
        msg = (f"{who} WCS is not a 2-axis celestial WCS (ctype={ctype}, "
               f"naxis={getattr(wcs, 'naxis', None)}); cannot warp")
        raise WarpError(msg)


class _Transform:
    """Destination (science) array pixel -> template array pixel, through the sky."""

    def __init__(self, dst_wcs: Any, src_wcs: Any) -> None:
        from astropy.wcs.utils import wcs_to_celestial_frame

        self.dst = dst_wcs
        self.src = src_wcs
        self.dst_frame = wcs_to_celestial_frame(dst_wcs)
        self.src_frame = wcs_to_celestial_frame(src_wcs)
        self.same_frame = bool(self.dst_frame.is_equivalent_frame(self.src_frame))

    def sky(self, wcs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        world = wcs.all_pix2world(x, y, 0)
        return np.asarray(world[wcs.wcs.lng]), np.asarray(world[wcs.wcs.lat])

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        lon, lat = self.sky(self.dst, x.ravel(), y.ravel())
        if not self.same_frame:
            from astropy import units as u
            from astropy.coordinates import SkyCoord, UnitSphericalRepresentation

            sc = SkyCoord(lon * u.deg, lat * u.deg, frame=self.dst_frame)
            rep = sc.transform_to(self.src_frame).represent_as(UnitSphericalRepresentation)
            lon, lat = rep.lon.deg, rep.lat.deg
        args: list[np.ndarray] = [lon, lat]
        if self.src.wcs.lng == 1:
            args = [lat, lon]
        xs, ys = self.src.all_world2pix(args[0], args[1], 0, quiet=True)
        return np.asarray(xs).reshape(x.shape), np.asarray(ys).reshape(x.shape)

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

    def __init__(self, transform: _Transform, shape: tuple[int, int], interp_length: int):
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

    def __init__(self, src: np.ndarray, kernel: _Kernel) -> None:
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
    src: _Source, kern: _Kernel, mkern: _Kernel, xs: np.ndarray, ys: np.ndarray,
    area: np.ndarray,
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


def _sky_box(tr: _Transform, wcs: Any, shape: tuple[int, int]) -> str:
    ny, nx = shape
    xs = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2], dtype=np.float64)
    ys = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2], dtype=np.float64)
    lon, lat = tr.sky(wcs, xs, ys)
    return (f"lon [{np.nanmin(lon):.5f}, {np.nanmax(lon):.5f}] deg, "
            f"lat [{np.nanmin(lat):.5f}, {np.nanmax(lat):.5f}] deg")


def _parse_shape(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise WarpError(f"shape must be (ny, nx), got {shape!r}") from exc
    if ny <= 0 or nx <= 0:
        raise WarpError(f"shape must be positive, got {(ny, nx)}")
    return ny, nx


def _copy_region(
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


def _coverage(mask: np.ndarray, planes: dict[str, int]) -> float:
    if _NO_DATA not in planes:
        return 1.0
    return float(1.0 - np.count_nonzero(mask & (1 << planes[_NO_DATA])) / mask.size)


# --------------------------------------------------------------------------- public
def warp_exposure(
    template: Exposure,
    *,
    wcs: Any,
    shape: tuple[int, int],
    xy0: tuple[int, int] = (0, 0),
    kernel: str = "lanczos3",
    mask_kernel: str | None = "bilinear",
    interp_length: int = 10,
    grow_full_mask: Iterable[str] | str = ("EDGE",),
    same_grid_tolerance: float = 0.01,
) -> tuple[Exposure, dict[str, Any]]:
    r"""Resample ``template`` onto the science pixel grid ``(wcs, shape, xy0)``.

    Parameters
    ----------
    template : Exposure
        The exposure to warp; never modified (its arrays may be read-only).
    wcs : astropy.wcs.WCS or None
        Science WCS, mapping 0-based destination array pixels to the sky.
    shape : tuple of int
        Destination array shape ``(ny, nx)``.
    xy0 : tuple of int
        Parent coordinate of destination element ``[0, 0]`` (copied to the output).
    kernel : str
        Image/variance interpolation kernel: ``"lanczos3"`` (afw default),
        ``"lanczos4"``, ``"lanczos5"`` or ``"bilinear"``.
    mask_kernel : str or None
        Kernel whose non-zero-weight footprint propagates mask bits; ``"bilinear"``
        (default, the up-to-2×2 nearest pixels), a Lanczos name, or ``""``/``None`` for the
        same as ``kernel``. It must not be larger than ``kernel`` (as in afw).
    interp_length : int
        Evaluate the WCS transform exactly every ``interp_length`` destination pixels (and
        on the last row/column) and interpolate bilinearly in between; ``0`` or ``1`` means
        exact everywhere.
    grow_full_mask : iterable of str
        Mask planes ORed over the full image-kernel footprint instead of the mask-kernel
        one (afw ``growFullMask``; default ``EDGE``). Planes the template lacks are ignored.
    same_grid_tolerance : float
        Largest deviation (pixels) of the transform from an integer translation for which
        the template is copied instead of resampled.

    Returns
    -------
    warped : Exposure
        On the science grid: ``wcs`` and ``xy0`` as given, template ``metadata`` and
        ``psf`` unchanged (the PSF is *not* warped), template mask planes plus
        ``NO_DATA`` (added whenever resampling, or when a copied template does not
        cover the whole grid). Image, variance and mask follow
        :math:`I_d = A\sum w_{kl} I_s`, :math:`V_d = A^2 \sum w_{kl}^2 V_s` (covariance
        ignored, as in afw) and the footprint ORs described in the module docstring;
        uncovered pixels are NaN / +inf / ``NO_DATA``.
    info : dict
        JSON-serialisable health record: ``resampled`` (bool), ``kernel``,
        ``mask_kernel``, ``interp_length``, ``max_grid_offset_pix`` (largest deviation
        of the transform from the best integer translation on the check grid),
        ``integer_offset`` (that translation, template − destination, ``[dx, dy]``),
        ``coverage_fraction`` (fraction of destination pixels not ``NO_DATA``),
        ``relative_area_min``/``relative_area_max`` (template pixels per destination
        pixel; ``None`` without resampling) and ``shape``.

    Raises
    ------
    WarpError
        Unknown kernel name; a mask kernel larger than the image kernel; a missing or
        non-celestial WCS (unless both are None and the shapes agree, which passes the
        template through with a logged warning); no overlap between template and science.
    """
    ny, nx = _parse_shape(shape)
    kern = _kernel(kernel, "warping kernel")
    mkern = kern if mask_kernel in (None, "") else _kernel(mask_kernel, "mask warping kernel")
    if mkern.lo < kern.lo or mkern.lo + mkern.ntaps > kern.lo + kern.ntaps:
        msg = (f"mask warping kernel {mkern.name!r} is larger than warping kernel "
               f"{kern.name!r}")
        raise WarpError(msg)
    if isinstance(interp_length, bool) or int(interp_length) != interp_length or interp_length < 0:
        raise WarpError(f"interp_length must be an integer >= 0, got {interp_length!r}")
    interp_length = int(interp_length)
    if not (same_grid_tolerance >= 0):
        raise WarpError(f"same_grid_tolerance must be >= 0, got {same_grid_tolerance!r}")
    if isinstance(grow_full_mask, str):
        grow_full_mask = [grow_full_mask]
    grow_planes = list(grow_full_mask)

    info: dict[str, Any] = {
        "resampled": False,
        "kernel": kern.name,
        "mask_kernel": mkern.name,
        "interp_length": interp_length,
        "max_grid_offset_pix": 0.0,
        "integer_offset": [0, 0],
        "coverage_fraction": 1.0,
        "relative_area_min": None,
        "relative_area_max": None,
        "shape": [ny, nx],
    }

    def result(image, variance, mask, planes) -> tuple[Exposure, dict[str, Any]]:
        info["coverage_fraction"] = _coverage(mask, planes)
        warped = Exposure(
            image=image, mask=mask, variance=variance, mask_planes=planes, wcs=wcs,
            psf=template.psf, metadata=dict(template.metadata), xy0=tuple(xy0),
        )
        return warped, info

    # ---- no WCS at all: only the trivial case is allowed
    if wcs is None or template.wcs is None:
        if wcs is None and template.wcs is None and template.shape == (ny, nx):
            log.warning(
                "template and science have no WCS; shapes agree (%d, %d), so the template "
                "is passed through unwarped (xy0 %s -> %s)", ny, nx, template.xy0, tuple(xy0))
            image, variance, mask, planes, _ = _copy_region(template, (ny, nx), 0, 0)
            return result(image, variance, mask, planes)
        who = "science" if wcs is None else "template"
        if wcs is None and template.wcs is None:
            who = "template and science"
        msg = (f"{who} {'have' if who.startswith('template and') else 'has'} no WCS; cannot "
               f"warp template shape {template.shape} onto science shape {(ny, nx)}")
        raise WarpError(msg)
    _check_wcs(template.wcs, "template")
    _check_wcs(wcs, "science")
    tr = _Transform(wcs, template.wcs)

    # ---- same grid? integer translation within tolerance -> copy
    cx = np.unique(np.round(np.linspace(0, nx - 1, _CHECK_POINTS)))
    cy = np.unique(np.round(np.linspace(0, ny - 1, _CHECK_POINTS)))
    gx, gy = np.meshgrid(cx, cy)
    px, py = tr(gx, gy)
    dxs, dys = px - gx, py - gy
    if np.all(np.isfinite(dxs)) and np.all(np.isfinite(dys)):
        ox, oy = float(np.round(np.median(dxs))), float(np.round(np.median(dys)))
        dev = float(np.max(np.hypot(dxs - ox, dys - oy)))
        info["max_grid_offset_pix"] = dev
        info["integer_offset"] = [int(ox), int(oy)]
    else:
        ox = oy = 0.0
        dev = math.inf
        info["max_grid_offset_pix"] = None
    if dev <= same_grid_tolerance:
        image, variance, mask, planes, n = _copy_region(template, (ny, nx), int(ox), int(oy))
        if n == 0:
            msg = (f"template and science do not overlap: science {_sky_box(tr, wcs, (ny, nx))}; "
                   f"template {_sky_box(tr, template.wcs, template.shape)}")
            raise WarpError(msg)
        log.info("template on the science grid (offset %s, max deviation %.3g px): copied",
                 info["integer_offset"], dev)
        return result(image, variance, mask, planes)

    # ---- resample
    info["resampled"] = True
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
    field = _PositionField(tr, (ny, nx), interp_length)
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
    amin = min(s[1] for s in stats)
    amax = max(s[2] for s in stats)
    if n_inside == 0:
        boxes = (f"science {_sky_box(tr, wcs, (ny, nx))}; "
                 f"template {_sky_box(tr, template.wcs, template.shape)}")
        if sum(s[3] for s in stats) == 0:
            msg = f"template and science do not overlap: {boxes}"
        else:
            msg = (f"template and science overlap, but no science pixel has a complete "
                   f"{kern.name} footprint ({kern.ntaps}x{kern.ntaps}) inside the template "
                   f"of shape {template.shape}: {boxes}")
        raise WarpError(msg)
    info["relative_area_min"], info["relative_area_max"] = amin, amax
    warped, info = result(out_img, out_var, out_mask, planes)
    log.info("warped template %s -> %s with %s: coverage %.4f, max grid offset %s px",
             template.shape, (ny, nx), kern.name, info["coverage_fraction"],
             info["max_grid_offset_pix"])
    return warped, info
