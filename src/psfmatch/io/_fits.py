"""astropy-based FITS helpers shared by the modules of :mod:`psfmatch.io`.

Files of any layout are read here (:func:`load_fits`); the files psfmatch writes itself
are read and written without astropy by :mod:`psfmatch.io._lite`. The atomic writer and
the JSON conversion live in :mod:`psfmatch.io._files` (re-exported here).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits

from psfmatch.errors import ExposureError, InputFileError
from psfmatch.io._cards import PLAIN_KEY, STRUCTURAL_CARDS
from psfmatch.io._files import atomic_output, jsonable
from psfmatch.io._raw import scaling_problem, to_float_image

__all__ = [
    "PLAIN_KEY",
    "STRUCTURAL_CARDS",
    "Hdu",
    "atomic_output",
    "check_2d",
    "find_hdu",
    "jsonable",
    "load_fits",
    "metadata_hdu",
    "put_card",
    "read_metadata_hdu",
    "where_in",
]

logger = logging.getLogger("psfmatch.io")


class Hdu(NamedTuple):
    index: int
    name: str
    header: fits.Header
    data: np.ndarray | None


# ---------------------------------------------------------------------- FITS helpers
def where_in(path: Path, hdu: Hdu) -> str:
    return f"{path} [HDU {hdu.index} {hdu.name!r}]"


def load_fits(path: str | os.PathLike[str], what: str = "FITS file") -> tuple[Path, list[Hdu]]:
    """Read every header and image array of ``path`` into memory, or raise InputFileError."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist")
    if not path.is_file():
        raise InputFileError(f"{what} {path} is not a regular file")
    if path.stat().st_size == 0:
        raise InputFileError(f"{what} {path} is empty (0 bytes)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{what} {path} cannot be read ({exc})") from exc
    if raw[:2] == b"\x1f\x8b":  # astropy silently stops at a truncated gzip stream
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputFileError(f"{what} {path} is a corrupt gzip file ({exc})") from exc
    hdus: list[Hdu] = []
    last = None
    bad_scaling = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        failure: Exception | None = None
        try:
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                for index, hdu in enumerate(hdul):
                    data = None
                    image_hdu = isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)
                    if image_hdu and (problem := scaling_problem(hdu.header)) is not None:
                        bad_scaling = (f"{what} {path} [HDU {index} {hdu.name!r}] holds integer "
                                       f"data (BITPIX {hdu.header['BITPIX']}) with an unusable "
                                       f"scaling: {problem}")
                        break
                    if image_hdu:
                        # one copy that also converts FITS big-endian to native order
                        data = (
                            None
                            if hdu.data is None
                            else hdu.data.astype(hdu.data.dtype.newbyteorder("="))
                        )
                    elif isinstance(hdu, fits.BinTableHDU) and hdu.data is not None:
                        data = np.array(hdu.data)  # structured array
                    hdus.append(Hdu(index, hdu.name, hdu.header.copy(), data))
                last = hdul.fileinfo(len(hdul) - 1) if len(hdul) else None
        except Exception as exc:  # astropy, numpy and zlib raise many types
            failure = exc
    if bad_scaling:
        raise InputFileError(bad_scaling)
    notes = [str(w.message) for w in caught]
    broken = [n for n in notes if "truncated" in n or "extra bytes after the last HDU" in n]
    if failure is None and last is not None and last["datLoc"] + last["datSpan"] > len(raw):
        broken.append(f"last HDU ends at byte {last['datLoc'] + last['datSpan']} > {len(raw)}")
    if broken:
        note = broken[0].replace("\n", " ")
        raise InputFileError(f"{what} {path} is truncated or corrupt: {note}") from failure
    if failure is not None:
        msg = f"{what} {path} cannot be read as FITS ({type(failure).__name__}: {failure})"
        raise InputFileError(msg) from failure
    for note in notes:
        logger.info("%s: %s", path, note)
    if not hdus:
        raise InputFileError(f"{what} {path} contains no HDU")
    return path, hdus


def find_hdu(path: Path, hdus: list[Hdu], hdu: int | str | None, what: str) -> Hdu:
    """The HDU named/numbered ``hdu``, else the first one holding image data."""
    if hdu is not None:
        for item in hdus:
            if item.index == hdu or (isinstance(hdu, str) and item.name == hdu.upper()):
                return item
        names = [f"{h.index}:{h.name}" for h in hdus]
        raise InputFileError(f"{what} {path} has no HDU {hdu!r} (HDUs: {names})")
    for item in hdus:
        if item.data is not None and item.data.size > 0:
            return item
    raise InputFileError(f"{what} {path} has no HDU with image data (expected a 2-D image)")


def check_2d(path: Path, hdu: Hdu, what: str, *, floating: bool) -> np.ndarray:
    """The 2-D real array of ``hdu``; with ``floating``, integer pixels become float32."""
    data = hdu.data
    if data is None:
        raise InputFileError(f"{what} {where_in(path, hdu)} has no data (expected a 2-D image)")
    if data.ndim != 2:
        msg = f"{what} {where_in(path, hdu)} is {data.ndim}-D with shape {data.shape}; expected 2-D"
        raise InputFileError(msg)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputFileError(f"{what} {where_in(path, hdu)} has non-real dtype {data.dtype}")
    if floating:  # integer pixels (raw frames, BZERO/BSCALE already applied) -> float32
        data = to_float_image(data, where_in(path, hdu))
    return data


def put_card(header: fits.Header, key: str, value: Any) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, bool | int | float | str):
        raise ExposureError(f"metadata card {key!r} has unsupported type {type(value).__name__}")
    if isinstance(value, float) and not np.isfinite(value):
        raise ExposureError(f"metadata card {key!r} = {value!r} cannot be stored in FITS")
    card_key = key if PLAIN_KEY.match(key) else f"HIERARCH {key}"
    try:
        header[card_key] = value
    except ValueError as exc:
        raise ExposureError(f"metadata card {key!r} = {value!r}: {exc}") from exc


# ---------------------------------------------------------------------- kernels
def metadata_hdu(metadata: Mapping[str, Any]) -> fits.BinTableHDU:
    """One-row ``METADATA`` table holding ``metadata`` as JSON text."""
    text = json.dumps(jsonable(dict(metadata)), sort_keys=True)
    column = fits.Column(name="json", format=f"{max(len(text), 1)}A", array=np.array([text]))
    return fits.BinTableHDU.from_columns([column], name="METADATA")


def read_metadata_hdu(hdu: Hdu) -> dict[str, Any]:
    """Inverse of :func:`metadata_hdu`."""
    if hdu.data is None:
        return {}
    text = hdu.data["json"][0]
    text = text.decode() if isinstance(text, bytes) else str(text)
    return json.loads(text) if text.strip() else {}

