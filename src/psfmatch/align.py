r"""Bring the template onto the science pixel grid: through the WCSs, or by the stars.

``warp.registration`` chooses how the warp step learns where each science pixel falls
in the template:

* ``wcs``: :math:`(x_t, y_t) = W_T^{-1}(W_S(x_s, y_s))` with both images' WCSs
  (:func:`psfmatch.warp.warp_exposure`; two images without any WCS and of one shape are
  taken to be on one grid);
* ``sources``: the stars of both images are matched and an affine parent-pixel transform
  :math:`\mathbf t = M\mathbf s + \mathbf o` is fitted
  (:func:`psfmatch.register.register_exposures`), then used by
  :func:`psfmatch.warp_transform.warp_exposure_pixels`;
* ``auto``: ``wcs`` when both images have a celestial WCS and the science grid, mapped
  through them, falls at least partly on the template; else ``sources``.

Either way the same Lanczos/bilinear resampling follows (one engine,
:func:`psfmatch.resample.resample_onto`), and the health record gains a
``registration`` entry saying which way was taken and why, with the fitted transform,
its number of matched stars and rms for ``sources``.

No file I/O happens here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from psfmatch.config import WarpingConfig, WarpOptions
from psfmatch.errors import PsfMatchError, RegistrationError
from psfmatch.exposure import Exposure
from psfmatch.warp_transform import warp_exposure_pixels, warp_kernels

if TYPE_CHECKING:
    from psfmatch.register import AffineTransform

__all__ = ["align_template", "choose_registration", "pass_through_record"]

log = logging.getLogger("psfmatch.warp")


def choose_registration(science: Exposure, template: Exposure, mode: str) -> dict[str, Any]:
    """Which registration ``mode`` (``auto``, ``wcs``, ``sources``) resolves to, and why.

    Returns
    -------
    dict
        ``requested`` (``mode``), ``method`` (``wcs`` or ``sources``), ``reason`` (text)
        and ``wcs_overlap_fraction`` (fraction of the science grid that falls on the
        template through the WCSs; None unless both images have a WCS).
    """
    from psfmatch.warp import wcs_overlap_fraction

    has = {"science": science.wcs is not None, "template": template.wcs is not None}
    overlap = (wcs_overlap_fraction(science.wcs, science.shape, template.wcs, template.shape)
               if all(has.values()) else None)
    return _registration(mode, has, overlap)


def _registration(mode: str, has: dict[str, bool], overlap: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {"requested": mode, "wcs_overlap_fraction": overlap}
    if mode in ("wcs", "sources"):
        return {**record, "method": mode, "reason": f"warp.registration is {mode!r}"}
    if overlap:
        reason = (f"both images have a WCS and {100.0 * overlap:.1f} % of the science grid "
                  "falls on the template through them")
        return {**record, "method": "wcs", "reason": reason}
    if not any(has.values()):
        reason = "neither image has a WCS"
    elif not all(has.values()):
        reason = f"the {'science image' if not has['science'] else 'template'} has no WCS"
    else:
        reason = ("the WCSs do not overlap (no science pixel falls on the template through "
                  "them)")
    return {**record, "method": "sources", "reason": reason}


def pass_through_record(*, registration: str, warping: WarpingConfig, warp: WarpOptions,
                        shape: tuple[int, int], coverage_fraction: float) -> dict[str, Any]:
    """The warp record of a template already on the science grid (nothing resampled).

    For two images whose WCS cards, shape and ``xy0`` are identical (checked by the
    caller): the grid offset is exactly 0 and the WCS overlap exactly 1, so the template
    is the warped template, unchanged; ``coverage_fraction`` is its fraction of pixels
    without ``NO_DATA``. Same keys as :func:`align_template`'s record for a copied
    template; ``registration`` as :func:`choose_registration` gives it (``auto`` or
    ``wcs``; raises ValueError for ``sources``, which always registers by stars).
    """
    if registration not in ("auto", "wcs"):
        raise ValueError(f"a pass-through needs registration auto or wcs, got {registration!r}")
    options = warp_kernels(warping.warping_kernel_name, warping.mask_warping_kernel_name,
                           warping.interp_length, warping.grow_full_mask,
                           warp.same_grid_tolerance_pix)
    choice = _registration(registration, {"science": True, "template": True}, 1.0)
    log.info("template on the science grid (identical WCS cards, shape and xy0): passed "
             "through")
    return {"resampled": False, "kernel": options.kernel.name,
            "mask_kernel": options.mask_kernel.name, "interp_length": options.interp_length,
            "max_grid_offset_pix": 0.0, "integer_offset": [0, 0],
            "coverage_fraction": float(coverage_fraction), "relative_area_min": None,
            "relative_area_max": None, "shape": [int(shape[0]), int(shape[1])],
            "registration": choice}


def _corner_errors(transform: AffineTransform, science: Exposure) -> list[float]:
    """Formal 1σ error (template px, per axis) of the mapped science corners."""
    x0, y0, x1, y1 = science.bbox
    x = np.array([x0, x1, x0, x1], dtype=np.float64)
    y = np.array([y0, y0, y1, y1], dtype=np.float64)
    return [float(v) for v in transform.position_error(x, y)]


def align_template(
    template: Exposure,
    science: Exposure,
    *,
    warp: WarpOptions,
    warping: WarpingConfig,
    label: str,
) -> tuple[Exposure, dict[str, Any], AffineTransform | None]:
    r"""The template on the science pixel grid, and how it got there.

    Parameters
    ----------
    template, science : Exposure
        Read, never modified.
    warp : WarpOptions
        ``registration``, ``sources`` (registration options) and
        ``same_grid_tolerance_pix``.
    warping : WarpingConfig
        ``psf_match.warpingConfig``: the kernels and ``interpLength``.
    label : str
        Names the pair in logs and errors.

    Returns
    -------
    warped : Exposure
        On the science grid (``xy0`` and WCS of the science image); image, variance and
        mask as :func:`psfmatch.warp_transform.warp_through` describes.
    info : dict
        The warp's health record plus ``registration`` (:func:`choose_registration`'s
        record; for ``sources`` also ``transform``: matrix, offset, ``n_matches``,
        ``rms_pix``, scale and rotation, and ``corner_error_pix``, the formal 1σ error of
        the four mapped science corners).
    transform : AffineTransform or None
        The fitted transform for ``sources`` (with its matched pairs), else None.

    Raises
    ------
    RegistrationError
        Registration by sources failed (too few matched stars, rms above
        ``warp.sources.max_rms``, no agreeing asterism); the message gives the numbers
        and why sources were used (``label`` names the pair in the log; the warp step
        prefixes it to the error).
    WarpError
        As :func:`psfmatch.warp.warp_exposure` (``wcs``: a missing WCS, no overlap) or
        :func:`psfmatch.warp_transform.warp_exposure_pixels`.
    """
    from psfmatch.register import register_exposures
    from psfmatch.warp import warp_exposure

    choice = choose_registration(science, template, warp.registration)
    kw = {"kernel": warping.warping_kernel_name, "mask_kernel": warping.mask_warping_kernel_name,
          "interp_length": warping.interp_length, "grow_full_mask": warping.grow_full_mask,
          "same_grid_tolerance": warp.same_grid_tolerance_pix}
    log.info("%s: registration %s (%s)", label, choice["method"], choice["reason"])
    if choice["method"] == "wcs":
        warped, info = warp_exposure(template, wcs=science.wcs, shape=science.shape,
                                     xy0=science.xy0, **kw)
        return warped, {**info, "registration": choice}, None
    try:
        transform = register_exposures(science, template, options=warp.sources,
                                       label="the template on the science image")
    except RegistrationError as err:
        hint = ("" if warp.registration == "sources" else
                "; if the two images are on one pixel grid already, set "
                "warp.registration: wcs")
        raise err.with_note(f" (registered by sources because {choice['reason']}{hint})"
                            ) from err
    try:
        warped, info = warp_exposure_pixels(template, transform, shape=science.shape,
                                            xy0=science.xy0, wcs=science.wcs, **kw)
    except PsfMatchError as err:
        raise type(err)(f"{err} (transform from {transform.n_matches} matched sources)") from err
    choice.update(transform=transform.to_dict(),
                  corner_error_pix=_corner_errors(transform, science))
    return warped, {**info, "registration": choice}, transform
