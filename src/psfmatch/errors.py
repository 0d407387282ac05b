"""Typed errors. Every message names the file, HDU, config key or pair and the bad value."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExposureError",
    "InputFileError",
    "PairsSheetError",
    "PsfMatchError",
]


class PsfMatchError(Exception):
    """Base class of every error psfmatch raises on purpose."""


class ConfigError(PsfMatchError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class PairsSheetError(PsfMatchError, ValueError):
    """A row of the pairs sheet is invalid (missing file, duplicate id, bad column)."""


class ExposureError(PsfMatchError, ValueError):
    """Image, mask and variance arrays do not form a valid exposure."""


class InputFileError(PsfMatchError, OSError):
    """An input file cannot be read as what it is declared to be.

    The message always names the file (and HDU where one is involved).
    """
