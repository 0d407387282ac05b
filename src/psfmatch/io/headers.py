"""Cheap reads of FITS headers (no pixel data), for sizing jobs before they run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from astropy.io import fits

from psfmatch.errors import InputFileError

__all__ = ["read_image_shape"]


def read_image_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Shape ``(ny, nx)`` of the image in ``path``, read from its header alone.

    The image is the ``IMAGE`` extension of an afw multi-extension file, otherwise the
    first HDU whose header declares a 2-D array (``NAXIS = 2``; for a tile-compressed
    HDU the uncompressed ``ZNAXISn``, which astropy presents as ``NAXISn``). No pixel data
    are read, so this costs a few milliseconds even for a large image.

    Raises
    ------
    InputFileError
        The file is missing or not FITS, or no HDU declares a 2-D image; the message
        names the file (and the HDU where one is involved).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"image {path} does not exist or is not a regular file")
    candidates: list[tuple[int, str, fits.Header]] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # header-card fixes are not our concern here
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                for index, hdu in enumerate(hdul):
                    candidates.append((index, hdu.name, hdu.header))
    except Exception as exc:  # astropy raises OSError, ValueError, ... on non-FITS input
        msg = f"image {path} cannot be read as FITS ({type(exc).__name__}: {exc})"
        raise InputFileError(msg) from exc
    named = [c for c in candidates if c[1] == "IMAGE"]
    for index, name, header in named or candidates:
        if header.get("NAXIS") == 2 and header.get("NAXIS1", 0) > 0 and header.get("NAXIS2", 0) > 0:
            return int(header["NAXIS2"]), int(header["NAXIS1"])
        if named:
            naxis = [header.get(f"NAXIS{i}") for i in range(1, int(header.get("NAXIS", 0)) + 1)]
            raise InputFileError(
                f"image {path} [HDU {index} {name!r}] is not a 2-D image (NAXIS = {naxis})"
            )
    raise InputFileError(f"image {path} has no HDU declaring a 2-D image (NAXIS = 2)")
