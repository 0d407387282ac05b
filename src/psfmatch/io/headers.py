"""Cheap reads of FITS headers (no pixel data), for sizing jobs before they run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from psfmatch.errors import InputFileError
from psfmatch.io._cards import parse_cards

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
    try:
        shape = _shape_from_cards(path)
    except (ValueError, OSError, UnicodeDecodeError):
        shape = None  # gzip, a header this parser does not take: astropy decides
    if shape is not None:
        return shape
    from astropy.io import fits

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


def _shape_from_cards(path: Path) -> tuple[int, int] | None:
    """:func:`read_image_shape` by parsing the headers here; None to let astropy decide.

    Follows the same rule (``IMAGE`` extension, else the first HDU declaring a 2-D image;
    ``ZNAXISn`` for tile-compressed HDUs); returns None for anything unusual (gzip,
    an ``IMAGE`` extension that is not 2-D, no 2-D HDU) so that the astropy reading
    gives the answer or the error message.
    """
    first = None
    size = path.stat().st_size
    with open(path, "rb", buffering=0) as handle:
        if handle.read(2) == b"\x1f\x8b":
            return None
        handle.seek(0)
        while handle.tell() < size:
            chunks = []
            while not chunks or not any(chunks[-1][i : i + 8] == b"END     "
                                        for i in range(0, 2880, 80)):
                block = handle.read(2880)
                if len(block) < 2880:
                    return None
                chunks.append(block)
            values = {c.key: c.value for c in parse_cards(b"".join(chunks)) if c.value is not None}
            prefix = "ZNAXIS" if values.get("ZIMAGE") is True else "NAXIS"
            dims = (values.get(f"{prefix}1"), values.get(f"{prefix}2"))
            two_d = values.get(prefix) == 2 and all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in dims)
            if str(values.get("EXTNAME", "")).upper() == "IMAGE":
                return (dims[1], dims[0]) if two_d else None
            if first is None and two_d:
                first = (dims[1], dims[0])
            naxis = values.get("NAXIS", 0)
            if not isinstance(naxis, int) or naxis < 0:
                return None
            count = 1
            for i in range(1, naxis + 1):
                count *= int(values[f"NAXIS{i}"])
            nbytes = (count if naxis else 0) * abs(int(values["BITPIX"])) // 8
            nbytes = int(values.get("GCOUNT", 1)) * (nbytes + int(values.get("PCOUNT", 0)))
            handle.seek(handle.tell() + -(-nbytes // 2880) * 2880)
    return first
