"""Our own (snake_case) config sections and the model-PSF-matching section.

``config/config.yaml`` has, beside the ip_diffim-named ``psf_match`` block
(:mod:`psfmatch.config.lsst`), sections of psfmatch's own options: ``warp``,
``detection``, ``output`` and ``model_psf_match`` (``dia_sources`` is in
:mod:`psfmatch.config.dia`, ``kernel_fit`` in :mod:`psfmatch.config.kernel_fit`). Their
defaults live here and only here; ``workflow/schemas/config.schema.yaml`` documents their
types and ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
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
    "REGISTRATION_MODES",
    "DetectionOptions",
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
