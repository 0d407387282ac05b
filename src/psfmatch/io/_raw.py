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

Mask codes
----------
External data-quality images: ZTF's bit mask (:data:`ZTF_MASK_BITS`) and the DECam
Community Pipeline's integer codes (:data:`DECAM_CP_MASK_VALUES`), as named planes.

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
    "DECAM_CP_MASK_VALUES",
    "NOTE_CARDS",
    "SATURATION_CARDS",
    "ZTF_MASK_BITS",
    "flag_saturated",
    "saturation_level",
    "scaling_problem",
    "to_float_image",
]

logger = logging.getLogger("psfmatch.io")

#: Header cards that give the saturation level, in the order they are looked for.
SATURATION_CARDS: tuple[str, ...] = ("SATURATE", "SATURATN")

_FLOAT32_MAX = float(np.finfo(np.float32).max)

#: ZTF ``mskimg`` bit index -> LSST plane (from the ``BITnn`` cards of the mask header).
#: Bits 13-15 are "reserved" and left unmapped. Bits 1 and 11 flag sources.
ZTF_MASK_BITS: dict[int, str] = {
    0: "STREAK",  # aircraft/satellite track
    1: "DETECTED",  # contains SExtractor detection
    2: "BAD",  # low responsivity
    3: "BAD",  # high responsivity
    4: "SUSPECT",  # noisy
    5: "SUSPECT",  # ghost from bright source
    6: "SUSPECT",  # possible ghost from charge spillage
    7: "CR",  # pixel spike (possible radiation hit)
    8: "SAT",  # saturated
    9: "BAD",  # dead (unresponsive)
    10: "NO_DATA",  # NaN
    11: "DETECTED",  # contains PSF-extracted source position
    12: "SUSPECT",  # halo from bright source
}

#: DECam Community Pipeline ``ood`` integer code -> LSST plane (0 = good). Bleed
#: trails (4) go to ``SAT``, as afw/ISR flags them, so every consumer that masks
#: saturation also masks bleeds.
DECAM_CP_MASK_VALUES: dict[int, str] = {
    1: "BAD",
    2: "NO_DATA",
    3: "SAT",
    4: "SAT",  # bleed trail
    5: "CR",
    6: "SUSPECT",  # low weight
    7: "SUSPECT",  # transient (differs from other exposures)
    8: "STREAK",
}


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
