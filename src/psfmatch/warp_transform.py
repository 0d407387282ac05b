r"""Resample a template exposure onto the science grid through a *pixel* transform.

For images without a usable WCS: instead of going through the sky,

.. math::

    (x_t, y_t) = f(x_s, y_s),

with :math:`f` any vectorised function from science *parent* pixel coordinates to template
parent pixel coordinates (``x = column + xy0[0]``), e.g. the
:class:`~psfmatch.register.AffineTransform` that :func:`psfmatch.register.register_exposures`
fits to the two images' stars. Everything else is :func:`psfmatch.warp.warp_exposure`'s
machinery, unchanged: the same Lanczos/bilinear kernels, unit-sum separable weights, flux
conservation through the relative area :math:`A = |\det \partial(x_t, y_t) /
\partial(x_s, y_s)|` (central differences, constant for an affine map), the same
:math:`V_d = A^2 \sum w_{kl}^2 V_s` variance (covariance ignored), the same mask-footprint
ORs and ``NO_DATA`` handling, and the same integer-translation pass-through. Evaluating
:math:`f` every ``interp_length`` pixels and interpolating bilinearly in between is exact
for an affine :math:`f`.

No file I/O happens here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from psfmatch.exposure import Exposure
from psfmatch.warp import (
    _BAD_FLAG,
    _BAND_PIXELS,
    _CHECK_POINTS,
    _NO_DATA,
    WarpError,
    _copy_region,
    _coverage,
    _kernel,
    _parse_shape,
    _PositionField,
    _resample,
    _Source,
    _threads,
    _Transform,
    _WindowOr,
    _with_no_data,
)

__all__ = ["PixelMap", "warp_exposure_pixels"]

log = logging.getLogger("psfmatch.warp")

#: Science parent (x, y) -> template parent (x, y), elementwise on arrays of any shape.
PixelMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class _PixelTransform(_Transform):
    """Science *array* pixel -> template *array* pixel through a parent-pixel map.

    Duck-types :class:`psfmatch.warp._Transform` (``__call__`` and the inherited
    ``with_area``) without any WCS.
    """

    def __init__(self, mapping: PixelMap, dst_xy0: tuple[int, int],
                 src_xy0: tuple[int, int]) -> None:  # no WCS: the base __init__ is not used
        self.mapping = mapping
        self.dst_xy0 = dst_xy0
        self.src_xy0 = src_xy0

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        xt, yt = self.mapping(x + self.dst_xy0[0], y + self.dst_xy0[1])
        xt = np.broadcast_to(np.asarray(xt, dtype=np.float64), x.shape)
        yt = np.broadcast_to(np.asarray(yt, dtype=np.float64), x.shape)
        return xt - self.src_xy0[0], yt - self.src_xy0[1]

    def boxes(self, shape: tuple[int, int], template_shape: tuple[int, int]) -> str:
        """Where the science corners land, and the template's extent (parent px)."""
        ny, nx = shape
        xs, ys = self(np.array([0.0, nx - 1, 0.0, nx - 1]), np.array([0.0, 0.0, ny - 1, ny - 1]))
        tny, tnx = template_shape
        x0, y0 = self.src_xy0
        return (f"science corners map to template parent x [{np.nanmin(xs) + x0:.1f}, "
                f"{np.nanmax(xs) + x0:.1f}], y [{np.nanmin(ys) + y0:.1f}, "
                f"{np.nanmax(ys) + y0:.1f}]; template covers x [{x0}, {x0 + tnx - 1}], "
                f"y [{y0}, {y0 + tny - 1}]")


