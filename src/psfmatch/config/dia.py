"""``dia_sources``: our options of the detection and measurement of DIA sources."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from psfmatch.config.sections import _Section
from psfmatch.errors import ConfigError

__all__ = ["DIA_PSF_SOURCES", "FLAGGABLE_PLANES", "POLARITIES", "DiaOptions"]

#: Polarities :attr:`DiaOptions.polarity` accepts.
POLARITIES = ("both", "positive", "negative")

#: Mask planes that can become catalogue flags (each has a bit in
#: ``psfmatch.dia.flags.FLAG_BITS``).
FLAGGABLE_PLANES = ("SAT", "SAT_TEMPLATE", "EDGE", "NO_DATA", "BAD", "CR", "INTRP",
                    "SUSPECT", "HIGH_VARIANCE", "INJECTED", "INJECTED_TEMPLATE")

#: Where the PSF of the difference comes from when no difference-PSF file is given.
DIA_PSF_SOURCES = ("auto", "model", "empirical", "gaussian")


def _dia_bad(name: str, value: Any, what: str) -> ConfigError:
    return ConfigError(f"dia_sources.{name} must be {what}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DiaOptions(_Section):
    """``dia_sources``: how DIA sources are detected on a difference image and measured.

    Parameters
    ----------
    threshold : float
        Detection threshold in units of the noise of the PSF-matched-filtered
        difference (S/N of a PSF-fit flux), > 0. Default 5.
    polarity : {"both", "positive", "negative"}
        Which footprints are searched for: brightening (``D > 0``), fading, or both.
    min_footprint_area : int
        Footprints with fewer pixels above the threshold (before growing) are dropped.
    grow : int
        Footprints are grown by this many pixels (a ``(2 grow + 1)²`` box) before the
        mask planes under them are read and before overlapping ones are merged.
    exclude_planes : tuple of str
        Pixels carrying any of these planes get zero weight in the matched filter, the
        PSF fits and the shapes (their values are not data).
    reject_planes : tuple of str
        A detection whose peak pixel carries any of these planes is dropped and counted
        per plane.
    flag_planes : tuple of str
        Mask planes that become catalogue flags when set anywhere in the grown
        footprint (each must be one of :data:`FLAGGABLE_PLANES`).
    min_psf_coverage : float
        Fraction of the PSF's squared weight :math:`\\sum P^2` that must fall on usable
        pixels for the filtered S/N to be defined at a pixel (0 < value <= 1).
    rescale_noise : bool
        Measure the noise of the filtered S/N image (robust σ from its interquartile
        range) and rescale the S/N and the errors by it; this corrects for the pixel
        covariance the variance plane ignores (the convolved template's noise).
    peak_separation : float
        Two peaks of one footprint count as separate detections when farther apart than
        this many PSF FWHM (>= 0; a peak must be the maximum within that radius).
    max_centroid_shift : float
        A PSF-fit centroid that moves farther than this many FWHM from the filtered peak
        is discarded (flag ``CENTROID_FAILED``) and the peak is used instead.
    dipole_max_separation : float
        A positive and a negative peak closer than this many FWHM are fitted together as
        a candidate dipole (0 disables dipole handling).
    dipole_min_flux_ratio : float
        The pair is classified as a dipole when the fainter fitted lobe has at least this
        fraction of the brighter lobe's flux (0 <= value <= 1); otherwise both peaks stay
        separate sources.
    streak_min_elongation : float
        Flag ``STREAK`` when the connected above-threshold region holding the peak has an
        axis ratio (from its S/N-weighted second moments) of at least this (>= 1) and a
        major-axis σ of at least one PSF FWHM (a line of at least ~3.5 FWHM).
    cutout_size : int
        Side (px, odd) of the science / template / difference cut-outs.
    max_footprint_ratio : float or None
        Quality gate (needs the science image): largest mean residual power ratio over
        the science sources' footprints (ip_diffim ``badSubtractionRatioThreshold``);
        ``None`` disables it.
    max_footprint_ratio_std : float or None
        Quality gate: largest standard deviation of those ratios (ip_diffim
        ``badSubtractionVariationThreshold``); ``None`` disables it.
    max_detected_fraction : float or None
        Quality gate: largest fraction of usable pixels beyond the threshold (searched
        signs); ``None`` disables it.
    psf_source : {"auto", "model", "empirical", "gaussian"}
        The PSF of the difference when the workflow gives none (a difference-PSF file
        always wins): the science exposure's PSF model, a stack of the GOOD kernel
        candidates on the science image, or a Gaussian of the science FWHM in
        ``psf.json``; ``auto`` is the model if there is one, else the Gaussian
        (:func:`psfmatch.dia.psf.difference_psf` says why not the stack).
    gallery_size : int
        QA: the brightest this many sources (by ``|snr|``) are shown in the cut-out
        gallery (>= 1).
    """

    threshold: float = 5.0
    polarity: str = "both"
    min_footprint_area: int = 1
    grow: int = 2
    exclude_planes: tuple[str, ...] = ("NO_DATA", "BAD", "SAT", "SAT_TEMPLATE", "EDGE", "CR")
    reject_planes: tuple[str, ...] = ("NO_DATA", "BAD", "SAT", "SAT_TEMPLATE", "EDGE", "CR")
    flag_planes: tuple[str, ...] = ("SAT", "SAT_TEMPLATE", "EDGE", "NO_DATA", "BAD", "CR",
                                    "INTRP", "SUSPECT")
    min_psf_coverage: float = 0.5
    rescale_noise: bool = True
    peak_separation: float = 1.0
    max_centroid_shift: float = 1.0
    dipole_max_separation: float = 2.0
    dipole_min_flux_ratio: float = 0.5
    streak_min_elongation: float = 3.0
    cutout_size: int = 63
    max_footprint_ratio: float | None = 0.2
    max_footprint_ratio_std: float | None = 0.4
    max_detected_fraction: float | None = 0.1
    psf_source: str = "auto"
    gallery_size: int = 16

    #: Fields only the QA of the DIA sources reads (changing them redraws, not detects).
    QA_FIELDS: ClassVar[tuple[str, ...]] = ("gallery_size",)

    def __post_init__(self) -> None:  # noqa: C901 - a flat list of checks
        for name in ("threshold", "min_psf_coverage", "peak_separation", "max_centroid_shift",
                     "dipole_max_separation", "dipole_min_flux_ratio",
                     "streak_min_elongation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise _dia_bad(name, value, "a finite number")
            object.__setattr__(self, name, float(value))
        if self.threshold <= 0:
            raise _dia_bad("threshold", self.threshold, "> 0")
        if not 0 < self.min_psf_coverage <= 1:
            raise _dia_bad("min_psf_coverage", self.min_psf_coverage, "in (0, 1]")
        for name in ("peak_separation", "dipole_max_separation"):
            if getattr(self, name) < 0:
                raise _dia_bad(name, getattr(self, name), ">= 0")
        if self.max_centroid_shift <= 0:
            raise _dia_bad("max_centroid_shift", self.max_centroid_shift, "> 0")
        if not 0 <= self.dipole_min_flux_ratio <= 1:
            raise _dia_bad("dipole_min_flux_ratio", self.dipole_min_flux_ratio, "in [0, 1]")
        if self.streak_min_elongation < 1:
            raise _dia_bad("streak_min_elongation", self.streak_min_elongation, ">= 1")
        if self.polarity not in POLARITIES:
            raise _dia_bad("polarity", self.polarity, f"one of {POLARITIES}")
        if self.psf_source not in DIA_PSF_SOURCES:
            raise _dia_bad("psf_source", self.psf_source, f"one of {DIA_PSF_SOURCES}")
        for name, low in (("min_footprint_area", 1), ("grow", 0), ("cutout_size", 1),
                          ("gallery_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise _dia_bad(name, value, f"an integer >= {low}")
        if self.cutout_size % 2 == 0:
            raise _dia_bad("cutout_size", self.cutout_size, "odd")
        if not isinstance(self.rescale_noise, bool):
            raise _dia_bad("rescale_noise", self.rescale_noise, "true or false")
        for name in ("exclude_planes", "reject_planes", "flag_planes"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise _dia_bad(name, value, "a list of mask-plane names")
            object.__setattr__(self, name, tuple(value))
        unknown = sorted(set(self.flag_planes) - set(FLAGGABLE_PLANES))
        if unknown:
            raise _dia_bad("flag_planes", list(self.flag_planes),
                           f"planes from {list(FLAGGABLE_PLANES)} (unknown: {unknown})")
        for name, high in (("max_footprint_ratio", math.inf),
                           ("max_footprint_ratio_std", math.inf), ("max_detected_fraction", 1.0)):
            gate = getattr(self, name)
            if gate is None:
                continue
            if isinstance(gate, bool) or not isinstance(gate, int | float) \
                    or not 0 < gate <= high:
                raise _dia_bad(name, gate, f"null or a number in (0, {high:g}]")
            object.__setattr__(self, name, float(gate))

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-able dict of every field (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None, *, where: str = "dia_sources"):
        """The section from its YAML mapping; unknown keys raise :class:`ConfigError`."""
        return super().from_dict(block, where=where)
