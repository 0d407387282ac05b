"""A WCS kept as its header cards until something asks for it.

An exposure read from a file psfmatch wrote carries its WCS as the cards of the file
(:class:`HeaderWcs`). Most steps never look at the WCS; they only write it again. Those
jobs then need neither :mod:`astropy.wcs` (about 0.6 s of CPU to import) nor a WCS
parse, and the cards are written back exactly as they were read. The first attribute
asked of a :class:`HeaderWcs` (``pixel_to_world_values``, ``wcs``, ``has_celestial``,
...) parses the cards into an :class:`astropy.wcs.WCS` once, the way any other exposure's
WCS is read (:func:`psfmatch.io._convert.wcs_from_header`), and answers from it.

Writing the cards back unchanged is what astropy would write: every file psfmatch
writes holds a WCS as :meth:`astropy.wcs.WCS.to_header` formats it, and parsing and
formatting that again gives the same cards (checked on every real image of the test
data, TAN, TPV, SIN).
"""

from __future__ import annotations

from typing import Any

__all__ = ["HeaderWcs"]


class HeaderWcs:
    """The celestial WCS of header ``cards``, parsed on first use.

    Parameters
    ----------
    cards : list of str
        The 80-character WCS cards, as in the file.
    where : str
        Names the file and HDU in a parsing error.
    """

    __slots__ = ("_parsed", "cards", "where")

    def __init__(self, cards: list[str], where: str):
        self.cards = list(cards)
        self.where = where
        self._parsed: Any = None

    def parsed(self) -> Any:
        """The :class:`astropy.wcs.WCS` of the cards (parsed once)."""
        if self._parsed is None:
            from astropy.io import fits

            from psfmatch.io._convert import wcs_from_header

            header = fits.Header.fromstring("".join(self.cards))
            self._parsed = wcs_from_header(header, self.where)
        return self._parsed

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.parsed(), name)

    def __repr__(self) -> str:
        parsed = "parsed" if self._parsed is not None else "not parsed yet"
        return f"HeaderWcs({len(self.cards)} cards of {self.where}, {parsed})"
