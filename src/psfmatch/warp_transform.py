r"""Warp a template onto the science grid through any pixel transform.

Two ways to know where a science pixel falls in the template share everything after that
question is answered:

* through the sky, with both WCSs (:func:`psfmatch.warp.warp_exposure`);
* through a *parent-pixel* map
  :math:`(x_t, y_t) = f(x_s, y_s)` with ``x = column + xy0[0]``
  (:func:`warp_exposure_pixels`), e.g. the
  :class:`~psfmatch.register.AffineTransform` that
  :func:`psfmatch.register.register_exposures` fits to the two images' stars.

:func:`warp_through` is that common part: the integer-translation pass-through (the
transform checked on a 17 × 17 grid including the corners; within
``same_grid_tolerance`` pixels of an integer shift the template pixels are copied,
bit-identical), else :func:`psfmatch.resample.resample_onto` (the one resampling engine:
Lanczos/bilinear kernels, flux conserved through the relative area
:math:`A = |\det \partial(x_t, y_t) / \partial(x_s, y_s)|`, variance
:math:`V_d = A^2 \sum w_{kl}^2 V_s`, mask footprint ORs, ``NO_DATA`` where the footprint
leaves the data), and the health record both warps write to ``warp.json``.

No file I/O happens here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from psfmatch.errors import WarpError
from psfmatch.exposure import Exposure
from psfmatch.interpolation import InterpolationKernel
from psfmatch.resample import (
    PixelTransform,
    copy_region,
    coverage,
    parse_shape,
    resample_onto,
    resampling_kernel,
)

__all__ = [
    "ParentPixelTransform",
    "PixelMap",
    "WarpKernels",
    "warp_exposure_pixels",
    "warp_kernels",
    "warp_through",
]

log = logging.getLogger("psfmatch.warp")

#: Side of the pass-through check grid (points per axis, corners included).
CHECK_POINTS = 17

#: Science parent (x, y) -> template parent (x, y), elementwise on arrays of any shape.
PixelMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class WarpKernels:
    """The validated warp options (:func:`warp_kernels`)."""

    kernel: InterpolationKernel
    mask_kernel: InterpolationKernel
    interp_length: int
    grow_planes: tuple[str, ...]
    same_grid_tolerance: float


def warp_kernels(
    kernel: str,
    mask_kernel: str | None,
    interp_length: int,
    grow_full_mask: Iterable[str] | str,
    same_grid_tolerance: float,
) -> WarpKernels:
    """Check the warp options (see :func:`psfmatch.warp.warp_exposure`) and resolve them.

    Raises
    ------
    WarpError
        Unknown kernel name; a mask kernel larger than the image kernel (afw refuses it
        too); ``interp_length`` not an integer >= 0; ``same_grid_tolerance`` < 0 or NaN.
    """
    kern = resampling_kernel(kernel, "warping kernel")
    mkern = (kern if mask_kernel in (None, "")
             else resampling_kernel(mask_kernel, "mask warping kernel"))
    if mkern.lo < kern.lo or mkern.lo + mkern.ntaps > kern.lo + kern.ntaps:
        msg = (f"mask warping kernel {mkern.name!r} is larger than warping kernel "
               f"{kern.name!r}")
        raise WarpError(msg)
    if isinstance(interp_length, bool) or int(interp_length) != interp_length or interp_length < 0:
        raise WarpError(f"interp_length must be an integer >= 0, got {interp_length!r}")
    if not (same_grid_tolerance >= 0):
        raise WarpError(f"same_grid_tolerance must be >= 0, got {same_grid_tolerance!r}")
    grow = [grow_full_mask] if isinstance(grow_full_mask, str) else list(grow_full_mask)
    return WarpKernels(kern, mkern, int(interp_length), tuple(grow), float(same_grid_tolerance))


class ParentPixelTransform(PixelTransform):
    """Science *array* pixel -> template *array* pixel through a parent-pixel map.

    ``mapping(x, y)`` takes and returns parent coordinates (``x = column + xy0[0]``);
    this adaptor adds the science ``dst_xy0`` before and removes the template ``src_xy0``
    after. :meth:`~psfmatch.resample.PixelTransform.with_area` is inherited.
    """

    def __init__(self, mapping: PixelMap, dst_xy0: tuple[int, int],
                 src_xy0: tuple[int, int]) -> None:
        self.mapping = mapping
        self.dst_xy0 = (int(dst_xy0[0]), int(dst_xy0[1]))
        self.src_xy0 = (int(src_xy0[0]), int(src_xy0[1]))

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


def warp_through(
    template: Exposure,
    transform: PixelTransform,
    *,
    shape: tuple[int, int],
    xy0: tuple[int, int],
    wcs: Any,
    options: WarpKernels,
    describe: Callable[[], str],
    info: dict[str, Any] | None = None,
) -> tuple[Exposure, dict[str, Any]]:
    r"""Copy or resample ``template`` onto the grid ``(shape, xy0)`` through ``transform``.

    Parameters
    ----------
    template : Exposure
        Never modified.
    transform : PixelTransform
        Destination array pixel -> template array pixel.
    shape, xy0, wcs
        The destination grid; ``xy0`` and ``wcs`` are attached to the result as given.
    options : WarpKernels
        From :func:`warp_kernels`.
    describe : callable
        Returns the text that places both grids (sky boxes, parent-pixel boxes) for an
        error message; only called when there is an error to report.
    info : dict, optional
        Extra keys for the health record (e.g. ``mapping``).

    Returns
    -------
    warped : Exposure
        Image :math:`I_d = A\sum w_{kl} I_s`, variance :math:`V_d = A^2 \sum w_{kl}^2 V_s`
        (covariance ignored, as in afw), mask = OR of template bits over the mask-kernel
        footprint plus the ``grow_planes`` bits over the image-kernel footprint; pixels
        without a complete footprint of good template pixels are NaN / +inf /
        ``NO_DATA``. A copied template keeps its pixels bit for bit. Template ``psf`` and
        ``metadata`` are kept.
    info : dict
        ``resampled``, ``kernel``, ``mask_kernel``, ``interp_length``,
        ``max_grid_offset_pix`` (largest deviation of the transform from the best integer
        translation on the check grid; None if not finite), ``integer_offset`` (that
        translation, template − destination array pixels ``[dx, dy]``),
        ``coverage_fraction``, ``relative_area_min``/``relative_area_max`` (None without
        resampling), ``shape``, plus the given ``info``.

    Raises
    ------
    WarpError
        No overlap, or no destination pixel with a complete kernel footprint inside the
        template (the message places both grids with ``describe``).
    """
    ny, nx = parse_shape(shape)
    kern = options.kernel
    record: dict[str, Any] = {
        "resampled": False, "kernel": kern.name, "mask_kernel": options.mask_kernel.name,
        "interp_length": options.interp_length, "max_grid_offset_pix": 0.0,
        "integer_offset": [0, 0], "coverage_fraction": 1.0, "relative_area_min": None,
        "relative_area_max": None, "shape": [ny, nx], **(info or {}),
    }

    def result(image, variance, mask, planes) -> tuple[Exposure, dict[str, Any]]:
        record["coverage_fraction"] = coverage(mask, planes)
        warped = Exposure(
            image=image, mask=mask, variance=variance, mask_planes=planes, wcs=wcs,
            psf=template.psf, metadata=dict(template.metadata), xy0=tuple(xy0),
        )
        return warped, record

    # ---- same grid? integer translation within tolerance -> copy (array coordinates)
    cx = np.unique(np.round(np.linspace(0, nx - 1, CHECK_POINTS)))
    cy = np.unique(np.round(np.linspace(0, ny - 1, CHECK_POINTS)))
    gx, gy = np.meshgrid(cx, cy)
    px, py = transform(gx, gy)
    dxs, dys = px - gx, py - gy
    ox = oy = 0.0
    dev = math.inf
    if np.all(np.isfinite(dxs)) and np.all(np.isfinite(dys)):
        ox, oy = float(np.round(np.median(dxs))), float(np.round(np.median(dys)))
        dev = float(np.max(np.hypot(dxs - ox, dys - oy)))
        record["max_grid_offset_pix"] = dev
        record["integer_offset"] = [int(ox), int(oy)]
    else:
        record["max_grid_offset_pix"] = None
    if dev <= options.same_grid_tolerance:
        image, variance, mask, planes, n = copy_region(template, (ny, nx), int(ox), int(oy))
        if n == 0:
            raise WarpError(f"template and science do not overlap: {describe()}")
        log.info("template on the science grid (offset %s, max deviation %.3g px): copied",
                 record["integer_offset"], dev)
        return result(image, variance, mask, planes)

    record["resampled"] = True
    out = resample_onto(template, transform, (ny, nx), kernel=kern,
                        mask_kernel=options.mask_kernel, grow_planes=options.grow_planes,
                        interp_length=options.interp_length)
    if out.n_inside == 0:
        if out.n_geometric == 0:
            raise WarpError(f"template and science do not overlap: {describe()}")
        msg = (f"template and science overlap, but no science pixel has a complete "
               f"{kern.name} footprint ({kern.ntaps}x{kern.ntaps}) inside the template "
               f"of shape {template.shape}: {describe()}")
        raise WarpError(msg)
    record["relative_area_min"], record["relative_area_max"] = out.area_min, out.area_max
    warped, record = result(out.image, out.variance, out.mask, out.planes)
    log.info("warped template %s -> %s with %s: coverage %.4f, max grid offset %s px",
             template.shape, (ny, nx), kern.name, record["coverage_fraction"],
             record["max_grid_offset_pix"])
    return warped, record


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
    warped, info
        As :func:`warp_through`; ``info["mapping"] = "pixel"``.

    Raises
    ------
    WarpError
        As :func:`warp_kernels` and :func:`warp_through` (the no-overlap message gives
        the mapped science corners and the template extent in template parent pixels);
        ``mapping`` not callable.
    """
    options = warp_kernels(kernel, mask_kernel, interp_length, grow_full_mask,
                           same_grid_tolerance)
    if not callable(mapping):
        raise WarpError(f"mapping must be callable (x, y) -> (x_t, y_t), got {mapping!r}")
    ny, nx = parse_shape(shape)
    tr = ParentPixelTransform(mapping, xy0, template.xy0)
    return warp_through(template, tr, shape=(ny, nx), xy0=xy0, wcs=wcs, options=options,
                        describe=lambda: tr.boxes((ny, nx), template.shape),
                        info={"mapping": "pixel"})
