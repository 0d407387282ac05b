"""Our own (snake_case) config sections and the model-PSF-matching section.

``config/config.yaml`` has, beside the ip_diffim-named ``psf_match`` block
(:mod:`psfmatch.config.lsst`), sections of psfmatch's own options: ``warp``,
``detection``, ``output`` and ``model_psf_match``. Their defaults live here and only
here; ``workflow/schemas/config.schema.yaml`` documents their types and ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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
    "DetectionOptions",
    "DifferenceOptions",
    "ModelPsfMatchSection",
    "OutputOptions",
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
class WarpOptions(_Section):
    """``warp``: our options of the warp step (the LSST kernels are ``psf_match.warpingConfig``)."""

    #: Pass the template through unresampled if its grid maps onto the science grid
    #: within this many pixels.
    same_grid_tolerance_pix: float = 0.01


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
