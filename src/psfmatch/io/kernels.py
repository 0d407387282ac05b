"""Kernels and array cubes: ``kernel.fits``, per-candidate stamps and single kernels."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from psfmatch.errors import InputFileError
from psfmatch.exposure import remap_mask_bits
from psfmatch.io._fits import atomic_output, load_fits, metadata_hdu, read_metadata_hdu
from psfmatch.kernel import SpatialKernel
from psfmatch.spatial import SpatialFunction

__all__ = [
    "STAMP_HDUS",
    "read_arrays",
    "read_kernel",
    "read_stamps",
    "write_arrays",
    "write_kernel",
]


def write_kernel(path: str | os.PathLike[str], kernel: SpatialKernel) -> Path:
    """Write a :class:`~psfmatch.kernel.SpatialKernel` as ``kernel.fits`` (atomic).

    Layout: PRIMARY (cards ``KSIZE``, ``NBASIS``, ``KSUM`` = kernel sum at the bbox
    centre, the spatial model ``SPMODEL``/``SPORDER``, the bbox ``BBOX_X0..BBOX_Y1``,
    the background model ``BGMODEL``/``BGORDER`` (``-1`` = none)); ``BASIS`` (float64
    cube ``n_basis × k × k``); ``COEFFS`` (``n_basis × n_terms``); ``BACKGROUND``
    (``n_bg_terms``); ``METADATA`` (one-row table, the provenance as JSON text: config,
    basis description, fit health); and, when the kernel carries one, ``COVARIANCE``
    (square, over ``[COEFFS.ravel(), BACKGROUND]``).
    """
    primary = fits.PrimaryHDU()
    header = primary.header
    header["KSIZE"] = (kernel.kernel_size, "kernel width = height (px)")
    header["NBASIS"] = (int(kernel.basis.shape[0]), "number of basis kernels")
    header["KSUM"] = (kernel.kernel_sum, "kernel sum at the bbox centre")
    func = kernel.kernel_function
    header["SPMODEL"] = (func.model_type, "spatial function family")
    header["SPORDER"] = (func.order, "spatial order of the kernel coefficients")
    for key, value in zip(("BBOX_X0", "BBOX_Y0", "BBOX_X1", "BBOX_Y1"), func.bbox, strict=True):
        header[key] = (value, "inclusive parent bbox of the spatial model")
    bg = kernel.background_function
    header["BGMODEL"] = (bg.model_type if bg is not None else "none", "background family")
    header["BGORDER"] = (bg.order if bg is not None else -1, "background order (-1: none)")
    hdus = [
        primary,
        fits.ImageHDU(np.asarray(kernel.basis, dtype=np.float64), name="BASIS"),
        fits.ImageHDU(np.asarray(kernel.coefficients, dtype=np.float64), name="COEFFS"),
        fits.ImageHDU(np.asarray(kernel.background_coefficients, dtype=np.float64),
                      name="BACKGROUND"),
        metadata_hdu(kernel.metadata),
    ]
    if kernel.covariance is not None:
        hdus.append(fits.ImageHDU(np.asarray(kernel.covariance, dtype=np.float64),
                                  name="COVARIANCE"))
    with atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def read_kernel(path: str | os.PathLike[str]) -> SpatialKernel:
    """Read ``kernel.fits`` written by :func:`write_kernel` into a ``SpatialKernel``."""
    path, hdus = load_fits(path, "kernel file")
    by_name = {h.name: h for h in hdus}
    missing = [n for n in ("BASIS", "COEFFS", "BACKGROUND", "METADATA") if n not in by_name]
    if missing:
        raise InputFileError(f"kernel file {path} lacks HDU(s) {missing}")
    header = hdus[0].header
    try:
        bbox = tuple(int(header[k]) for k in ("BBOX_X0", "BBOX_Y0", "BBOX_X1", "BBOX_Y1"))
        func = SpatialFunction(int(header["SPORDER"]), str(header["SPMODEL"]), bbox)
        bg_func = (
            SpatialFunction(int(header["BGORDER"]), str(header["BGMODEL"]), bbox)
            if int(header["BGORDER"]) >= 0
            else None
        )
    except KeyError as exc:
        raise InputFileError(f"kernel file {path} PRIMARY lacks card {exc}") from None
    background = by_name["BACKGROUND"].data
    return SpatialKernel(
        basis=np.asarray(by_name["BASIS"].data, dtype=np.float64),
        coefficients=np.asarray(by_name["COEFFS"].data, dtype=np.float64),
        kernel_function=func,
        background_coefficients=(
            np.zeros(0) if background is None else np.asarray(background, dtype=np.float64)
        ),
        background_function=bg_func,
        metadata=read_metadata_hdu(by_name["METADATA"]),
        covariance=(np.asarray(by_name["COVARIANCE"].data, dtype=np.float64)
                    if "COVARIANCE" in by_name else None),
    )


def write_arrays(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write named numeric arrays as image HDUs of one FITS file (atomic).

    Each array becomes an ImageHDU with ``EXTNAME`` = its key; ``metadata`` is stored
    as JSON text in a one-row ``METADATA`` table. Used for per-candidate stamps and
    kernels, which travel between steps as cubes.
    """
    hdus: list[Any] = [fits.PrimaryHDU()]
    for name, data in arrays.items():
        hdus.append(fits.ImageHDU(np.ascontiguousarray(data), name=name.upper()))
    hdus.append(metadata_hdu(metadata or {}))
    with atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def read_arrays(
    path: str | os.PathLike[str], names: tuple[str, ...] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the arrays (and metadata) written by :func:`write_arrays`.

    ``names`` lists the HDUs that must be present (:class:`InputFileError` otherwise).
    Zero-length arrays come back with shape ``(0,)``.
    """
    path, hdus = load_fits(path, "array file")
    arrays = {
        h.name: (h.data if h.data is not None else np.zeros(0))
        for h in hdus[1:]
        if h.name != "METADATA"
    }
    missing = [n for n in (names or ()) if n.upper() not in arrays]
    if missing:
        raise InputFileError(f"array file {path} lacks HDU(s) {missing}")
    meta = next((read_metadata_hdu(h) for h in hdus if h.name == "METADATA"), {})
    return arrays, meta


#: The HDUs of a stamps file (``select/stamps.fits``): template and science stacks.
STAMP_HDUS = ("T_IMAGE", "T_VARIANCE", "T_MASK", "S_IMAGE", "S_VARIANCE", "S_MASK", "IDS")


def read_stamps(
    path: str | os.PathLike[str],
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray, dict[str, Any]]:
    """Template and science stamp stacks of a stamps file, both masks in one numbering.

    Returns ``(template, science, ids, metadata)``: each stack is ``(image, variance,
    mask)`` of shape ``(n, h, w)``; the template masks are re-expressed in the science
    image's plane numbering (and ``metadata["mask_planes"]`` says so for both).
    """
    arrays, meta = read_arrays(path, STAMP_HDUS)
    science_planes = meta["mask_planes"]["science"]
    template = (arrays["T_IMAGE"], arrays["T_VARIANCE"],
                remap_mask_bits(arrays["T_MASK"], meta["mask_planes"]["template"],
                                science_planes))
    science = (arrays["S_IMAGE"], arrays["S_VARIANCE"], arrays["S_MASK"])
    meta = {**meta, "mask_planes": {"template": science_planes, "science": science_planes}}
    return template, science, np.asarray(arrays["IDS"], dtype=np.int64), meta
