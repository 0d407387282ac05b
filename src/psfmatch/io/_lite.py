"""FITS files psfmatch writes, read and written with numpy alone.

The products psfmatch exchanges between steps (exposures in the afw layout, kernels,
stamp cubes, PSF images) are plain uncompressed FITS files. Reading them through
:mod:`astropy.io.fits` costs every job the astropy import (about half a second of CPU)
and each array up to three full-size copies; here each header is parsed with
:mod:`psfmatch.io._cards` and each data unit read with one ``readinto`` into a fresh
array, swapped to native byte order in place. The writer produces the same bytes as
astropy's writer for what psfmatch writes (headers card for card, big-endian data
padded to 2880-byte blocks), converting ``chunk`` bytes at a time so that writing never
makes a full-size copy.

Supported: ``BITPIX`` 8, 16, 32, 64, -32, -64 without ``BSCALE``/``BZERO``/``BLANK``,
image extensions and the one-row, one-column character table psfmatch stores JSON in.
Anything else (gzip, tile compression, scaled integers, other tables, random groups)
raises :class:`LiteUnsupportedError`, and the caller reads the file with astropy instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psfmatch.io._cards import Card, format_card, parse_cards
from psfmatch.io._files import atomic_output

__all__ = [
    "BLOCK",
    "BandWriter",
    "HduOut",
    "LiteHdu",
    "LiteUnsupportedError",
    "RowReader",
    "band_writer",
    "image_header",
    "primary_header",
    "read_data",
    "read_json_table",
    "scan",
    "table_hdu",
    "write_file",
]

#: Bytes per FITS block (headers and data units are padded to it).
BLOCK = 2880
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_BITPIX = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
_CHUNK = 4 << 20


class LiteUnsupportedError(ValueError):
    """The file is not one this module handles; read it with astropy."""


@dataclass
class LiteHdu:
    """One header-data unit: its cards and where its data unit lies in the file."""

    index: int
    name: str
    cards: list[Card]
    values: dict[str, Any]
    kind: str  # "image", "table" or "empty"
    bitpix: int
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    data: np.ndarray | None = field(default=None, repr=False)

    @property
    def dtype(self) -> np.dtype:
        """Big-endian dtype of the data unit (images)."""
        return np.dtype(_DTYPES[self.bitpix])


def _read_header(handle: Any, path: Path) -> bytes | None:
    chunks = []
    while True:
        block = handle.read(BLOCK)
        if not block:
            if chunks:
                raise LiteUnsupportedError(f"{path}: header without END")
            return None
        if len(block) < BLOCK:
            raise LiteUnsupportedError(f"{path}: truncated header block")
        chunks.append(block)
        for i in range(0, BLOCK, 80):
            if block[i : i + 8] == b"END     ":
                return b"".join(chunks)


def scan(path: str | os.PathLike[str]) -> list[LiteHdu]:
    """Every HDU's header of ``path`` and where its data unit is (no data read).

    Raises
    ------
    LiteUnsupportedError
        gzip-compressed, tile-compressed, scaled or otherwise unsupported content, a
        truncated file, or a header this module cannot parse.
    OSError
        The file cannot be opened.
    """
    path = Path(path)
    size = path.stat().st_size
    hdus: list[LiteHdu] = []
    with open(path, "rb", buffering=0) as handle:
        if handle.read(2) == b"\x1f\x8b":
            raise LiteUnsupportedError(f"{path}: gzip-compressed")
        handle.seek(0)
        while True:
            raw = _read_header(handle, path)
            if raw is None:
                break
            try:
                cards = parse_cards(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise LiteUnsupportedError(f"{path}: header not parsed here ({exc})") from exc
            values = {c.key: c.value for c in cards if c.value is not None}
            hdus.append(_describe(path, len(hdus), cards, values, handle.tell(), size))
            handle.seek(hdus[-1].offset + -(-hdus[-1].nbytes // BLOCK) * BLOCK)
            if handle.tell() >= size:
                break
    if not hdus:
        raise LiteUnsupportedError(f"{path}: no HDU")
    return hdus


def _describe(path: Path, index: int, cards: list[Card], values: dict[str, Any],
              offset: int, size: int) -> LiteHdu:
    first = cards[0].key if cards else ""
    if (index == 0) != (first == "SIMPLE"):
        raise LiteUnsupportedError(f"{path}: HDU {index} starts with {first!r}")
    bitpix, naxis = values.get("BITPIX"), values.get("NAXIS")
    if bitpix not in _DTYPES or not isinstance(naxis, int) or not 0 <= naxis <= 999:
        raise LiteUnsupportedError(f"{path}: HDU {index} has BITPIX {bitpix!r}, NAXIS {naxis!r}")
    if any(k in values for k in ("BSCALE", "BZERO", "BLANK", "ZIMAGE", "GROUPS", "THEAP")) \
            or values.get("PCOUNT", 0) != 0 or values.get("GCOUNT", 1) != 1:
        raise LiteUnsupportedError(f"{path}: HDU {index} holds scaled, compressed or grouped data")
    shape = tuple(int(values[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
    count = int(np.prod(shape)) if naxis else 0
    xtension = values.get("XTENSION", "IMAGE") if index else "IMAGE"
    if xtension == "IMAGE":
        kind = "image" if naxis else "empty"
    elif xtension == "BINTABLE" and _json_table(values):
        kind = "table"
    else:
        msg = f"{path}: HDU {index} is a {xtension} this reader does not handle"
        raise LiteUnsupportedError(msg)
    nbytes = count * abs(bitpix) // 8
    end = offset + -(-nbytes // BLOCK) * BLOCK
    if end > size:
        raise LiteUnsupportedError(f"{path}: truncated (data unit ends at byte {end} > {size})")
    name = str(values.get("EXTNAME", "PRIMARY" if index == 0 else "")).upper()
    return LiteHdu(index, name, cards, values, kind, bitpix, shape, offset, nbytes)


def _json_table(values: dict[str, Any]) -> bool:
    form = str(values.get("TFORM1", ""))
    return (values.get("TFIELDS") == 1 and values.get("NAXIS2") == 1 and values.get("BITPIX") == 8
            and form.endswith("A") and form[:-1].isdigit()
            and int(form[:-1]) == values.get("NAXIS1"))


def read_data(path: str | os.PathLike[str], hdu: LiteHdu) -> np.ndarray:
    """The image of ``hdu`` as a fresh native-endian array (one read, swapped in place)."""
    data = np.empty(hdu.shape, dtype=hdu.dtype)
    with open(path, "rb", buffering=0) as handle:
        handle.seek(hdu.offset)
        view = memoryview(data.reshape(-1).view(np.uint8))
        got = 0
        while got < hdu.nbytes:
            n = handle.readinto(view[got:])
            if not n:
                raise LiteUnsupportedError(f"{path}: data unit of HDU {hdu.index} is truncated")
            got += n
    data.byteswap(inplace=True)
    return data.view(data.dtype.newbyteorder("="))


def read_json_table(path: str | os.PathLike[str], hdu: LiteHdu) -> str:
    """The text of psfmatch's one-row, one-column character table (JSON)."""
    with open(path, "rb") as handle:
        handle.seek(hdu.offset)
        raw = handle.read(hdu.nbytes)
    return raw.rstrip(b"\0 ").decode("ascii")


