"""Kernels and array cubes: ``kernel.fits``, per-candidate stamps and single kernels."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from psfmatch.errors import InputFileError
from psfmatch.exposure import remap_mask_bits
from psfmatch.io._cards import format_card
from psfmatch.io._files import jsonable
from psfmatch.io._lite import (
    LiteUnsupportedError,
    image_header,
    primary_header,
    read_data,
    read_json_table,
    scan,
    table_hdu,
    write_file,
)
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
    func, bg = kernel.kernel_function, kernel.background_function
    cards = [
        ("KSIZE", kernel.kernel_size, "kernel width = height (px)"),
        ("NBASIS", int(kernel.basis.shape[0]), "number of basis kernels"),
        ("KSUM", kernel.kernel_sum, "kernel sum at the bbox centre"),
        ("SPMODEL", func.model_type, "spatial function family"),
        ("SPORDER", func.order, "spatial order of the kernel coefficients"),
        *((key, value, "inclusive parent bbox of the spatial model") for key, value in
          zip(("BBOX_X0", "BBOX_Y0", "BBOX_X1", "BBOX_Y1"), func.bbox, strict=True)),
        ("BGMODEL", bg.model_type if bg is not None else "none", "background family"),
        ("BGORDER", bg.order if bg is not None else -1, "background order (-1: none)"),
    ]
    hdus = [
        primary_header([format_card(*card) for card in cards]),
        image_header(np.asarray(kernel.basis, dtype=np.float64), "BASIS"),
        image_header(np.asarray(kernel.coefficients, dtype=np.float64), "COEFFS"),
        image_header(np.asarray(kernel.background_coefficients, dtype=np.float64),
                     "BACKGROUND"),
        table_hdu(_metadata_text(kernel.metadata)),
    ]
    if kernel.covariance is not None:
        hdus.append(image_header(np.asarray(kernel.covariance, dtype=np.float64), "COVARIANCE"))
    return write_file(path, hdus)


def _metadata_text(metadata: Mapping[str, Any]) -> str:
    """The JSON text of a ``METADATA`` table."""
    return json.dumps(jsonable(dict(metadata)), sort_keys=True)


def _load(path: str | os.PathLike[str], what: str) -> tuple[Path, list[tuple[str, Any, Any]]]:
    """``(name, header values, data)`` of every HDU (data: array, JSON text or None).

    Files psfmatch wrote are read without astropy; anything else through astropy.
    """
    try:
        hdus = scan(path)
        out = []
        for hdu in hdus:
            data = (read_data(path, hdu) if hdu.kind == "image"
                    else read_json_table(path, hdu) if hdu.kind == "table" else None)
            out.append((hdu.name, hdu.values, data))
        return Path(path), out
    except (LiteUnsupportedError, OSError):
        pass
    from psfmatch.io._fits import load_fits

    path, loaded = load_fits(path, what)
    out = []
    for hdu in loaded:
        data = hdu.data
        if data is not None and data.dtype.names:
            text = data["json"][0] if "json" in data.dtype.names and len(data) else ""
            data = text.decode() if isinstance(text, bytes) else str(text)
        out.append((hdu.name, hdu.header, data))
    return path, out


def _metadata(text: Any) -> dict[str, Any]:
    return json.loads(text) if isinstance(text, str) and text.strip() else {}


def read_kernel(path: str | os.PathLike[str]) -> SpatialKernel:
    """Read ``kernel.fits`` written by :func:`write_kernel` into a ``SpatialKernel``."""
    path, hdus = _load(path, "kernel file")
    by_name = {name: data for name, _, data in hdus}
    missing = [n for n in ("BASIS", "COEFFS", "BACKGROUND", "METADATA") if n not in by_name]
    if missing:
        raise InputFileError(f"kernel file {path} lacks HDU(s) {missing}")
    header = hdus[0][1]
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
    background = by_name["BACKGROUND"]
    return SpatialKernel(
        basis=np.asarray(by_name["BASIS"], dtype=np.float64),
        coefficients=np.asarray(by_name["COEFFS"], dtype=np.float64),
        kernel_function=func,
        background_coefficients=(
            np.zeros(0) if background is None else np.asarray(background, dtype=np.float64)
        ),
        background_function=bg_func,
        metadata=_metadata(by_name["METADATA"]),
        covariance=(np.asarray(by_name["COVARIANCE"], dtype=np.float64)
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
    hdus = [primary_header()]
    hdus += [image_header(np.ascontiguousarray(data), name.upper())
             for name, data in arrays.items()]
    hdus.append(table_hdu(_metadata_text(metadata or {})))
    return write_file(path, hdus)


def read_arrays(
    path: str | os.PathLike[str], names: tuple[str, ...] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the arrays (and metadata) written by :func:`write_arrays`.

    ``names`` lists the HDUs that must be present (:class:`InputFileError` otherwise).
    Zero-length arrays come back with shape ``(0,)``.
    """
    path, hdus = _load(path, "array file")
    arrays = {
        name: (data if data is not None else np.zeros(0))
        for name, _, data in hdus[1:]
        if name != "METADATA"
    }
    missing = [n for n in (names or ()) if n.upper() not in arrays]
    if missing:
        raise InputFileError(f"array file {path} lacks HDU(s) {missing}")
    meta = next((_metadata(data) for name, _, data in hdus if name == "METADATA"), {})
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
