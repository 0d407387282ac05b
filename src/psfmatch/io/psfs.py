"""Reading and writing PSF models (the file side of :mod:`psfmatch.psf`).

:func:`read_psf_model` accepts

* a PSFEx ``.psf`` file (binary table ``PSF_DATA`` with column ``PSF_MASK`` and the model
  keywords ``POLZERO*``, ``POLSCAL*``, ``POLDEG1``, ``PSF_SAMP`` in its header), or a
  merged one-row table with the same quantities as lower-case columns (the Legacy
  Surveys' per-CCD ``*-psfex.fits``);
* a FITS image of any odd size: HDU ``PSF`` if present, else the first 2-D image (an afw
  exposure file with a ``PSF`` HDU counts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from psfmatch.errors import ExposureError, InputFileError
from psfmatch.io._cards import PLAIN_KEY, format_card
from psfmatch.io._lite import (
    LiteUnsupportedError,
    image_header,
    primary_header,
    read_data,
    scan,
    write_file,
)
from psfmatch.psf import ImagePsf, PsfexPsf

__all__ = ["has_psf_hdu", "read_psf_model", "write_psf_image"]

_PSFEX_KEYS = ("POLNAXIS", "POLNGRP", "POLDEG1", "POLZERO1", "POLZERO2", "POLSCAL1",
               "POLSCAL2", "PSF_SAMP")


def _psfex_value(hdu: Any, key: str, where: str) -> Any:
    """A PSFEx quantity from the table header, else from a same-named column (any case)."""
    if key in hdu.header:
        return hdu.header[key]
    names = {n.lower(): n for n in hdu.data.dtype.names or ()}
    if key.lower() in names:
        value = hdu.data[names[key.lower()]][0]
        return value.item() if isinstance(value, np.generic) else value
    raise InputFileError(f"PSFEx model {where} lacks {key} (neither a header card nor a column)")


def _read_psfex(path: Path, hdu: Any) -> PsfexPsf:
    from psfmatch.io._fits import where_in

    where = where_in(path, hdu)
    values = {key: _psfex_value(hdu, key, where) for key in _PSFEX_KEYS}
    if int(values["POLNAXIS"]) != 2 or int(values["POLNGRP"]) != 1:
        msg = (
            f"PSFEx model {where} has POLNAXIS={values['POLNAXIS']}, POLNGRP={values['POLNGRP']}; "
            "only a single polynomial group in the two image coordinates is supported"
        )
        raise InputFileError(msg)
    for axis, letter in ((1, "X"), (2, "Y")):
        try:
            raw = _psfex_value(hdu, f"POLNAME{axis}", where)
            name = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip().upper()
        except InputFileError:
            continue  # the Legacy Surveys' tables keep it; plain .psf files always do
        if not name.startswith(letter):
            msg = (f"PSFEx model {where}: POLNAME{axis} = {name!r}; "
                   f"expected an image {letter} coordinate")
            raise InputFileError(msg)
    names = {n.lower(): n for n in hdu.data.dtype.names}
    mask = np.asarray(hdu.data[names["psf_mask"]][0], dtype=np.float64)
    while mask.ndim > 3 and mask.shape[0] == 1:
        mask = mask[0]
    try:
        fwhm: float | None = float(_psfex_value(hdu, "PSF_FWHM", where))
    except InputFileError:
        fwhm = None
    try:
        return PsfexPsf(
            components=mask,
            degree=int(values["POLDEG1"]),
            zero=(float(values["POLZERO1"]), float(values["POLZERO2"])),
            scale=(float(values["POLSCAL1"]), float(values["POLSCAL2"])),
            sampling=float(values["PSF_SAMP"]),
            file_fwhm=fwhm,
            source=f"PSFEx model {where}",
        )
    except ExposureError as exc:
        raise InputFileError(str(exc)) from exc


def read_psf_model(path: str | os.PathLike[str]) -> ImagePsf | PsfexPsf:
    """Read a PSF model file: PSFEx (``.psf`` or merged table) or a FITS PSF image.

    Raises
    ------
    InputFileError
        Missing/corrupt file, a PSFEx table lacking a model quantity, or no usable HDU;
        the message names the file and HDU.
    """
    try:  # a PSF image psfmatch wrote (or any plain image file): no astropy
        lite = [h for h in scan(path) if h.kind == "image"]
        named = [h for h in lite if h.name == "PSF"]
        chosen = (named or [h for h in lite if len(h.shape) == 2])[:1]
        if chosen:
            try:
                return ImagePsf(read_data(path, chosen[0]))
            except ExposureError as exc:
                msg = f"PSF {path} [HDU {chosen[0].index} {chosen[0].name!r}]: {exc}"
                raise InputFileError(msg) from exc
    except (LiteUnsupportedError, OSError):
        pass
    from psfmatch.io._fits import load_fits, where_in

    path, hdus = load_fits(path, "PSF model file")
    for item in hdus:
        if item.data is not None and item.data.dtype.names and any(
                n.lower() == "psf_mask" for n in item.data.dtype.names):
            return _read_psfex(path, item)
    named = [h for h in hdus if h.name == "PSF" and h.data is not None and not h.data.dtype.names]
    images = named or [
        h for h in hdus if h.data is not None and not h.data.dtype.names and h.data.ndim == 2
    ]
    if not images:
        msg = (
            f"PSF model file {path} holds neither a PSFEx table (column PSF_MASK) "
            "nor a 2-D PSF image"
        )
        raise InputFileError(msg)
    hdu = images[0]
    try:
        return ImagePsf(hdu.data)
    except ExposureError as exc:
        raise InputFileError(f"PSF {where_in(path, hdu)}: {exc}") from exc


def has_psf_hdu(path: str | os.PathLike[str]) -> bool:
    """Whether the FITS file has an image HDU named ``PSF`` (an afw exposure's PSF)."""
    try:
        return any(h.name == "PSF" and h.kind == "image" for h in scan(path))
    except (LiteUnsupportedError, OSError):
        pass
    from psfmatch.io._fits import load_fits

    _, hdus = load_fits(path, "image file")
    return any(h.name == "PSF" and h.data is not None for h in hdus)


def write_psf_image(
    path: str | os.PathLike[str], image: np.ndarray, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write a PSF image as HDU ``PSF`` (float64) with ``metadata`` as header cards (atomic)."""
    cards = []
    for key, value in (metadata or {}).items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, bool | int | float | str):
            msg = f"metadata card {key!r} has unsupported type {type(value).__name__}"
            raise ExposureError(msg)
        if isinstance(value, float) and not np.isfinite(value):
            raise ExposureError(f"metadata card {key!r} = {value!r} cannot be stored in FITS")
        try:
            cards.append(format_card(key if PLAIN_KEY.match(key) else f"HIERARCH {key}", value))
        except ValueError as exc:
            raise ExposureError(f"metadata card {key!r} = {value!r}: {exc}") from exc
    data = np.asarray(image, dtype=np.float64)
    return write_file(path, [primary_header(), image_header(data, "PSF", after_name=cards)])