class RowReader:
    """Rows of a 2-D image HDU, read on demand with ``pread`` (no map, no full array).

    ``reader[a:b]`` returns rows ``a..b-1`` as a fresh native-endian array; resident
    memory is the band asked for, not the image.
    """

    def __init__(self, path: str | os.PathLike[str], hdu: LiteHdu):
        if len(hdu.shape) != 2:
            raise LiteUnsupportedError(f"{path}: HDU {hdu.index} is not a 2-D image")
        self.path, self.hdu, self.shape = Path(path), hdu, hdu.shape
        self._fd = os.open(self.path, os.O_RDONLY)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        n = max(0, stop - start)
        row_bytes = self.shape[1] * self.hdu.dtype.itemsize
        out = np.empty((n, self.shape[1]), dtype=self.hdu.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        got = 0
        while got < n * row_bytes:
            k = os.preadv(self._fd, [view[got:]], self.hdu.offset + start * row_bytes + got)
            if not k:
                raise LiteUnsupportedError(f"{self.path}: short read of HDU {self.hdu.index}")
            got += k
        out.byteswap(inplace=True)
        return out.view(out.dtype.newbyteorder("="))

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- writing
@dataclass
class HduOut:
    """One HDU to write: its card images (END excluded) and its data."""

    cards: list[str]
    data: np.ndarray | bytes | None = None


def _structure(primary: bool, data: np.ndarray | None) -> list[str]:
    if data is None:
        bitpix, shape = 8, ()
    else:
        bitpix = _BITPIX.get(data.dtype.newbyteorder("="))
        if bitpix is None:
            raise LiteUnsupportedError(f"dtype {data.dtype} is not written here")
        shape = data.shape
    cards = ([format_card("SIMPLE", True, "conforms to FITS standard")] if primary
             else [format_card("XTENSION", "IMAGE", "Image extension")])
    cards += [format_card("BITPIX", bitpix, "array data type"),
              format_card("NAXIS", len(shape), "number of array dimensions")]
    cards += [format_card(f"NAXIS{i}", n) for i, n in enumerate(shape[::-1], start=1)]
    if primary:
        cards.append(format_card("EXTEND", True))
    else:
        cards += [format_card("PCOUNT", 0, "number of parameters"),
                  format_card("GCOUNT", 1, "number of groups")]
    return cards


def primary_header(cards: Iterable[str] = ()) -> HduOut:
    """An empty PRIMARY HDU with ``cards`` (formatted card images) after ``EXTEND``."""
    return HduOut(_structure(True, None) + list(cards))


def image_header(data: np.ndarray, name: str, cards: Iterable[str] = (),
                 after_name: Iterable[str] = ()) -> HduOut:
    """An image extension as astropy's ``ImageHDU(data, header, name=name)`` writes it.

    Order: the structural cards, ``cards``, ``EXTNAME``, then ``after_name`` (cards
    added to the header after the HDU was made). Zero-size arrays keep their shape
    (``NAXISn = 0``), as astropy writes them; 0-d arrays are not written here.
    """
    if data.ndim == 0:
        raise LiteUnsupportedError("0-d arrays are written by astropy")
    return HduOut(_structure(False, data) + list(cards)
                  + [format_card("EXTNAME", name, "extension name")] + list(after_name), data)


def table_hdu(text: str, name: str = "METADATA") -> HduOut:
    """psfmatch's one-row, one-column (``json``) character table holding ``text``."""
    raw = text.encode("ascii")
    width = max(len(raw), 1)
    cards = [format_card("XTENSION", "BINTABLE", "binary table extension"),
             format_card("BITPIX", 8, "array data type"),
             format_card("NAXIS", 2, "number of array dimensions"),
             format_card("NAXIS1", width, "length of dimension 1"),
             format_card("NAXIS2", 1, "length of dimension 2"),
             format_card("PCOUNT", 0, "number of group parameters"),
             format_card("GCOUNT", 1, "number of groups"),
             format_card("TFIELDS", 1, "number of table fields"),
             format_card("TTYPE1", "json"), format_card("TFORM1", f"{width}A"),
             format_card("EXTNAME", name, "extension name")]
    return HduOut(cards, raw.ljust(width, b"\0"))


def header_bytes(cards: Sequence[str]) -> bytes:
    """Cards plus ``END``, padded with blanks to whole blocks."""
    text = "".join(cards) + f"{'END':80}"
    raw = text.encode("ascii")
    return raw + b" " * (-len(raw) % BLOCK)


def _data_chunks(data: np.ndarray | bytes) -> Iterator[bytes]:
    if isinstance(data, bytes):
        yield data
        yield b"\0" * (-len(data) % BLOCK)
        return
    flat = np.ascontiguousarray(data).reshape(-1)
    big = flat.dtype.newbyteorder(">")
    step = max(1, _CHUNK // flat.itemsize)
    for start in range(0, flat.size, step):
        yield flat[start : start + step].astype(big).tobytes()
    yield b"\0" * (-flat.nbytes % BLOCK)


def write_file(path: str | os.PathLike[str], hdus: Sequence[HduOut]) -> Path:
    """Write ``hdus`` to ``path`` atomically (big-endian data, converted chunk by chunk)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        for hdu in hdus:
            handle.write(header_bytes(hdu.cards))
            if hdu.data is not None:
                for chunk in _data_chunks(hdu.data):
                    handle.write(chunk)
    return Path(path)


class BandWriter:
    """A file whose headers are written first and whose image data arrive by rows.

    Every data unit listed in ``shapes`` is 2-D; :meth:`write` puts rows of unit ``i``
    at their place (``pwrite``), in any order. The zero padding after each unit is
    reserved when the file is created.
    """

    def __init__(self, handle_fd: int, hdus: Sequence[HduOut], dtypes: Sequence[np.dtype],
                 shapes: Sequence[tuple[int, int]]):
        self.fd = handle_fd
        self.offsets: list[int] = []
        self.shapes = list(shapes)
        self.dtypes = [np.dtype(d).newbyteorder(">") for d in dtypes]
        offset = 0
        data_units = iter(zip(self.shapes, self.dtypes, strict=True))
        for hdu in hdus:
            head = header_bytes(hdu.cards)
            os.pwrite(self.fd, head, offset)
            offset += len(head)
            if isinstance(hdu.data, bytes):
                body = hdu.data + b"\0" * (-len(hdu.data) % BLOCK)
                os.pwrite(self.fd, body, offset)
                offset += len(body)
            elif hdu.data is not None:
                shape, dtype = next(data_units)
                self.offsets.append(offset)
                offset += -(-shape[0] * shape[1] * dtype.itemsize // BLOCK) * BLOCK
        os.ftruncate(self.fd, offset)

    def write(self, unit: int, start: int, rows: np.ndarray) -> None:
        """Rows ``start .. start + len(rows) - 1`` of data unit ``unit``."""
        dtype = self.dtypes[unit]
        big = np.ascontiguousarray(rows, dtype=dtype)
        row_bytes = self.shapes[unit][1] * dtype.itemsize
        os.pwrite(self.fd, big.tobytes(), self.offsets[unit] + start * row_bytes)


@contextmanager
def band_writer(path: str | os.PathLike[str], hdus: Sequence[HduOut]) -> Iterator[BandWriter]:
    """:class:`BandWriter` on a temporary file renamed onto ``path`` on success.

    ``hdus``: the HDUs, each image's ``data`` a stand-in of its dtype and shape (a
    zero-stride view, ``np.broadcast_to``) for rows written later, or ``bytes``
    written at once.
    """
    with atomic_output(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            images = [h.data for h in hdus if isinstance(h.data, np.ndarray)]
            yield BandWriter(fd, hdus, [a.dtype for a in images], [a.shape for a in images])
        finally:
            os.close(fd)
