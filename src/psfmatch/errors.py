"""Typed errors. Every message names the file, HDU, config key or pair and the bad value."""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "BadSubtractionError",
    "ConfigError",
    "ExposureError",
    "InputFileError",
    "ExposuresSheetError",
    "InsufficientAreaError",
    "InsufficientCandidatesError",
    "KernelTooLargeError",
    "MemoryBudgetError",
    "PairsSheetError",
    "PsfMatchError",
    "PsfModelError",
    "RegistrationError",
    "TemplateCoverageError",
    "UndeclaredConfigError",
    "VarianceScaleError",
    "WarpError",
]


class PsfMatchError(Exception):
    """Base class of every error psfmatch raises on purpose."""


class ConfigError(PsfMatchError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class PairsSheetError(PsfMatchError, ValueError):
    """A row of the pairs sheet is invalid (missing file, duplicate id, bad column)."""


class ExposuresSheetError(PsfMatchError, ValueError):
    """A row of the model-PSF-matching exposures sheet is invalid."""


class PsfModelError(PsfMatchError, ValueError):
    """An exposure has no PSF model, or a PSF model cannot be evaluated or embedded."""


class KernelTooLargeError(PsfMatchError, ValueError):
    """The matching kernel does not fit in the PSF images (docs/model-psf.md#kernel-size-rule)."""


class InsufficientAreaError(PsfMatchError, ValueError):
    """Too few spatial cells fit in the exposure to match its PSF (docs/model-psf.md#cell-grid)."""


class ExposureError(PsfMatchError, ValueError):
    """Image, mask and variance arrays do not form a valid exposure."""


class WarpError(PsfMatchError, ValueError):
    """The template cannot be warped onto the science grid (WCS, overlap, kernel, args)."""


class InputFileError(PsfMatchError, OSError):
    """An input file cannot be read as what it is declared to be.

    The message always names the file (and HDU where one is involved).
    """


class InsufficientCandidatesError(PsfMatchError, RuntimeError):
    """Too few kernel candidates survive (ip_diffim's ``InsufficientKernelSourcesError``).

    ``counts`` maps each stage (detected, selected, single-kernel good, ...) to the number
    of candidates left after it, so the message says where they were lost.
    """

    def __init__(self, message: str, counts: dict[str, int] | None = None) -> None:
        self.bare_message = message
        self.counts = dict(counts or {})
        detail = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        super().__init__(f"{message} (candidates per stage: {detail})" if detail else message)

    def __reduce__(self):  # keep counts through pickling (multiprocessing, Snakemake)
        return (type(self), (self.bare_message, self.counts))


class MemoryBudgetError(PsfMatchError, ValueError):
    """A job declares less memory (``mem_mb``) than its step is estimated to need.

    The message names the step, the image size, the estimate and the declared value.
    """


class TemplateCoverageError(PsfMatchError, ValueError):
    """Too little of the science image has template data (ip_diffim ``NoWorkFound``).

    The message names the pair, the covered fraction and the required one.
    """


class VarianceScaleError(PsfMatchError, ValueError):
    """A variance plane is off by more than the allowed factor.

    ip_diffim's ``ExceedsMaxVarianceScaleError``; the message names the image and factor.
    """


class UndeclaredConfigError(RuntimeError):
    """A step read a config field its record (:mod:`psfmatch.steps.fields`) does not declare.

    The workflow passes each step only the fields it declares, so such a read would see
    the default, not the user's value, and changing the field would not rerun the step.
    This is a bug in psfmatch, not in the input: it is deliberately not a
    :class:`PsfMatchError`, so that no handler of input errors can mistake it for one.
    """


class BadSubtractionError(PsfMatchError, RuntimeError):
    """The difference image fails the quality gate.

    Attributes
    ----------
    label : str
        What was checked (the pair id).
    failed : str
        The measure that tripped: ``"footprint_ratio_mean"``,
        ``"footprint_ratio_std"`` or ``"detected_fraction"``.
    value, limit : float
        Its value and the configured limit.
    quality : dict
        Every number of :func:`psfmatch.dia.gate.subtraction_quality`.
    """

    def __init__(self, label: str, failed: str, value: float, limit: float,
                 quality: dict[str, Any]) -> None:
        self.label = label
        self.failed = failed
        self.value = float(value)
        self.limit = float(limit)
        self.quality = dict(quality)
        q = self.quality
        nan = math.nan
        super().__init__(
            f"{label}: bad subtraction: {failed} = {self.value:.4g} exceeds the limit "
            f"{self.limit:g} (footprint power ratio mean "
            f"{q.get('footprint_ratio_mean', nan):.3g}, "
            f"std {q.get('footprint_ratio_std', nan):.3g} over "
            f"{q.get('n_science_footprints', 0)} science footprints; "
            f"{q.get('n_detected', 0)} of {q.get('n_usable', 0)} usable pixels beyond the "
            f"threshold, fraction {q.get('detected_fraction', nan):.3g}, pure noise "
            f"{q.get('expected_fraction', nan):.2g})")

    def __reduce__(self):  # keep the numbers through pickling (multiprocessing, Snakemake)
        return (type(self), (self.label, self.failed, self.value, self.limit, self.quality))


class RegistrationError(PsfMatchError, RuntimeError):
    """Two exposures cannot be registered by their sources.

    ``n_matches``, ``rms`` (px; NaN when no transform was fitted), the limits
    ``min_matches`` and ``max_rms`` and the source counts are attributes, and the message
    states them. Built from a message alone (as ``type(err)(text)`` re-raises do), the
    numbers are None and the message is the text as given.
    """

    _NUMBERS = ("n_matches", "rms", "min_matches", "max_rms", "n_science", "n_template",
                "note")

    def __init__(self, message: str, *, n_matches: int | None = None, rms: float | None = None,
                 min_matches: int | None = None, max_rms: float | None = None,
                 n_science: int | None = None, n_template: int | None = None,
                 note: str = "") -> None:
        self.bare_message = message
        self.n_matches, self.min_matches = n_matches, min_matches
        self.n_science, self.n_template = n_science, n_template
        self.rms, self.max_rms = rms, max_rms
        self.note = note
        if n_matches is None:
            super().__init__(message + note)
            return
        super().__init__(
            f"{message}: {n_matches} matched sources (need >= {min_matches}), "
            f"rms {rms:.3g} px (limit {max_rms:g} px); {n_science} science "
            f"and {n_template} template sources{note}")

    def with_note(self, note: str) -> RegistrationError:
        """The same error (numbers kept) with ``note`` appended to its message."""
        numbers = {k: getattr(self, k) for k in self._NUMBERS}
        numbers["note"] = self.note + note
        return RegistrationError(self.bare_message, **numbers)

    def __reduce__(self):  # keep the numbers through pickling (multiprocessing, Snakemake)
        return (_rebuild_error, (self.bare_message, {k: getattr(self, k) for k in self._NUMBERS}))


def _rebuild_error(message: str, kw: dict[str, Any]) -> RegistrationError:
    return RegistrationError(message, **kw)
