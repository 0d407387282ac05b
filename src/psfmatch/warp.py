r"""Warp a template exposure onto the science pixel grid through the WCSs (afw ``warpExposure``).

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

Resampling, masks and missing data
----------------------------------
As :mod:`psfmatch.resample` describes: Lanczos/bilinear kernels normalised per output
pixel, flux conserved through the relative area, variance with the squared weights, mask
bits ORed over the kernel footprints, ``NO_DATA`` where the footprint leaves the data.

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
from collections.abc import Iterable
from typing import Any

import numpy as np

from psfmatch.errors import WarpError
from psfmatch.exposure import Exposure
from psfmatch.resample import KERNEL_NAMES, PixelTransform, parse_shape
from psfmatch.warp_transform import warp_kernels, warp_through

__all__ = [
    "KERNEL_NAMES",
    "WarpError",
    "WcsTransform",
    "warp_exposure",
    "wcs_overlap_fraction",
]

log = logging.getLogger("psfmatch.warp")


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


class WcsTransform(PixelTransform):
    """Destination (science) array pixel -> template array pixel, through the sky.

    ``WcsTransform(science_wcs, template_wcs)(x, y)`` maps 0-based science array pixels
    to template array pixels, :math:`W_T^{-1}(W_S(x, y))`, converting between celestial
    frames when the two WCSs use different ones.
    """

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


class _Identity(PixelTransform):
    """Destination array pixel = template array pixel (two grids without a WCS, same shape)."""

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def wcs_overlap_fraction(
    science_wcs: Any, science_shape: tuple[int, int], template_wcs: Any,
    template_shape: tuple[int, int], *, points: int = 33,
) -> float:
    """Fraction of the science grid whose pixel centres fall inside the template, via the WCSs.

    Evaluated on ``points × points`` science pixels (corners included), mapped through
    :class:`WcsTransform`; a pixel counts when its template position lies within the
    template array (``-0.5 < x < nx - 0.5``, same for ``y``). 0 when either WCS is
    missing or not a 2-axis celestial WCS, or when the mapping is not finite.
    """
    if science_wcs is None or template_wcs is None:
        return 0.0
    try:
        _check_wcs(science_wcs, "science")
        _check_wcs(template_wcs, "template")
    except WarpError:
        return 0.0
    ny, nx = parse_shape(science_shape)
    tny, tnx = parse_shape(template_shape)
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, points), np.linspace(0, ny - 1, points))
    with np.errstate(invalid="ignore"):
        xs, ys = WcsTransform(science_wcs, template_wcs)(gx, gy)
        inside = (xs > -0.5) & (xs < tnx - 0.5) & (ys > -0.5) & (ys < tny - 0.5)
    return float(np.count_nonzero(inside) / inside.size)


def _sky_box(tr: WcsTransform, wcs: Any, shape: tuple[int, int]) -> str:
    ny, nx = shape
    xs = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2], dtype=np.float64)
    ys = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2], dtype=np.float64)
    lon, lat = tr.sky(wcs, xs, ys)
    return (f"lon [{np.nanmin(lon):.5f}, {np.nanmax(lon):.5f}] deg, "
            f"lat [{np.nanmin(lat):.5f}, {np.nanmax(lat):.5f}] deg")


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
    ny, nx = parse_shape(shape)
    options = warp_kernels(kernel, mask_kernel, interp_length, grow_full_mask,
                           same_grid_tolerance)

    # ---- no WCS at all: only the trivial case is allowed
    if wcs is None or template.wcs is None:
        if wcs is None and template.wcs is None and template.shape == (ny, nx):
            log.warning(
                "template and science have no WCS; shapes agree (%d, %d), so the template "
                "is passed through unwarped (xy0 %s -> %s)", ny, nx, template.xy0, tuple(xy0))
            return warp_through(template, _Identity(), shape=(ny, nx), xy0=xy0, wcs=None,
                                options=options, describe=lambda: "")
        who = "science" if wcs is None else "template"
        if wcs is None and template.wcs is None:
            who = "template and science"
        msg = (f"{who} {'have' if who.startswith('template and') else 'has'} no WCS; cannot "
               f"warp template shape {template.shape} onto science shape {(ny, nx)}")
        raise WarpError(msg)
    _check_wcs(template.wcs, "template")
    _check_wcs(wcs, "science")
    tr = WcsTransform(wcs, template.wcs)
    return warp_through(
        template, tr, shape=(ny, nx), xy0=xy0, wcs=wcs, options=options,
        describe=lambda: (f"science {_sky_box(tr, wcs, (ny, nx))}; "
                          f"template {_sky_box(tr, template.wcs, template.shape)}"))
