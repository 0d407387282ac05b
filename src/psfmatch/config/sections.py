"""Our own (snake_case) config sections and the model-PSF-matching section.

``config/config.yaml`` has, beside the ip_diffim-named ``psf_match`` block
(:mod:`psfmatch.config.lsst`), sections of psfmatch's own options: ``warp``,
``detection``, ``output``, ``model_psf_match`` and ``dia_sources``. Their defaults live
here and only here; ``workflow/schemas/config.schema.yaml`` documents their types and
ranges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from psfmatch.config.lsst import (
    DF,
    ModelPsfMatchConfig,
    PsfMatchConfig,
    SubtractConfig,
    coerce_value,
)
from psfmatch.errors import ConfigError

__all__ = [
    "DIA_PSF_SOURCES",
    "FLAGGABLE_PLANES",
    "POLARITIES",
    "REGISTRATION_MODES",
    "DetectionOptions",
    "DiaOptions",
    "DifferenceOptions",
    "ModelPsfMatchSection",
    "OutputOptions",
    "RegistrationOptions",
    "WarpOptions",
    "check_subtraction",
]


class _Section:
    """Mixin: build a section dataclass from its YAML mapping, rejecting unknown keys."""

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None, *, where: str) -> Any:
        """The section from ``block`` (missing keys take the defaults here)."""
        block = dict(block or {})
        names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(block) - set(names))
        if unknown:
            msg = f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}"
            raise ConfigError(msg)
        hints = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: coerce_value(v, str(hints[k]), f"{where}.{k}") for k, v in block.items()}
        return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class RegistrationOptions(_Section):
    """``warp.sources``: registration by sources (:mod:`psfmatch.register`; units: pixels).

    Used by the warp step when ``warp.registration`` is ``sources``, or ``auto`` without
    two overlapping WCSs.

    Attributes
    ----------
    detection_threshold : float
        Peak threshold in units of the noise of the smoothed image (see
        :func:`find_sources`).
    smoothing_sigma : float
        Width (px) of the Gaussian that smooths the image before peak finding.
    max_sources : int
        Brightest usable sources per image used for the final fit.
    n_asterism_sources : int
        Brightest usable sources per image that form triangles.
    n_neighbours : int
        Each asterism source makes triangles with pairs of its nearest neighbours.
    invariant_tolerance : float
        Largest Euclidean distance between two triangles' invariants to pair them.
    match_radius : float
        Largest distance (template px) between a transformed science source and its
        template counterpart.
    min_matches : int
        Fewest matched pairs accepted (an affine transform has 6 parameters); more are
        needed where chance pairs are likely (dense lists, see ``_needed_matches``).
    max_rms : float
        Largest accepted weighted 2-D rms residual of the matched pairs (template px).
    clip_sigma : float
        Pairs with a residual above ``clip_sigma`` robust standard deviations are dropped.
    centroid_error_floor : float
        Added in quadrature to each pair's residual standard deviation (per axis), so
        that the brightest stars do not get unbounded weight.
    max_iterations : int
        Most pairing/fitting rounds.
    scale_range : tuple of float
        Accepted range of the transform's scale ``sqrt(|det M|)`` (template px per
        science px).
    allow_reflection : bool
        Also accept a mirrored image (``det M < 0``).
    stamp_half_width : int
        Half width of the stamps on which centroids are refined (must hold ~2 FWHM).
    bad_mask_planes : tuple of str
        Sources with any of these planes within ``stamp_half_width`` are not used.
    """

    detection_threshold: float = 5.0
    smoothing_sigma: float = 1.5
    max_sources: int = 400
    n_asterism_sources: int = 40
    n_neighbours: int = 5
    invariant_tolerance: float = 0.01
    match_radius: float = 3.0
    min_matches: int = 10
    max_rms: float = 0.5
    clip_sigma: float = 3.0
    centroid_error_floor: float = 0.01
    max_iterations: int = 10
    scale_range: tuple[float, float] = (0.5, 2.0)
    allow_reflection: bool = False
    stamp_half_width: int = 10
    bad_mask_planes: tuple[str, ...] = ("NO_DATA", "EDGE", "SAT", "BAD", "CR")

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"warp.sources.{name} = {getattr(self, name)!r}: {why}")

        for name in ("max_sources", "n_asterism_sources", "max_iterations"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be >= 1")
        if self.n_asterism_sources < 3:
            bad("n_asterism_sources", "must be >= 3 (a triangle)")
        if self.n_neighbours < 2:
            bad("n_neighbours", "must be >= 2 (a triangle)")
        if self.min_matches < 3:
            bad("min_matches", "must be >= 3 (an affine transform has 6 parameters)")
        for name in ("detection_threshold", "smoothing_sigma", "invariant_tolerance",
                     "match_radius", "max_rms", "clip_sigma", "centroid_error_floor"):
            if not float(getattr(self, name)) > 0:
                bad(name, "must be > 0")
        if len(self.scale_range) != 2:
            bad("scale_range", "must be (low, high)")
        lo, hi = self.scale_range
        if not 0 < lo <= 1 <= hi:
            bad("scale_range", "must be (low, high) with 0 < low <= 1 <= high")
        if self.stamp_half_width < 3:
            bad("stamp_half_width", "must be >= 3")


#: How the warp step learns where each science pixel falls in the template.
REGISTRATION_MODES: tuple[str, ...] = ("auto", "wcs", "sources")


@dataclass(frozen=True, kw_only=True)
class WarpOptions(_Section):
    """``warp``: our options of the warp step (the LSST kernels are ``psf_match.warpingConfig``).

    ``registration``: ``wcs`` maps through both images' WCSs; ``sources`` matches the
    stars of the two images and fits an affine pixel transform (``sources`` holds its
    options); ``auto`` uses the WCSs when both images have one and they overlap, else the
    sources.
    """

    #: Pass the template through unresampled if its grid maps onto the science grid
    #: within this many pixels.
    same_grid_tolerance_pix: float = 0.01
    #: ``auto`` | ``wcs`` | ``sources``.
    registration: str = "auto"
    #: Options of registration by sources.
    sources: RegistrationOptions = field(default_factory=RegistrationOptions)

    def __post_init__(self) -> None:
        if self.registration not in REGISTRATION_MODES:
            msg = (f"warp.registration = {self.registration!r}: use one of "
                   f"{list(REGISTRATION_MODES)}")
            raise ConfigError(msg)

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None, *, where: str) -> WarpOptions:
        """The section from ``block``; ``sources`` is a nested :class:`RegistrationOptions`."""
        block = dict(block or {})
        sources = RegistrationOptions.from_dict(block.pop("sources", None),
                                                where=f"{where}.sources")
        plain = super().from_dict(block, where=where)
        return replace(plain, sources=sources)


@dataclass(frozen=True, kw_only=True)
class DetectionOptions(_Section):
    """``detection``: our options of candidate detection and selection."""

    #: Box size (px) of the background mesh subtracted before detection.
    background_box_size: int = 64
    #: Minimum S/N of a kernel candidate (footprint flux / its error).
    min_snr: float = 10.0
    #: Keep at most this many candidates, highest S/N first (-1: all).
    max_candidates: int = 1000
    #: Stamps touching these planes in either image are rejected, as well as
    #: ``psf_match.badMaskPlanes`` (ip_diffim's ``excludeMaskPlanes``).
    exclude_mask_planes: tuple[str, ...] = (
        "NO_DATA", "BAD", "SAT", "EDGE", "FAKE", "HIGH_VARIANCE",
    )


@dataclass(frozen=True, kw_only=True)
class OutputOptions(_Section):
    """``output``: optional products."""

    #: Also write ``results/<pair>/matched_template.fits``.
    matched_template: bool = True


#: Kernel options model-PSF matching does not implement (ip_diffim's ModelPsfMatchTask
#: is Alard-Lupton only and its clipping is off): PEP 8 name -> the refused value.
_MODEL_UNSUPPORTED = {
    "kernel_basis_set": DF,
    "use_pca_for_spatial_kernel": True,
    "single_kernel_clipping": True,
    "kernel_sum_clipping": True,
    "spatial_kernel_clipping": True,
}


@dataclass(frozen=True, kw_only=True)
class ModelPsfMatchSection:
    """``model_psf_match``: model-PSF matching for coadds.

    ``exposures`` is the sheet's path (None: nothing to match); ``target`` the target
    PSF model (a mapping with ``model`` and its parameters); ``kernel_sum`` the value the
    kernel sum is set to; ``psf_match`` ``ModelPsfMatchConfig``'s own fields; ``kernel``
    its kernel config (``PsfMatchConfigAL`` with ``ModelPsfMatchConfig.setDefaults``).
    """

    exposures: str | None = None
    target: Mapping[str, Any] = field(default_factory=lambda: {"model": "gaussian", "fwhm": 5.0})
    kernel_sum: float = 1.0
    psf_match: ModelPsfMatchConfig = field(default_factory=ModelPsfMatchConfig)
    kernel: PsfMatchConfig = field(
        default_factory=lambda: ModelPsfMatchConfig.kernel_from_lsst(None)
    )

    KEYS: ClassVar[tuple[str, ...]] = ("exposures", "target", "kernel_sum", "psf_match", "kernel")

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None, *, where: str = "model_psf_match"):
        """The section from its YAML mapping; unsupported kernel options raise ConfigError."""
        block = dict(block or {})
        unknown = sorted(set(block) - set(cls.KEYS))
        if unknown:
            msg = f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(cls.KEYS)}"
            raise ConfigError(msg)
        kwargs: dict[str, Any] = {}
        if block.get("exposures") is not None:
            kwargs["exposures"] = str(block["exposures"])
        if "target" in block:
            kwargs["target"] = dict(block["target"])
        if "kernel_sum" in block:
            kwargs["kernel_sum"] = coerce_value(block["kernel_sum"], "float", f"{where}.kernel_sum")
        kwargs["psf_match"] = ModelPsfMatchConfig.from_lsst(
            block.get("psf_match"), where=f"{where}.psf_match"
        )
        kwargs["kernel"] = model_kernel_config(block.get("kernel"), where=f"{where}.kernel")
        return cls(**kwargs)


def model_kernel_config(
    block: Mapping[str, Any] | None, *, where: str = "model_psf_match.kernel"
) -> PsfMatchConfig:
    """``model_psf_match.kernel`` as a PsfMatchConfig; unsupported options raise ConfigError."""
    cfg = ModelPsfMatchConfig.kernel_from_lsst(block)
    names = {f.name: f.metadata["lsst"] for f in fields(PsfMatchConfig)}
    for attr, refused in _MODEL_UNSUPPORTED.items():
        if getattr(cfg, attr) == refused:
            msg = (f"{where}.{names[attr]}: {refused!r} is not supported by model-PSF matching "
                   "(ip_diffim's ModelPsfMatchTask is Alard-Lupton only, with clipping off)")
            raise ConfigError(msg)
    return cfg


# ---------------------------------------------------------------- dia_sources
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
@dataclass(frozen=True, kw_only=True)
class DifferenceOptions(_Section):
    """``difference``: our options of the subtraction modes (LSST fields: ``subtract``).

    See docs/configuration.md#difference-section.
    """

    #: ip_diffim's ``AlardLuptonPreconvolveSubtractTask`` instead of the difference: the
    #: science image correlated with its own PSF, the template matched to it, and the
    #: score image ``results/<pair>/score.fits`` (instead of ``difference.fits``).
    preconvolution: bool = False
    #: ``(ny, nx)`` nodes of the decorrelation filter: ``[1, 1]`` evaluates the kernel at
    #: the image centre only (as ip_diffim); more nodes blend per-node filters bilinearly.
    decorrelation_grid: tuple[int, ...] = (1, 1)
    #: Magnitude of one science-image count, for the limiting magnitudes in metrics.json;
    #: null: ``zero_point_key`` if set, else depths in counts only.
    zero_point: float | None = None
    #: Header keyword of the science image that holds its zero point (e.g. ``MAGZERO``),
    #: used when ``zero_point`` is null.
    zero_point_key: str | None = None

    def __post_init__(self) -> None:
        grid = self.decorrelation_grid
        if len(grid) != 2 or any(n < 1 for n in grid):
            msg = f"decorrelation_grid must be two integers >= 1 (ny, nx), got {list(grid)}"
            raise ConfigError(msg)


def check_subtraction(subtract: SubtractConfig, difference: DifferenceOptions) -> None:
    """Cross-section rule: preconvolution convolves the template, never the science image."""
    if difference.preconvolution and subtract.mode == "convolveScience":
        msg = ("difference.preconvolution convolves the template with the kernel "
               "(AlardLuptonPreconvolveSubtractTask has no mode); it cannot be combined with "
               "subtract.mode: convolveScience (use auto or convolveTemplate)")
        raise ConfigError(msg)
