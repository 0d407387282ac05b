r"""Raw-frame conventions: integer pixels and their FITS scaling, saturation levels.

Integer images
--------------
A FITS image with ``BITPIX`` 8, 16, 32 or 64 stores integers :math:`n`; the physical
value is :math:`v = \mathrm{BZERO} + \mathrm{BSCALE}\cdot n` (defaults 0 and 1).
``BITPIX = 16`` with ``BZERO = 32768`` is the usual way to store unsigned 16-bit raw CCD
frames. astropy applies the scaling when it reads the data (unsigned integers stay
integers, other scalings give float32, ``BLANK`` pixels NaN); psfmatch then converts any
integer array to float32 (exact below :math:`2^{24}`). A scaling that cannot give finite
float32 values (``BZERO``/``BSCALE`` not a finite number, ``BSCALE = 0``, or a range
beyond :math:`\pm 3.4\times10^{38}`) is refused with :func:`scaling_problem`'s text.

Saturation
----------
Pixels whose value is at or above a saturation level :math:`L` (in the image's own
units, after the scaling) get the ``SAT`` plane: :math:`L` from the pairs sheet
(``<role>_saturation``) or the header card ``SATURATE`` (else ``SATURATN``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch.provenance import NOTE_CARDS

__all__ = [
    "NOTE_CARDS",
    "SATURATION_CARDS",
    "flag_saturated",
    "saturation_level",
    "scaling_problem",
    "to_float_image",
]

logger = logging.getLogger("psfmatch.io")

#: Header cards that give the saturation level, in the order they are looked for.
SATURATION_CARDS: tuple[str, ...] = ("SATURATE", "SATURATN")

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scaling_problem(header: Mapping[str, Any]) -> str | None:
    """Why an integer HDU's ``BZERO``/``BSCALE`` cannot give finite float values, or None.

    Only integer data (``BITPIX`` > 0) are checked; a missing card takes its default.
    """
    bitpix = header.get("BITPIX")
    if not isinstance(bitpix, int) or bitpix <= 0:
        return None
    for key in ("BSCALE", "BZERO"):
        if key in header and not _number(header[key]):
            return f"{key} = {header[key]!r} is not a finite number"
    bscale = float(header.get("BSCALE", 1.0))
    bzero = float(header.get("BZERO", 0.0))
    if bscale == 0.0:
        return f"BSCALE = 0 maps every pixel to BZERO = {bzero:g}"
    span = abs(bscale) * 2.0 ** (bitpix - 1)
    if not max(abs(bzero - span), abs(bzero + span)) < _FLOAT32_MAX:
        return (f"BZERO = {bzero:g} and BSCALE = {bscale:g} put {bitpix}-bit integers beyond "
                f"the float32 range (+-{_FLOAT32_MAX:.3g})")
    return None


def to_float_image(data: np.ndarray, where: str) -> np.ndarray:
    """``data`` as float32 (integers converted, the values unchanged up to float32 rounding).

    Image, mask and variance: only the image passes here; nothing else is changed.
    """
    if np.issubdtype(data.dtype, np.integer):
        logger.info("%s: integer image (%s) read as float32", where, data.dtype)
        return data.astype(np.float32)
    return data


def saturation_level(
    metadata: Mapping[str, Any], saturation: float | str | None
) -> tuple[float, str] | None:
    """The saturation level to apply and where it came from, or None.

    ``saturation``: a number (the pairs sheet's ``<role>_saturation``), ``"header"``
    (the first of :data:`SATURATION_CARDS` in ``metadata`` that is a finite number) or
    None (no flagging).
    """
    if saturation is None:
        return None
    if saturation == "header":
        for key in SATURATION_CARDS:
            if _number(metadata.get(key)):
                return float(metadata[key]), f"header {key}"
        return None
    return float(saturation), "pairs sheet"


def flag_saturated(
    image: np.ndarray, mask: np.ndarray, sat_bit: int, level: float
) -> int:
    """Set bit ``sat_bit`` of ``mask`` (in place) where ``image >= level``; return the count.

    Image and variance are unchanged; NaN pixels are never flagged.
    """
    with np.errstate(invalid="ignore"):
        hit = image >= level
    mask[hit] |= np.int32(1 << sat_bit)
    return int(np.count_nonzero(hit))