def warp_exposure_pixels(
    template: Exposure,
    mapping: PixelMap,
    *,
    shape: tuple[int, int],
    xy0: tuple[int, int] = (0, 0),
    wcs: Any = None,
    kernel: str = "lanczos3",
    mask_kernel: str | None = "bilinear",
    interp_length: int = 10,
    grow_full_mask: Iterable[str] | str = ("EDGE",),
    same_grid_tolerance: float = 0.01,
) -> tuple[Exposure, dict[str, Any]]:
    r"""Resample ``template`` onto the science grid ``(shape, xy0)`` through ``mapping``.

    Parameters
    ----------
    template : Exposure
        The exposure to warp; never modified. Its ``wcs`` is ignored.
    mapping : callable
        ``mapping(x, y) -> (x_t, y_t)``: template parent pixel coordinates of science
        parent pixel coordinates, elementwise on float arrays of any shape (e.g. an
        :class:`~psfmatch.register.AffineTransform`).
    shape : tuple of int
        Science array shape ``(ny, nx)``.
    xy0 : tuple of int
        Parent coordinate of science element ``[0, 0]`` (copied to the output).
    wcs : astropy.wcs.WCS or None
        Attached to the output as is (the science WCS, if any); not used for the mapping.
    kernel, mask_kernel, interp_length, grow_full_mask, same_grid_tolerance
        As in :func:`psfmatch.warp.warp_exposure` (``interp_length`` steps of an affine
        ``mapping`` are interpolated exactly).

    Returns
    -------
    warped : Exposure
        On the science grid, as from :func:`psfmatch.warp.warp_exposure`: image
        :math:`I_d = A\sum w_{kl} I_s`, variance :math:`V_d = A^2 \sum w_{kl}^2 V_s`,
        mask = OR of template bits over the mask-kernel footprint plus
        ``grow_full_mask`` bits over the image-kernel footprint; pixels without a complete
        footprint of good template pixels are NaN / +inf / ``NO_DATA``. ``wcs`` and
        ``xy0`` as given; template ``psf`` and ``metadata`` kept.
    info : dict
        The keys of :func:`psfmatch.warp.warp_exposure`'s record (``resampled``,
        ``kernel``, ``mask_kernel``, ``interp_length``, ``max_grid_offset_pix``,
        ``integer_offset``, ``coverage_fraction``, ``relative_area_min``,
        ``relative_area_max``, ``shape``) plus ``mapping: "pixel"``.

    Raises
    ------
    WarpError
        Unknown kernel name; a mask kernel larger than the image kernel; bad
        ``interp_length`` or ``same_grid_tolerance``; no overlap between the mapped science
        grid and the template (the message gives both extents in template parent pixels).
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
    if not (same_grid_tolerance >= 0):
        raise WarpError(f"same_grid_tolerance must be >= 0, got {same_grid_tolerance!r}")
    if not callable(mapping):
        raise WarpError(f"mapping must be callable (x, y) -> (x_t, y_t), got {mapping!r}")
    grow_planes = [grow_full_mask] if isinstance(grow_full_mask, str) else list(grow_full_mask)
    tr = _PixelTransform(mapping, (int(xy0[0]), int(xy0[1])), template.xy0)
    info: dict[str, Any] = {
        "resampled": False, "kernel": kern.name, "mask_kernel": mkern.name,
        "interp_length": int(interp_length), "max_grid_offset_pix": 0.0,
        "integer_offset": [0, 0], "coverage_fraction": 1.0, "relative_area_min": None,
        "relative_area_max": None, "shape": [ny, nx], "mapping": "pixel",
    }

    def result(image, variance, mask, planes) -> tuple[Exposure, dict[str, Any]]:
        info["coverage_fraction"] = _coverage(mask, planes)
        warped = Exposure(
            image=image, mask=mask, variance=variance, mask_planes=planes, wcs=wcs,
            psf=template.psf, metadata=dict(template.metadata), xy0=tuple(xy0),
        )
        return warped, info

    # ---- same grid? integer translation within tolerance -> copy (array coordinates)
    cx = np.unique(np.round(np.linspace(0, nx - 1, _CHECK_POINTS)))
    cy = np.unique(np.round(np.linspace(0, ny - 1, _CHECK_POINTS)))
    gx, gy = np.meshgrid(cx, cy)
    px, py = tr(gx, gy)
    dxs, dys = px - gx, py - gy
    dev = math.inf
    if np.all(np.isfinite(dxs)) and np.all(np.isfinite(dys)):
        ox, oy = float(np.round(np.median(dxs))), float(np.round(np.median(dys)))
        dev = float(np.max(np.hypot(dxs - ox, dys - oy)))
        info["max_grid_offset_pix"] = dev
        info["integer_offset"] = [int(ox), int(oy)]
    else:
        info["max_grid_offset_pix"] = None
    if dev <= same_grid_tolerance:
        image, variance, mask, planes, n = _copy_region(template, (ny, nx), int(ox), int(oy))
        if n == 0:
            msg = f"template and science do not overlap: {tr.boxes((ny, nx), template.shape)}"
            raise WarpError(msg)
        log.info("template on the science grid (offset %s, max deviation %.3g px): copied",
                 info["integer_offset"], dev)
        return result(image, variance, mask, planes)

    info["resampled"] = True
    image, variance, mask, planes, amin, amax = _resample_onto(
        template, tr, (ny, nx), kern, mkern, grow_planes, int(interp_length))
    info["relative_area_min"], info["relative_area_max"] = amin, amax
    warped, info = result(image, variance, mask, planes)
    log.info("warped template %s -> %s with %s through a pixel transform: coverage %.4f",
             template.shape, (ny, nx), kern.name, info["coverage_fraction"])
    return warped, info


def _resample_onto(template: Exposure, tr: _PixelTransform, shape: tuple[int, int], kern,
                   mkern, grow_planes: list[str], interp_length: int):
    """Band-parallel resampling of ``template`` at ``tr`` of every destination pixel.

    The same steps as :func:`psfmatch.warp.warp_exposure`'s resampling branch. Returns
    ``(image, variance, mask, planes, area_min, area_max)``.
    """
    ny, nx = shape
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
    flat_img, flat_var, flat_mask = out_img.reshape(-1), out_var.reshape(-1), out_mask.reshape(-1)

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
        flat_img[flat], flat_var[flat], flat_mask[flat] = vi, vv, vm
        return flat.size, float(a.min()), float(a.max()), geo

    starts = range(0, ny, rows_per_band)
    workers = min(_threads(), len(starts))
    if workers > 1:  # numpy releases the GIL in take and the arithmetic ufuncs
        with ThreadPoolExecutor(max_workers=workers) as pool:
            stats = list(pool.map(do_band, starts))
    else:
        stats = [do_band(r0) for r0 in starts]
    if sum(s[0] for s in stats) == 0:
        boxes = tr.boxes(shape, template.shape)
        if sum(s[3] for s in stats) == 0:
            raise WarpError(f"template and science do not overlap: {boxes}")
        msg = (f"template and science overlap, but no science pixel has a complete "
               f"{kern.name} footprint ({kern.ntaps}x{kern.ntaps}) inside the template "
               f"of shape {template.shape}: {boxes}")
        raise WarpError(msg)
    amin = min(s[1] for s in stats)
    amax = max(s[2] for s in stats)
    return out_img, out_var, out_mask, planes, amin, amax
