"""Exposures in the afw layout, as psfmatch writes them, without astropy.

The layout (:func:`psfmatch.io.write_exposure`): PRIMARY with the metadata cards, then
``IMAGE`` (float32), ``MASK`` (int32, ``MP_<plane> = bit``), ``VARIANCE`` (float32), each
with ``INHERIT``, ``EXTTYPE``, the WCS cards, afw's ``PHYSICAL`` alternate WCS ``A`` and
``LTV1/2``; optionally ``PSF`` (float64). :func:`exposure_hdus` builds those HDUs card
for card as astropy writes them; :func:`read_afw` reads a file that has exactly that
structure (every card the writer puts there, in its place) and raises
:class:`~psfmatch.io._lite.LiteUnsupportedError` for anything else, which the caller then reads with
astropy. The two give the same :class:`~psfmatch.exposure.Exposure` (arrays, planes,
metadata, ``xy0``, PSF); the WCS comes back as a :class:`~psfmatch.io._wcs.HeaderWcs`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psfmatch.exposure import DEFAULT_MASK_PLANES, MAX_MASK_BIT, Exposure
from psfmatch.io._cards import PLAIN_KEY, STRUCTURAL_CARDS, WCS_CARDS, format_card
from psfmatch.io._lite import (
    HduOut,
    LiteHdu,
    LiteUnsupportedError,
    image_header,
    primary_header,
    read_data,
    scan,
)
from psfmatch.io._wcs import HeaderWcs

__all__ = [
    "AFW_EXTENSIONS",
    "AfwHeader",
    "add_no_data_plane",
    "exposure_hdus",
    "read_afw",
    "read_afw_header",
    "read_grid",
    "read_mask",
    "same_file_content",
    "wcs_cards",
]

#: The image extensions of the layout, with their pixel types.
AFW_EXTENSIONS = {"IMAGE": np.float32, "MASK": np.int32, "VARIANCE": np.float32}
_TAIL_KEYS = ("CRVAL1A", "CRVAL2A", "CRPIX1A", "CRPIX2A", "CTYPE1A", "CTYPE2A", "CUNIT1A",
              "CUNIT2A", "WCSNAMEA", "LTV1", "LTV2")


def metadata_cards(metadata: Mapping[str, Any]) -> list[str]:
    """The PRIMARY cards of ``metadata`` (structural keys skipped), as ``put_card`` writes them."""
    from psfmatch.errors import ExposureError

    cards = []
    for key, value in metadata.items():
        if STRUCTURAL_CARDS.match(key):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, bool | int | float | str):
            kind = type(value).__name__
            raise ExposureError(f"metadata card {key!r} has unsupported type {kind}")
        if isinstance(value, float) and not np.isfinite(value):
            raise ExposureError(f"metadata card {key!r} = {value!r} cannot be stored in FITS")
        try:
            cards.append(format_card(key if PLAIN_KEY.match(key) else f"HIERARCH {key}", value))
        except ValueError as exc:  # astropy refuses it (non-ASCII text, ...)
            raise ExposureError(f"metadata card {key!r} = {value!r}: {exc}") from exc
    return cards


def wcs_cards(wcs: Any) -> list[str]:
    """The WCS cards ``write_exposure`` puts in each extension (none without a WCS)."""
    if wcs is None:
        return []
    if isinstance(wcs, HeaderWcs):
        return list(wcs.cards)
    return [card.image for card in wcs.to_header(relax=True).cards]


def _tail(xy0: tuple[int, int]) -> list[str]:
    x0, y0 = xy0
    values = (x0, y0, 1.0, 1.0, "LINEAR", "LINEAR", "PIXEL", "PIXEL", "PHYSICAL", -x0, -y0)
    return [format_card(k, v) for k, v in zip(_TAIL_KEYS, values, strict=True)]


def plane_cards(planes: Mapping[str, int]) -> list[str]:
    """``MP_<plane> = bit`` cards of the MASK extension, by bit."""
    out = []
    for plane, bit in sorted(planes.items(), key=lambda kv: kv[1]):
        key = f"MP_{plane}"
        out.append(format_card(key if PLAIN_KEY.match(key) else f"HIERARCH {key}", int(bit)))
    return out


def exposure_hdus(*, metadata: Mapping[str, Any], wcs: Any, xy0: tuple[int, int],
                  mask_planes: Mapping[str, int], arrays: Mapping[str, np.ndarray],
                  psf_image: np.ndarray | None = None) -> list[HduOut]:
    """The HDUs of an afw-layout file, card for card as ``write_exposure`` writes them.

    ``arrays``: ``IMAGE``, ``MASK``, ``VARIANCE`` (their dtypes and shapes go into the
    headers; a zero-stride view stands for an image written later by rows).
    """
    hdus = [primary_header(metadata_cards(metadata))]
    common = wcs_cards(wcs)
    tail = _tail(xy0)
    for name in AFW_EXTENSIONS:
        cards = [format_card("INHERIT", True), format_card("EXTTYPE", name), *common, *tail]
        if name == "MASK":
            cards += plane_cards(mask_planes)
        hdus.append(image_header(arrays[name], name, cards))
    if psf_image is not None:
        hdus.append(image_header(np.asarray(psf_image, dtype=np.float64), "PSF"))
    return hdus


def _check_skeleton(path: Path, hdus: list[LiteHdu]) -> None:
    """Raise LiteUnsupportedError unless ``hdus`` is exactly what ``exposure_hdus`` writes."""
    names = [h.name for h in hdus]
    if names not in (["PRIMARY", *AFW_EXTENSIONS], ["PRIMARY", *AFW_EXTENSIONS, "PSF"]):
        raise LiteUnsupportedError(f"{path}: HDUs {names} are not psfmatch's afw layout")
    if hdus[0].kind != "empty" or [c.image for c in hdus[0].cards[:4]] \
            != primary_header().cards:
        raise LiteUnsupportedError(f"{path}: PRIMARY is not psfmatch's")
    shape = hdus[1].shape
    for hdu, (name, dtype) in zip(hdus[1:4], AFW_EXTENSIONS.items(), strict=True):
        images = [c.image for c in hdu.cards]
        if hdu.kind != "image" or hdu.shape != shape or len(shape) != 2 \
                or hdu.dtype.newbyteorder("=") != np.dtype(dtype):
            msg = f"{path}: {name} is not a {np.dtype(dtype)} image of shape {shape}"
            raise LiteUnsupportedError(msg)
        head = image_header(np.broadcast_to(np.zeros((), dtype), shape), name).cards
        if images[:7] != head[:7] or images[-1] != head[-1] \
                or images[7:9] != [format_card("INHERIT", True), format_card("EXTTYPE", name)]:
            raise LiteUnsupportedError(f"{path}: {name} header is not psfmatch's")
    if len(hdus) == 5:
        psf = hdus[4]
        if psf.kind != "image" or psf.bitpix != -64 or len(psf.shape) != 2 \
                or [c.image for c in psf.cards] != image_header(
                    np.broadcast_to(np.zeros((), np.float64), psf.shape), "PSF").cards:
            raise LiteUnsupportedError(f"{path}: PSF HDU is not psfmatch's")


def _split_image_header(path: Path, hdu: LiteHdu) -> tuple[list[str], tuple[int, int]]:
    """The WCS cards and ``xy0`` of an IMAGE extension in the layout (checked)."""
    cards = hdu.cards[9:-1]
    tail = cards[-len(_TAIL_KEYS):]
    if [c.key for c in tail] != list(_TAIL_KEYS):
        raise LiteUnsupportedError(f"{path}: IMAGE lacks the PHYSICAL/LTV cards in place")
    ltv = (tail[-2].value, tail[-1].value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ltv):
        raise LiteUnsupportedError(f"{path}: non-integer LTV1/2")
    xy0 = (-ltv[0], -ltv[1])
    if [c.image for c in tail] != _tail(xy0):
        raise LiteUnsupportedError(f"{path}: PHYSICAL/LTV cards differ from psfmatch's")
    block = cards[: -len(_TAIL_KEYS)]
    if any(c.key in ("CONTINUE", "COMMENT", "HISTORY", "") or c.value is None for c in block):
        raise LiteUnsupportedError(f"{path}: WCS block with commentary or undefined cards")
    return [c.image for c in block], xy0


@dataclass
class AfwHeader:
    """What the headers of a file in psfmatch's afw layout say (no pixels read)."""

    hdus: list[LiteHdu]
    shape: tuple[int, int]
    xy0: tuple[int, int]
    mask_planes: dict[str, int]
    metadata: dict[str, Any]
    wcs: HeaderWcs | None


