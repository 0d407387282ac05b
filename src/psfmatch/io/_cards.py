"""FITS header cards without a FITS library: which keys mean what, formatting, parsing.

A FITS header is a sequence of 80-character ASCII cards ``KEYWORD = value / comment``.
psfmatch writes its own products with the card formatting astropy uses (so that a file
written here is byte-identical to one written through :mod:`astropy.io.fits`), and reads
them back with the value types astropy returns (``bool``, ``int``, ``float``, ``str``).
A card whose value this module cannot format itself (a string longer than one card, a
comment that does not fit) is formatted by astropy, imported only then.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

__all__ = [
    "CARD",
    "PLAIN_KEY",
    "STRUCTURAL_CARDS",
    "WCS_CARDS",
    "Card",
    "format_card",
    "parse_cards",
]

#: Header cards that describe the file's structure, not the exposure (never metadata).
STRUCTURAL_CARDS = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|XTENSION|EXTNAME|EXTVER|EXTLEVEL|"
    r"BSCALE|BZERO|BLANK|CHECKSUM|DATASUM|INHERIT|EXTTYPE|"
    r"LTV\d|LTM\d_\d|COMMENT|HISTORY|MP_.*)$"
)
#: A key that fits a plain 8-character FITS card (longer ones use HIERARCH).
PLAIN_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
#: Cards of a header WCS (never metadata).
WCS_CARDS = re.compile(
    r"^(WCSAXES|WCSNAME|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|"
    r"PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|MJDREF|"
    r"(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)|CPDIS\d|CQDIS\d|DP\d.*|DQ\d.*|D2IM.*)[A-Z]?$"
)

#: Characters per card.
CARD = 80
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")
_COMMENTARY = ("", "COMMENT", "HISTORY")


class Card(NamedTuple):
    """One parsed header card: its key, value (None when undefined) and raw text."""

    key: str
    value: Any
    image: str


# ---------------------------------------------------------------------- formatting
def _value_text(value: Any) -> str | None:
    """The value field as astropy writes it (right-justified in 20 columns), or None."""
    import numpy as np

    if isinstance(value, str):
        if value == "":
            return "''"
        quoted = "'" + f"{value.replace(chr(39), chr(39) * 2):8}" + "'"
        return f"{quoted:20}"
    if isinstance(value, bool | np.bool_):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, int | np.integer):
        return f"{int(value):>20d}"
    if isinstance(value, float | np.floating):
        text = str(value).replace("e", "E")
        if len(text) > 20 or not np.isfinite(value):
            return None
        return f"{text:>20}"
    return None


def format_card(key: str, value: Any, comment: str = "") -> str:
    """The 80-character card (or cards) ``key = value / comment``, as astropy writes it.

    ``key`` is a plain key (:data:`PLAIN_KEY`) or ``"HIERARCH <name>"``. Values: ``bool``,
    ``int``, ``float``, ``str`` (numpy scalars too). What does not fit one card is handed
    to astropy (long strings become ``CONTINUE`` cards there).
    """
    hierarch = key.startswith("HIERARCH ")
    text = _value_text(value)
    if text is not None and (hierarch or PLAIN_KEY.match(key)) and key.isascii():
        if hierarch:
            head, text = f"{key} ", text.strip()
        else:
            head = f"{key:8}"
        image = f"{head}= {text}" + (f" / {comment}" if comment else "")
        if hierarch and len(head) + 2 + len(text) == CARD + 1:
            image = f"{head[:-1]}= {text}" + (f" / {comment}" if comment else "")
        if len(image) <= CARD and image.isascii():
            return f"{image:80}"
    from astropy.io import fits

    return fits.Card(key, value, comment).image


# ---------------------------------------------------------------------- parsing
def _parse_value(text: str) -> tuple[Any, bool]:
    """``(value, is_string)`` of the value field of a card (comment included or not)."""
    text = text.strip()
    if text.startswith("'"):
        pieces, i = [], 1
        while i < len(text):
            j = text.find("'", i)
            if j < 0:
                raise ValueError(f"unterminated string in card value {text!r}")
            pieces.append(text[i:j])
            if text[j + 1 : j + 2] == "'":
                pieces.append("'")
                i = j + 2
                continue
            return "".join(pieces), True
        raise ValueError(f"unterminated string in card value {text!r}")
    text = text.split("/", 1)[0].strip()
    if text == "T":
        return True, False
    if text == "F":
        return False, False
    if _INT.match(text):
        return int(text), False
    if _FLOAT.match(text):
        return float(text.replace("D", "E").replace("d", "e")), False
    if text == "":
        return None, False
    raise ValueError(f"card value {text!r} is not a number, string or logical")


def parse_cards(raw: bytes) -> list[Card]:
    """The cards of a header (``raw``: whole 80-character cards up to and including END).

    Long strings continued on ``CONTINUE`` cards are joined (the ``&`` continuation marks
    removed) into one card whose ``image`` holds all of its 80-character pieces.
    Commentary cards (``COMMENT``, ``HISTORY``, blank keys) have the value None.

    Raises
    ------
    ValueError
        A card that is not ASCII, or a value that is neither a string, a logical, an
        integer, a real number nor undefined (complex values, for instance).
    """
    text = raw.decode("ascii")
    cards: list[Card] = []
    for start in range(0, len(text), CARD):
        image = text[start : start + CARD]
        key = image[:8].strip()
        if key == "END":
            break
        if key == "CONTINUE" and cards and isinstance(cards[-1].value, str) \
                and cards[-1].value.endswith("&") and image[8:10] == "  ":
            part, _ = _parse_value(image[10:])
            last = cards[-1]
            cards[-1] = Card(last.key, last.value[:-1] + (part or ""), last.image + image)
            continue
        if key == "HIERARCH" and "=" in image:
            name, _, rest = image[9:].partition("=")
            value, is_string = _parse_value(rest)
            key = name.strip()
        elif key in _COMMENTARY or key == "CONTINUE" or image[8:10] != "= ":
            cards.append(Card(key, None, image))
            continue
        else:
            value, is_string = _parse_value(image[10:])
        if is_string:
            value = value.rstrip() if not value.endswith("&") else value
        cards.append(Card(key, value, image))
    # a string that ended in '&' without a CONTINUE card keeps its '&'; strip the others
    return [Card(c.key, c.value.rstrip(), c.image) if isinstance(c.value, str) else c
            for c in cards]