def read_afw_header(path: str | os.PathLike[str]) -> AfwHeader:
    """The headers of a file in psfmatch's afw layout (else :class:`LiteUnsupportedError`)."""
    path = Path(path)
    hdus = scan(path)
    _check_skeleton(path, hdus)
    block, xy0 = _split_image_header(path, hdus[1])
    mask_tail = hdus[2].cards[9 + len(block) + len(_TAIL_KEYS):-1]
    planes = {c.key[3:]: c.value for c in mask_tail if c.key.startswith("MP_")}
    if len(planes) != len(mask_tail) or [c.image for c in mask_tail] != plane_cards(planes) \
            or any(not isinstance(v, int) or isinstance(v, bool) for v in planes.values()):
        raise LiteUnsupportedError(f"{path}: MASK plane cards are not psfmatch's")
    for hdu in hdus[1:4]:
        cards = [c.image for c in hdu.cards[9 : 9 + len(block) + len(_TAIL_KEYS)]]
        extra = len(mask_tail) if hdu.name == "MASK" else 0
        if cards != block + _tail(xy0) or len(hdu.cards) != 10 + len(cards) + extra:
            raise LiteUnsupportedError(f"{path}: {hdu.name} WCS cards differ from IMAGE's")
    metadata: dict[str, Any] = {}
    for card in hdus[0].cards[4:]:
        key, value = card.key, card.value
        if not key or STRUCTURAL_CARDS.match(key) or WCS_CARDS.match(key):
            continue
        if isinstance(value, bool | int | float | str):
            metadata[key] = value
    keys = {c.key for c in hdus[1].cards[9 : 9 + len(block)]}
    wcs = HeaderWcs(block, f"{path} [HDU 1 'IMAGE']") if keys & {"CTYPE1", "CTYPE2"} else None
    return AfwHeader(hdus, hdus[1].shape, xy0, dict(planes) or dict(DEFAULT_MASK_PLANES),
                     metadata, wcs)


def add_no_data_plane(planes: dict[str, int]) -> int:
    """The ``NO_DATA`` bit of ``planes``, added at the lowest free bit if absent."""
    if "NO_DATA" not in planes:  # as every reader adds a plane
        planes["NO_DATA"] = min(set(range(MAX_MASK_BIT + 1)) - set(planes.values()))
    return planes["NO_DATA"]


def read_afw(path: str | os.PathLike[str]) -> Exposure:
    """An exposure from a file in psfmatch's afw layout (else :class:`LiteUnsupportedError`).

    Same result as the astropy reader: metadata from the PRIMARY cards (not structural,
    not WCS, values of type bool/int/float/str; a later card of one key wins), planes
    from ``MP_*``, ``xy0`` from ``LTV1/2``, the PSF HDU as an ``ImagePsf``, and non-finite
    image pixels flagged ``NO_DATA``. The WCS is a :class:`HeaderWcs` (None without
    ``CTYPE1/2``).
    """
    from psfmatch.psf import ImagePsf

    path = Path(path)
    head = read_afw_header(path)
    hdus, planes = head.hdus, head.mask_planes
    image, mask, variance = (read_data(path, h) for h in hdus[1:4])
    psf = ImagePsf(read_data(path, hdus[4])) if len(hdus) == 5 else None
    no_data = ~np.isfinite(image)
    if no_data.any():
        mask[no_data] |= np.int32(1 << add_no_data_plane(planes))
    return Exposure(image=image, mask=mask, variance=variance, mask_planes=planes,
                    wcs=head.wcs, psf=psf, metadata=head.metadata, xy0=head.xy0)


def read_grid(path: str | os.PathLike[str]) -> tuple[tuple[int, int], tuple[int, int],
                                                     tuple[str, ...]] | None:
    """``(shape, xy0, WCS cards)`` of a file in psfmatch's afw layout (headers only), or None."""
    try:
        head = read_afw_header(path)
    except (LiteUnsupportedError, OSError):
        return None
    cards = tuple(head.wcs.cards) if head.wcs is not None else ()
    return head.shape, head.xy0, cards


def read_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, int]] | None:
    """The MASK array and planes of a file in psfmatch's afw layout, or None (other files).

    The planes and bits are those :func:`read_afw` gives, except that non-finite image
    pixels are not looked for (the image is not read).
    """
    try:
        head = read_afw_header(path)
        return read_data(path, head.hdus[2]), head.mask_planes
    except (LiteUnsupportedError, OSError):
        return None


def same_file_content(path: str | os.PathLike[str], hdus: list[HduOut]) -> bool:
    """Whether the file at ``path`` holds exactly what writing ``hdus`` would produce.

    Headers are compared card for card, data unit by data unit (big-endian, chunk by
    chunk against the file's bytes); the file may be in any layout (False when it
    cannot be scanned). Reads the file once; allocates one chunk.
    """
    from psfmatch.io._lite import _data_chunks, header_bytes

    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as handle:
            for hdu in hdus:
                head = header_bytes(hdu.cards)
                if handle.read(len(head)) != head:
                    return False
                if hdu.data is None:
                    continue
                for chunk in _data_chunks(hdu.data):
                    if handle.read(len(chunk)) != chunk:
                        return False
            return handle.tell() == size
    except OSError:
        return False
